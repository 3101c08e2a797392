"""The ledger: what became of every trace (counts, settling once, flush targets, stats, drops)."""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

import msgspec

from .destination import DestinationStats
from .queued import Item
from .spool import SpoolStats

__all__ = [
    "DROP_REASONS",
    "FAILURE_REASONS",
    "DropWarner",
    "ExporterStats",
    "Ledger",
    "describe_counts",
    "warn_dropped",
]

_log = logging.getLogger("infinium_logging.exporter")

#: How often, at most, drops are warned about.
_WARN_INTERVAL: Final = 60.0

#: Every reason a submitted trace can be lost for, as counted in :attr:`ExporterStats.dropped`.
DROP_REASONS: Final = (
    "queue_full",  # the buffer was full (by count or by bytes) when it was submitted
    "closed",  # submitted after shutdown() started
    "shutdown",  # still queued or in flight when the shutdown deadline came
    "rejected",  # the platform refused it for good (400, 404, 413, 422, ...): not retried
    "auth",  # the platform refused the credentials (401/403)
    "retries_exhausted",  # still failing after max_retries retries
    "max_elapsed",  # still failing when its max_elapsed budget ran out
    "invalid",  # could not be read as a trace, or encoded
    "disabled",  # submitted while INFINIUM_DISABLED is on
    "spool_full",  # evicted from the spool past spool_max_bytes before it could be delivered
)
#: Reasons counted in ``ExporterStats.failed``: lost for good other than by the buffer or shutdown.
FAILURE_REASONS: Final = ("rejected", "auth", "retries_exhausted", "max_elapsed", "invalid")


class ExporterStats(msgspec.Struct, frozen=True, kw_only=True):
    """What an exporter did, read at one instant (under one lock).

    Every submitted trace is exactly one of: sent, dropped (counted by reason
    in ``dropped``), queued, in flight, or (with a spool) spooled; traces
    adopted from the spool of an earlier process join them, so at every reading
    ``submitted + adopted == sent + dropped_total + queued + in_flight + spooled +
    sampled_out``.
    Traces sent with :meth:`Exporter.send` / :meth:`Exporter.send_batch` are not
    counted here: their caller gets the outcome directly.
    """

    #: Calls of ``submit`` (accepted or not).
    submitted: int
    #: Traces the platform accepted.
    sent: int
    #: Retries made (not counting the immediate repeat on a closed pooled connection).
    retries: int
    #: Traces lost, by reason (every reason of :data:`DROP_REASONS` is present).
    dropped: dict[str, int]
    #: Traces waiting in the buffer.
    queued: int
    #: Traces a sender thread is working on (encoding, sending, or waiting to retry).
    in_flight: int
    #: Bytes held: the memory queued traces are estimated to hold, the encoded body's size
    #: once a sender has it (see ``max_queue_bytes``).
    buffered_bytes: int
    #: Body bytes of the traces the platform accepted.
    bytes_sent: int
    #: Fixes made while reading submitted dicts, by kind (``dropped``, ``truncated``, ...).
    coerced: dict[str, int]
    #: The last failure, as text (never containing the secret).
    last_error: str | None
    #: When the platform last accepted a trace (POSIX time), if it ever did.
    last_success_time: float | None
    #: Traces held only in the spool: waiting for another attempt (queue full, retries
    #: exhausted, credentials refused), or left there at shutdown for the next start.
    spooled: int = 0
    #: Traces taken over from the spool of an earlier or dead process, to be delivered here.
    adopted: int = 0
    #: Records in the spool not yet settled (queued, in flight and spooled ones), and their bytes.
    spool_pending_records: int = 0
    spool_pending_bytes: int = 0
    #: Damaged spool records skipped (a torn record after a crash, a bad checksum).
    spool_corrupt: int = 0
    #: Traces kept in memory only because the spool could not be written (disk full, permissions).
    spool_write_errors: int = 0
    #: Traces left out by ``sample_rate`` (settled, not lost: not counted in ``dropped``).
    sampled_out: int = 0
    #: Values redacted from traces, by kind (``api_key``, ``secret``, ``email``, ``hook``...).
    redacted: dict[str, int] = msgspec.field(default_factory=dict)
    #: What each destination did, by its name (the figures above are the first one's).
    destinations: dict[str, DestinationStats] = msgspec.field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        """All traces lost, whatever the reason."""
        return sum(self.dropped.values())

    @property
    def failed(self) -> int:
        """Traces lost for good other than by the buffer or shutdown: refused by the platform
        (``rejected``, ``auth``), out of retries (``retries_exhausted``, ``max_elapsed``), or
        unreadable (``invalid``, which also counts what ``submit`` refused as no trace)."""
        return sum(self.dropped[reason] for reason in FAILURE_REASONS)


class DropWarner:
    """Decides when to warn about drops: at most once per ``interval``, with the new counts."""

    def __init__(
        self, interval: float = _WARN_INTERVAL, clock: Callable[[], float] = time.monotonic
    ):
        self._interval = interval
        self._clock = clock
        self._last = -math.inf
        self._reported: dict[str, int] = {}
        self._reported_total = 0

    def due(self) -> bool:
        """Whether a warning may be given now (cheap, without the counts)."""
        return self._clock() - self._last >= self._interval

    def news(self, dropped: Mapping[str, int], *, force: bool = False) -> dict[str, int] | None:
        """The drops since the last warning if one is due now (or ``force``), else None."""
        now = self._clock()
        if not force and now - self._last < self._interval:
            return None
        # Asked after every trace a sender settles: nothing new is the usual answer, and a sum
        # finds it for a fraction of what comparing reason by reason costs.
        if sum(dropped.values()) == self._reported_total:
            return None
        new = {
            reason: count - self._reported.get(reason, 0)
            for reason, count in dropped.items()
            if count > self._reported.get(reason, 0)
        }
        if not new:
            return None
        self._last = now
        self._reported = dict(dropped)
        self._reported_total = sum(dropped.values())
        return new


def describe_counts(counts: Mapping[str, int]) -> str:
    """``reason=count, ...``."""
    return ", ".join(f"{reason}={count}" for reason, count in counts.items())


def warn_dropped(
    news: Mapping[str, int], last_error: str | None = None, destination: str = ""
) -> None:
    """The one warning about drops: how many since the last one, by reason, and the last
    error, if any; ``destination``: for that endpoint's lane alone (see :mod:`.lanes`)."""
    _log.warning(
        "infinium_logging dropped %d trace(s)%s since the last report: %s%s",
        sum(news.values()),
        f" for {destination}" if destination else "",
        describe_counts(news),
        f" (last error: {last_error})" if last_error else "",
    )


class Ledger:
    """The buffer's traces and every count of what became of them, under the exporter's lock.

    The accounting invariant of :class:`ExporterStats` lives here alone: a
    trace is counted once when admitted (``submitted``), joins the queue,
    moves to ``in_flight`` when a sender takes it, and is settled exactly
    once (:meth:`mark_settled`, through :meth:`sent_one`, :meth:`lost`,
    :meth:`kept` or :meth:`tally_left`): sent, dropped for a reason, or kept
    in the spool.  Flushes wait here for every trace queued before them.
    Methods whose name ends in ``_locked`` want the lock held; the others
    take it.
    """

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        #: Flushes and shutdown wait on it for traces to settle.
        self.settled_cond = threading.Condition(lock)
        #: Waiting traces, oldest first, and those a sender is working on.
        self.queue: collections.deque[Item] = collections.deque()
        self.in_flight: set[Item] = set()
        self.seq = 0
        self.held_bytes = 0
        self.submitted = 0
        self.sent = 0
        self.retries = 0
        self.bytes_sent = 0
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.coerced: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self.last_success: float | None = None
        #: Records held only in the spool, adopted from other processes, not written.
        self.spooled = 0
        self.adopted = 0
        self.spool_write_errors = 0
        #: Traces left out by ``sample_rate``: settled, not lost.
        self.sampled_out = 0
        #: Threads waiting in shutdown for whatever settles; flushes wait for a target instead.
        self.waiters = 0
        self.flush_targets: list[int] = []
        self.flush_min = -1  # the earliest of them, -1 when none waits
        #: (traces submitted, until when) after a flush gave up waiting its full patience:
        #: see stuck_since_flush_locked.
        self.gave_up: tuple[int, float] | None = None

    def enqueue_locked(self, item: Item) -> None:
        """Put an admitted (or spooled) trace at the end of the queue."""
        item.seq = self.seq
        self.seq += 1
        self.held_bytes += item.size
        self.queue.append(item)

    def mark_settled_locked(self, item: Item) -> None:
        """``item`` leaves the buffer for good; wake whoever waits for it."""
        item.settled = True
        self.in_flight.discard(item)
        self.held_bytes -= item.size
        if self.waiters:
            self.settled_cond.notify_all()
        elif (
            0 <= item.seq < self.flush_min
            and self.flush_targets
            and self.settled_before_locked(self.flush_min)
        ):
            # Waking a flush for every trace settled costs the senders the lock and the GIL
            # thousands of times a second; it can only return once its target is reached.
            self.settled_cond.notify_all()

    def settled_before_locked(self, target: int) -> bool:
        """Whether every trace queued before ``target`` is settled."""
        # Traces leave the queue in order, so the oldest unsettled one is the queue's head or
        # one of the (few) traces in flight.
        if self.queue and self.queue[0].seq < target:
            return False
        return all(item.seq >= target for item in self.in_flight)

    def sent_one(self, item: Item, size: int) -> bool:
        """Count ``item`` as sent (``size`` body bytes) unless it is settled already."""
        with self.lock:
            if item.settled:  # given up at the shutdown deadline while the request was out
                return False
            self.mark_settled_locked(item)
            self.sent += 1
            self.bytes_sent += size
            self.last_success = time.time()
            return True

    def lost(self, item: Item, reason: str, error: str | None) -> bool:
        """Count ``item`` as dropped for ``reason`` unless it is settled already."""
        with self.lock:
            if item.settled:
                return False
            self.mark_settled_locked(item)
            self.dropped[reason] += 1
            if error is not None:
                self.last_error = error
            return True

    def sampled(self, item: Item) -> bool:
        """Count ``item`` as left out by ``sample_rate`` unless it is settled already."""
        with self.lock:
            if item.settled:
                return False
            self.mark_settled_locked(item)
            self.sampled_out += 1
            return True

    def kept(self, item: Item, error: str | None) -> bool:
        """Count ``item`` as held in the spool unless it is settled already (counted before
        the spool takes it back, so that no reading sees it twice)."""
        with self.lock:
            if item.settled:
                return False
            self.mark_settled_locked(item)
            self.spooled += 1
            if error is not None:
                self.last_error = error
            return True

    def spool_lost(self, count: int, reason: str = "spool_full") -> None:
        """``count`` traces counted as spooled that the spool no longer holds."""
        with self.lock:
            self.spooled -= count
            self.dropped[reason] += count

    def refused(self, reason: str) -> bool:
        """Count a submitted trace refused for ``reason`` before admission; False."""
        with self.lock:
            self.submitted += 1
            self.dropped[reason] += 1
        return False

    def wake_waiters_locked(self) -> None:
        """Wake a shutdown waiting for whatever settles (a sender thread ended)."""
        if self.waiters:
            self.settled_cond.notify_all()

    def spilled(self, count: int) -> None:
        """``count`` traces counted as lost to ``shutdown`` that the exit spill holds after all."""
        if count:
            with self.lock:
                self.dropped["shutdown"] -= count
                self.spooled += count

    def retried(self, item: Item, error: str) -> bool:
        """Count a retry of ``item``; False when it is settled already (lock held)."""
        if item.settled:
            return False
        self.retries += 1
        self.last_error = error
        return True

    def wait_flushed(self, target: int, deadline: float, patience: float | None) -> bool:
        """Wait (lock held) until every trace queued before ``target`` is settled; False at
        ``deadline``.  ``patience`` is the full wait a flush may take: one that gave up after
        it is remembered (see :meth:`stuck_since_flush_locked`)."""
        # Woken only once the earliest target of the waiting flushes can have been reached
        # (see mark_settled_locked), not at every trace settled.
        targets = self.flush_targets
        targets.append(target)
        self.flush_min = min(targets)
        try:
            while not self.settled_before_locked(target):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if patience is not None:
                        self.gave_up = (self.submitted, time.monotonic() + patience)
                    return False
                self.settled_cond.wait(remaining)
            self.gave_up = None
            return True
        finally:
            targets.remove(target)
            self.flush_min = min(targets) if targets else -1

    def stuck_since_flush_locked(self) -> bool:
        """Whether a flush gave up after waiting its full patience, less than that long
        ago, with nothing submitted since: waiting again would wait for the same stuck
        traces (``logging.shutdown()`` flushes every handler, then closes them, then the
        exit hook shuts the exporter down: an exit would otherwise wait three times)."""
        gave_up = self.gave_up
        return (
            gave_up is not None and gave_up[0] == self.submitted and time.monotonic() < gave_up[1]
        )

    def tally_left_locked(self, spooled: bool) -> tuple[list[Item], list[Item]]:
        """At the shutdown deadline: settle what is still queued or in flight, as kept in
        the spool (``spooled`` and the trace has a record) or lost to ``shutdown``;
        ``(lost, kept)``."""
        left = list(self.queue)
        left += sorted(self.in_flight, key=lambda i: i.seq)
        self.queue.clear()
        lost: list[Item] = []
        kept: list[Item] = []
        for item in left:
            self.mark_settled_locked(item)
            if item.ref is not None and spooled:
                self.spooled += 1  # the caller checks the spool holds it, outside the lock
                kept.append(item)
            else:
                self.dropped["shutdown"] += 1
                lost.append(item)
        self.settled_cond.notify_all()  # flushes waiting: everything is settled now
        return lost, kept

    def snapshot_locked(
        self,
        spool: SpoolStats | None = None,
        redacted: dict[str, int] | None = None,
        destinations: dict[str, DestinationStats] | None = None,
    ) -> ExporterStats:
        """The counts as :class:`ExporterStats` (with the spool's own figures, if any, the
        redactor's counts and each destination's)."""
        pending_records = spool.pending_records if spool is not None else 0
        pending_bytes = spool.pending_bytes if spool is not None else 0
        corrupt = spool.corrupt if spool is not None else 0
        return ExporterStats(
            submitted=self.submitted,
            sent=self.sent,
            retries=self.retries,
            dropped=dict(self.dropped),
            queued=len(self.queue),
            in_flight=len(self.in_flight),
            buffered_bytes=self.held_bytes,
            bytes_sent=self.bytes_sent,
            coerced=dict(self.coerced),
            last_error=self.last_error,
            last_success_time=self.last_success,
            spooled=self.spooled,
            adopted=self.adopted,
            spool_pending_records=pending_records,
            spool_pending_bytes=pending_bytes,
            spool_corrupt=corrupt,
            spool_write_errors=self.spool_write_errors,
            sampled_out=self.sampled_out,
            redacted=redacted or {},
            destinations=destinations or {},
        )

    def lane_locked(self, stats: DestinationStats) -> DestinationStats:
        """``stats`` with the counts of the traces of its lane, this ledger's (lock held)."""
        return msgspec.structs.replace(
            stats,
            queued=len(self.queue),
            in_flight=len(self.in_flight),
            spooled=self.spooled,
            dropped={reason: count for reason, count in self.dropped.items() if count},
        )

    def destination_locked(self, name: str) -> DestinationStats:
        """The stats of an exporter's one destination when it takes a trace per request: the
        ledger's own counts (lock held)."""
        rejected = self.dropped["rejected"]
        return DestinationStats(
            name=name,
            sent=self.sent,
            retries=self.retries,
            bytes_sent=self.bytes_sent,
            rejected={"rejected": rejected} if rejected else {},
            last_error=self.last_error,
        )
