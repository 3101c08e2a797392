"""Lanes: each endpoint's queue, sender threads and delivery within an exporter.

An exporter delivers to one or more endpoints.  With one, its senders build and deliver
each trace themselves.  With several, its destinations are grouped into lanes, one per
endpoint (destinations of one endpoint, like Infino's trace and steps datasets, share a
lane): the exporter's senders build, redact, sample and encode every trace once and hand
it to every lane, and each lane queues it under its own bounds and delivers it with its
endpoint's throttle, retries and timeout.  An outage of one endpoint fills only its own
lane: the traces of the others, and the queue every trace waits in first, never wait
for it.  A trace is settled in the exporter's ledger (its top-level stats, ``flush()``
and ``on_result``) as the first lane settles it; every lane's own figures are in
``stats().destinations``.

With a spool, a trace's one record is settled lane by lane (each lane's tag in the
``.ack`` file): a record the first lane stored and another did not is offered to that
other lane again after a backoff, and, at the next start, to that lane only.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from . import failures
from .admission import Admission
from .batching import BatchSender
from .closing import Closing
from .delivery import Deadline, Delivery
from .destination import Destination, DestinationStats
from .dispatch import Dispatch
from .durability import Backlog
from .ledger import ExporterStats, Ledger
from .model import ApiResponse, TaskData
from .queued import Item
from .redact import Redactor
from .results import Reporter
from .retry import RetryPolicy
from .sending import HandOff, Sender, SpoolPart
from .settings import Settings
from .spool import lane_tag
from .throttle import TokenBucket
from .workers import Workers

__all__ = [
    "Lane",
    "Lanes",
    "Senders",
    "lane_settings",
    "lanes_of",
    "tags_of",
    "wire",
    "with_every_secret",
]


def lane_settings(destination: Destination) -> Settings | None:
    """The delivery settings of ``destination``'s endpoint (throttle, retries, timeout, queue
    bound), when it says them (its optional ``lane_settings`` attribute); None: the
    exporter's own."""
    settings = getattr(destination, "lane_settings", None)
    return settings if isinstance(settings, Settings) else None


def lanes_of(
    settings: Settings, destinations: Sequence[Destination]
) -> list[tuple[Settings, list[Destination]]]:
    """``destinations`` grouped by the settings of their endpoint, in order of first
    appearance: ``(settings, destinations)`` per lane, the first lane's settings being the
    exporter's own."""
    groups: list[tuple[Settings, list[Destination]]] = []
    for destination in destinations:
        own = lane_settings(destination) or settings
        for key, members in groups:
            if key == own:
                members.append(destination)
                break
        else:
            groups.append((own, [destination]))
    if groups:
        groups[0] = (settings, groups[0][1])
    tags: dict[int, str] = {}
    for _, members in groups:
        name = members[0].name
        other = tags.setdefault(lane_tag(name), name)
        if other != name or sum(1 for _, m in groups if m[0].name == name) > 1:
            # A spool record is settled lane by lane, by these tags: two alike would settle
            # each other's part.
            raise ValueError(
                f"the first destinations of two endpoints are named {other!r} and {name!r}, "
                f"whose spool tags are the same: give one of them another name"
            )
    return groups


def tags_of(groups: Sequence[tuple[Settings, Sequence[Destination]]]) -> tuple[int, frozenset[int]]:
    """The first lane's spool tag, and every lane's (see :meth:`WriteAhead.set_lanes
    <infinium_logging.writeahead.WriteAhead.set_lanes>`)."""
    tags = [lane_tag(members[0].name) for _, members in groups]
    return tags[0], frozenset(tags)


def with_every_secret(
    redactor: Redactor, groups: Sequence[tuple[Settings, Sequence[Destination]]]
) -> Redactor:
    """``redactor``, removing every further endpoint's secret too (one redaction covers
    every lane)."""
    if len(groups) < 2:
        return redactor
    return redactor.with_secrets(*(own.agent_secret for own, _ in groups[1:]))


class Senders:
    """The sender side of a lane: a Delivery per destination, the Sender, and threads
    taking one trace at a time, or batches when the (first) destination takes several
    records per request or there are several (see :mod:`~infinium_logging.batching`).
    With ``hand_off`` (the exporter's senders when there are lanes) they take one trace at
    a time and hand it on built; ``sender_type``: the Sender's class."""

    def __init__(
        self,
        settings: Settings,
        dispatch: Dispatch,
        destinations: Sequence[Destination],
        *,
        bucket: TokenBucket,
        reporter: Reporter,
        redactor: Redactor,
        owner: object,
        durable: SpoolPart | None = None,
        hand_off: HandOff | None = None,
        tag: int = 0,
        lane: str = "",
        sender_type: type[Sender] = Sender,
    ) -> None:
        ledger = dispatch.ledger
        policy = RetryPolicy.from_settings(settings)
        deliveries = [
            Delivery(d, policy, bucket, dispatch.until, settings.timeout) for d in destinations
        ]
        self.first = deliveries[0]
        self.sender = sender = sender_type(
            settings,
            dispatch,
            self.first,
            reporter,
            redactor,
            owner,
            durable=durable,
            hand_off=hand_off,
            tag=tag,
            lane=lane,
        )
        limits = destinations[0].limits
        self.batches: BatchSender | None = None
        take: Callable[[], Any] = dispatch.take
        process: Callable[[Any], None] = sender.process
        if hand_off is None and (len(deliveries) > 1 or limits.max_records > 1):
            self.batches = BatchSender(sender, deliveries, ledger)
            take, process = functools.partial(dispatch.take_batch, limits), self.batches.process
        self.workers: Workers[Any] = Workers(
            settings.workers,
            ledger.lock,
            take,
            process,
            ledger.wake_waiters_locked,
            name=f"infinium-{lane}" if lane else "infinium-exporter",
        )
        self._ledger = ledger

    def stats_locked(self) -> dict[str, DestinationStats]:
        """Each destination's counts, by name (lock held)."""
        if self.batches is not None:
            each = self.batches.stats_locked()
        else:
            name = self.first.destination.name
            each = {name: self._ledger.destination_locked(name)}
        return {name: self._ledger.lane_locked(stats) for name, stats in each.items()}


class _Share:
    """A lane's share of the exporter's spool records: it settles its part of each (see
    :meth:`~infinium_logging.writeahead.WriteAhead.ack_lane`); what it could not deliver
    stays there for it (the first lane's, taken up again by the exporter; another's, offered
    to it again after a backoff, or at the next start)."""

    def __init__(self, durable: Any, lane: Lane) -> None:
        self._durable = durable
        self._lane = lane

    @property
    def spool(self) -> Any:
        return self._durable.spool if self._durable is not None else None

    def ack(self, item: Item) -> None:
        ref = item.ref
        if ref is None:
            return
        lane = self._lane
        with lane.lock:
            lane._holding.discard(ref)
        if self._durable is not None and not item.settled:
            self._durable.ack_lane(ref, lane.tag)

    def keep(self, item: Item, ref: Any, reason: str, error: str | None) -> bool:
        lane = self._lane
        with lane.lock:
            lane._holding.discard(ref)
            if item.settled:
                return False
            lane._kept.add(ref)
            kept = lane.ledger.kept(item, error)
            if kept and reason != "shutdown":
                lane.later_locked(item)
            return kept

    def recovered_locked(self) -> None:
        """The endpoint answers again: what waits for a later attempt goes now."""
        self._lane.recovered_locked()


class _First(Sender):
    """The first lane's sender: what it settles, it settles for the exporter too (through
    the exporter's sender, ``hand_off``'s owner): the top-level counts, on_result, the
    spool's backlog."""

    def delivered(self, item: Item, response: ApiResponse, size: int) -> bool:
        if not super().delivered(item, response, size):
            return False
        return _stage_of(self).delivered(item.origin, response, size)

    def settle(self, item: Item, reason: str, error: str | None = None) -> bool:
        if not super().settle(item, reason, error):
            return False
        _stage_of(self).settle(item.origin, reason, error)
        return True


def _never() -> bool:
    return False


def _stage_of(sender: Sender) -> Sender:
    """The exporter's sender a first lane's sender settles for (its reporter holds it)."""
    stage = sender.reporter
    assert isinstance(stage, _Lost)
    return stage.stage


class _Lost(Reporter):
    """The first lane's reporter: it tells nobody (the exporter's sender tells on_result),
    and what the lane's shutdown lost, the exporter's sender settles as lost too (or
    keeps in the exit spill)."""

    def __init__(self, stage: Sender) -> None:
        super().__init__(None)
        self.stage = stage

    def report_lost(self, items: list[Item], until: float) -> None:
        for item in items:
            self.stage.settle(item.origin, "shutdown")


class Lane:
    """One endpoint's lane: fed the traces the exporter's senders built (:meth:`offer`),
    with a queue, sender threads, delivery and counts of its own.

    ``settings`` are the endpoint's delivery settings; ``durable`` the exporter's
    write-ahead (None without a spool); ``redactor`` is the exporter's (traces come
    redacted: it only has to be ready).  ``stage``: for the first lane, the exporter's
    sender, which settles each trace as this lane does; other lanes' failures are
    counted in their destinations' stats, not explained in Infinium's words.
    """

    def __init__(
        self,
        settings: Settings,
        destinations: Sequence[Destination],
        durable: Any,
        redactor: Redactor,
        stage: Sender | None = None,
    ) -> None:
        # Traces come sampled; what a lane's shutdown loses, the exporter spills.
        self.settings = settings = settings.replace(
            sample_rate=1.0, exit_spool=False, handle_signals=False
        )
        self.destinations = tuple(destinations)
        self.name = destinations[0].name
        self.tag = lane_tag(self.name)
        self.lock = lock = threading.RLock()
        self.ledger = ledger = Ledger(lock)
        self.admission = Admission(ledger, settings.max_queue_size, settings.max_queue_bytes)
        self._closed = False
        self.until = Deadline()
        self.dispatch = dispatch = Dispatch(self.admission, None, self.until, self.closed)
        #: Spool records queued or in flight here (a record taken up again is not offered twice).
        self._holding: set[Any] = set()
        #: Spool records this lane counts as kept there for a later attempt (one offered again
        #: is no longer).
        self._kept: set[Any] = set()
        #: finish() has run: nothing offered now will be sent.
        self._finished = False
        #: Traces another lane's endpoint could not take now, offered again after a backoff
        #: (their records wait in the spool meanwhile); a timer thread offers them.
        self._later: list[Item] = []
        self._later_bytes = 0
        self._backoff = Backlog(RetryPolicy.from_settings(settings))
        self._timer: threading.Timer | None = None
        self._spooled = durable is not None
        self._stage = stage
        self.bucket = TokenBucket.from_settings(settings)
        self.senders = senders = Senders(
            settings,
            dispatch,
            destinations,
            bucket=self.bucket,
            reporter=Reporter(None) if stage is None else _Lost(stage),
            redactor=redactor,
            owner=self if stage is None else stage.owner,
            durable=_Share(durable, self),
            tag=self.tag,
            lane=self.name,
            sender_type=Sender if stage is None else _First,
        )
        self.workers = senders.workers
        self.closing = Closing(
            dispatch,
            senders.sender,
            senders.workers,
            self.bucket,
            destinations,
            keeps=durable is not None,
        )
        if stage is None:
            failures.hush(self)

    def __repr__(self) -> str:
        return f"Lane({self.name!r}, destinations={[d.name for d in self.destinations]})"

    def closed(self) -> bool:
        """Whether the exporter's shutdown has begun."""
        return self._closed

    def offer(self, item: Item, trace: TaskData | None, body: bytes) -> None:
        """Queue the exporter's built trace ``item`` (``body`` its redacted wire body) here,
        unless this lane settled its spool record already or is full (counted)."""
        if self.tag in item.done:
            return
        ref = item.ref
        mine = Item(trace, 0, len(body), body, ref, origin=item)
        with self.lock:
            ledger = self.ledger
            if ref is not None:
                if ref in self._holding:
                    return
                if ref in self._kept:  # taken up again: no longer only in the spool
                    self._kept.discard(ref)
                    ledger.spooled -= 1
                self._holding.add(ref)
            ledger.submitted += 1
            full = self._finished or self.admission.full_locked(len(body))
            if full:
                self._holding.discard(ref)
                if ref is not None and self._spooled:
                    ledger.spooled += 1  # its part of the record waits in the spool
                    self._kept.add(ref)
                else:
                    ledger.dropped["shutdown" if self._finished else "queue_full"] += 1
            else:
                ledger.enqueue_locked(mine)
                self.dispatch.wake(1)
            started = self.workers.started
        if full:
            if self._stage is not None and not self._finished:
                self._stage.refuse(item, "queue_full")
            return
        if not started:
            # Even after the exporter's shutdown began: with threads of its own, each lane
            # delivers until the deadline beside the others, not after them (only where no
            # thread can start, at interpreter exit, does finish() deliver from its caller).
            self.workers.start(_never)

    def flush(self, deadline: float, here: bool) -> bool:
        """Wait until every record offered before now is settled, or ``deadline``; ``here``:
        on a sender thread, only say whether that is the case."""
        ledger = self.ledger
        with self.lock:
            target = ledger.seq
            self.dispatch.work.notify_all()  # a batch waiting to fill goes now
            if here:
                return ledger.settled_before_locked(target)
            return ledger.wait_flushed(target, deadline, None)

    def begin_shutdown(self, at: float) -> None:
        """The exporter's shutdown began, with deadline ``at``: batches go at once, senders
        end when nothing is left, no request outlasts ``at``; what waits for a later attempt
        stays in the spool for the next start."""
        with self.lock:
            self._closed = True
            self.until.at = at
            self.dispatch.work.notify_all()
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.until.stopping.set()
        self.bucket.wake()

    def later_locked(self, item: Item) -> None:
        """``item`` was kept in the spool for a later attempt (lock held): offer it again
        after the backoff, in this process, rather than only at the next start.  The first
        lane's are the exporter's to take up; past the lane's bounds, the next start's."""
        if self._stage is not None or self._closed or item.body is None:
            return
        size = len(item.body)
        if (
            len(self._later) >= self.admission.max_items
            or self._later_bytes + size > self.admission.max_bytes
        ):
            return
        self._later.append(item)
        self._later_bytes += size
        self._backoff.failed()
        self._schedule_locked(self._backoff.at)

    def recovered_locked(self) -> None:
        """The endpoint stored a trace (lock held): what waits for a later attempt goes now."""
        if self._backoff.recovered() and self._later:
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            self._schedule_locked(time.monotonic())

    def _schedule_locked(self, at: float) -> None:
        if self._closed or self._timer is not None:
            return
        timer = threading.Timer(max(0.0, at - time.monotonic()), self._again)
        timer.name = f"infinium-{self.name}-later"
        timer.daemon = True
        self._timer = timer
        try:
            timer.start()
        except RuntimeError:  # no thread at interpreter exit: the next start sends them
            self._timer = None

    def _again(self) -> None:
        """Offer again what waited for its backoff (on the timer's thread)."""
        with self.lock:
            self._timer = None
            if self._closed:
                return
            if time.monotonic() < self._backoff.at:  # failed again meanwhile
                self._schedule_locked(self._backoff.at)
                return
            later, self._later, self._later_bytes = self._later, [], 0
        for item in later:
            task = item.task
            assert item.body is not None
            self.offer(item.origin, task if type(task) is TaskData else None, item.body)

    def finish(self) -> bool:
        """Deliver what is left here until the deadline; True when nothing was lost to it.
        What is offered after is counted (``shutdown``, or kept in the spool), not queued."""
        if self.until.at is None:
            self.begin_shutdown(time.monotonic())
        try:
            return self.closing.finish()
        finally:
            with self.lock:
                self._finished = True

    def stats(self) -> dict[str, DestinationStats]:
        """Each of this lane's destinations' counts, by name."""
        with self.lock:
            return self.senders.stats_locked()

    def last(self) -> tuple[int, str | None]:
        """This lane's retries and last error (the first lane's are the exporter's)."""
        with self.lock:
            return self.ledger.retries, self.ledger.last_error


class Lanes:
    """The lanes of an exporter with several endpoints, the first of which settles its
    traces: what the exporter asks of them all."""

    def __init__(self) -> None:
        self.all: list[Lane] = []

    def offer(self, item: Item, trace: TaskData | None, body: bytes) -> None:
        """A trace the exporter's senders built: to every lane, the first last.  The first
        settles it for the exporter, and a flush that saw it settled must find it in every
        other lane already (see :meth:`flush`)."""
        lanes = self.all
        for lane in lanes[1:]:
            lane.offer(item, trace, body)
        lanes[0].offer(item, trace, body)

    def flush(self, deadline: float, here: bool) -> bool:
        """Every lane's :meth:`Lane.flush`, to the one deadline."""
        done = True
        for lane in self.all:
            done = lane.flush(deadline, here) and done
        return done

    def begin_shutdown(self, at: float) -> None:
        for lane in self.all:
            lane.begin_shutdown(at)

    def stats(self) -> dict[str, DestinationStats]:
        """Every destination's counts, by name."""
        each: dict[str, DestinationStats] = {}
        for lane in self.all:
            each.update(lane.stats())
        return each

    def amend(self, stats: ExporterStats) -> ExporterStats:
        """The exporter's ``stats`` with the first lane's retries and last error (the
        traces are settled as it settles them)."""
        retries, error = self.all[0].last()
        return msgspec.structs.replace(stats, retries=retries, last_error=error or stats.last_error)


def wire(
    settings: Settings,
    dispatch: Dispatch,
    groups: Sequence[tuple[Settings, Sequence[Destination]]],
    *,
    bucket: TokenBucket,
    reporter: Reporter,
    redactor: Redactor,
    owner: object,
    durable: Any,
) -> tuple[Senders, Lanes | None, Closing]:
    """An exporter's senders, lanes and closing for its destinations ``groups`` (see
    :func:`lanes_of`): with one group, senders that deliver; with several, senders that
    hand each built trace to a lane per group."""
    lanes = Lanes() if len(groups) > 1 else None
    first = groups[0][1]
    senders = Senders(
        settings,
        dispatch,
        first,
        bucket=bucket,
        reporter=reporter,
        redactor=redactor,
        owner=owner,
        hand_off=lanes.offer if lanes is not None else None,
        tag=lane_tag(first[0].name),
    )
    if lanes is None:
        return senders, None, Closing(dispatch, senders.sender, senders.workers, bucket, first)
    # No lane holds more bytes than the exporter may (Infino's settings have no such bound).
    bound = settings.max_queue_bytes
    for number, (own, members) in enumerate(groups):
        bounded = own.replace(max_queue_bytes=min(bound, own.max_queue_bytes))
        stage = senders.sender if number == 0 else None
        lanes.all.append(Lane(bounded, members, durable, redactor, stage))
    closing = Closing(
        dispatch,
        senders.sender,
        senders.workers,
        bucket,
        (),
        then=[lane.finish for lane in lanes.all],
    )
    return senders, lanes, closing
