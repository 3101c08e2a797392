"""The exporter's spool: write-ahead of submitted traces, keeping failed ones, the backlog."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .admission import Admission
from .destination_infinium import encode_trace
from .durability import (
    ADOPT_INTERVAL,
    KIND_BODY,
    KIND_CAPTURED,
    KINDS,
    RECORD_CODECS,
    REFILL_BATCH,
    SPOOL_RETRY,
    Backlog,
    backlog_item,
    captured_record,
    dict_record,
    quietly,
)
from .ledger import Ledger
from .model import TaskData
from .queued import Item, PendingTrace, build_quietly
from .redact import Redactor, redacted_record
from .results import Reporter, failure_response
from .retry import RetryPolicy
from .settings import Settings
from .spool import RecordRef, Spool

__all__ = ["WriteAhead"]

_log = logging.getLogger("infinium_logging.exporter")


class WriteAhead:
    """The spool of an exporter with ``spool_dir`` set, and the ledger's part in it.

    Every submitted trace is written before ``submit`` returns (:meth:`write`); one
    the queue has no room for, or that fails for a reason worth a later attempt, is
    kept there (:meth:`park`, :meth:`keep`), counted as ``spooled``; sender threads
    adopt what other processes left and take the backlog up again (:meth:`chore`,
    :meth:`do_chore`), backing off while the endpoint fails.  ``wake(n)`` (lock held)
    wakes idle senders for ``n`` traces; ``closed()`` says whether the exporter is.
    """

    def __init__(
        self,
        settings: Settings,
        policy: RetryPolicy,
        closed: Callable[[], bool],
        clean: Callable[[str], str],
        redactor: Redactor,
    ) -> None:
        assert settings.spool_dir is not None
        self._redactor = redactor
        self._settings = settings
        self._policy = policy
        self._closed = closed
        self._clean = clean
        self._start_lock = threading.RLock()
        self.spool: Spool | None = None
        self._retry_at = 0.0
        #: The tag of the lane that settles a trace with ack(), and every lane's (see set_lanes).
        self._primary = 0
        self._needed: frozenset[int] = frozenset()

    def reset(self, admission: Admission, wake: Callable[[int], None], reporter: Reporter) -> None:
        """Fresh accounting (at construction, and in a forked child, with its new ledger)."""
        self._admission = admission
        self._ledger: Ledger = admission.ledger
        self._wake = wake
        self._reporter = reporter
        self._error_logged = False
        self.backlog = Backlog(self._policy)
        #: Shutdown has counted what is left: nothing more is taken up.
        self.final = False

    def start(self) -> bool:
        """At construction: when the agent's spool directory exists, open it; whether it
        holds segments (an earlier run's records, to be replayed now)."""
        settings = self._settings
        assert settings.spool_dir is not None
        root = os.path.join(
            os.path.abspath(os.path.expanduser(settings.spool_dir)), settings.agent_id
        )
        try:
            names = os.listdir(root)
        except OSError:
            return False  # no spool yet: the first submit creates it
        return self.open() is not None and any(n.endswith(".log") for n in names)

    def open(self) -> Spool | None:
        """The spool, opened unless it failed to open a moment ago."""
        spool = self.spool
        if spool is not None or time.monotonic() < self._retry_at:
            return spool
        settings = self._settings
        assert settings.spool_dir is not None
        with self._start_lock:
            if self.spool is None and not self._closed():
                try:
                    # Adoption reads whole files: a sender thread does it, not the caller.
                    self.spool = Spool(
                        settings.spool_dir,
                        settings.agent_id,
                        max_bytes=settings.spool_max_bytes,
                        fsync=settings.spool_fsync,
                        adopt=False,
                        listener=self._event,
                        kinds=KINDS,
                    )
                except Exception as exc:
                    self._retry_at = time.monotonic() + SPOOL_RETRY
                    self.trouble(exc)
            return self.spool

    def after_fork(self) -> None:
        """In a forked child: the parent's records stay the parent's; the child writes
        segments of its own."""
        spool = self.spool
        if spool is not None and not spool.closed:
            spool.after_fork_in_child()
            self.backlog.next_adopt = time.monotonic() + ADOPT_INTERVAL

    def submit(self, task: object, *, keep_task: bool) -> bool:
        """Write a submitted trace ahead, then queue it, or keep it in the spool when the
        queue is full; whether it was accepted.  ``keep_task``: the queue keeps the trace
        itself beside its encoded body (``on_result`` is told it)."""
        ref: RecordRef | None = None
        body: bytes | None = None
        reason = ""
        if not self._closed():
            # The write-ahead needs what the trace is made of: what a handler or processor
            # captured, as it is when the spool can keep it so (a sender builds it, as
            # without a spool), else the trace, built now.
            record: bytes | None = None
            trace: Any = task
            if isinstance(task, PendingTrace):
                record = captured_record(task)
                if record is None:
                    trace = build_quietly(task)
            if record is None and not isinstance(trace, (TaskData, Mapping)):
                reason, size = "invalid", 0
            else:
                task = trace  # what the queue holds: built once, here or by a sender
                ref, body, size = self.write(trace, record)
        else:  # refused below
            size = self._admission.estimate(task)
            if size < 0:
                reason = "invalid"
        park = False
        ledger = self._ledger
        # ``with``, not acquire() then try: an exception raised by a signal handler
        # between the two (sys.exit on SIGTERM) would leave the lock held, and exit hung.
        with ledger.lock:
            ledger.submitted += 1
            if self._closed():
                reason = "closed"
            if not reason and self._admission.full_locked(size):
                if ref is not None:
                    park = True  # it waits in the spool until the queue has room
                    ledger.spooled += 1
                else:
                    reason = "queue_full"
            if reason:
                ledger.dropped[reason] += 1
            elif not park:
                # With the body encoded, the task itself is only kept for on_result.
                held = task if body is None or keep_task else None
                loose = ref is not None and body is None
                ledger.enqueue_locked(Item(held, 0, size, body, ref, loose))
                self._wake(1)
        if ref is not None and (reason or park):
            return self.refused(ref, park)
        return not reason

    def write(
        self, task: TaskData | Mapping[str, Any] | PendingTrace, captured: bytes | None = None
    ) -> tuple[RecordRef | None, bytes | None, int]:
        """Write a submitted trace to the spool: ``(record, encoded body or None, size)``.

        ``captured`` is the record of a captured trace (see
        :func:`~infinium_logging.durability.captured_record`).  The size is exact for a
        TaskData and the record's size otherwise (a better guess than the estimate).
        Never raises: a trace that cannot be written goes on in memory only.
        """
        body: bytes | None = None
        try:
            # Redacted before it touches the disk (a scan, nearly always all it costs).
            redactor = self._redactor
            if captured is not None:
                captured = redacted_record(redactor, captured, *RECORD_CODECS[KIND_CAPTURED])
                payload, kind, size = captured, KIND_CAPTURED, len(captured)
            elif isinstance(task, TaskData):
                raw = encode_trace(task)
                redacted_task = redactor.encoded(task, raw)
                body = raw if redacted_task is task else encode_trace(redacted_task)
                payload, kind, size = body, KIND_BODY, len(body)
            else:
                # Lenient coercion stays on the sender thread; the record keeps the dict as
                # submitted, read back when the trace is taken up from the spool.
                kind, payload = dict_record(task)
                payload = redacted_record(redactor, payload, *RECORD_CODECS[kind])
                size = len(payload)
        except Exception:
            # The sender thread finds it invalid and says why.
            size = len(body) if body is not None else max(0, self._admission.estimate(task))
            return None, body, size
        spool = self.spool or self.open()
        error: Exception | None = None
        if spool is not None:
            try:
                return spool.append(payload, kind), body, size
            except Exception as exc:  # a full disk, lost permissions, a closed spool
                error = exc
        closed = self._closed()
        with self._ledger.lock:
            if not closed:
                self._ledger.spool_write_errors += 1
        if error is not None and not closed:
            self.trouble(error)
        return None, body, size

    def trouble(self, error: BaseException) -> None:
        """Say once why the spool cannot be used (each trace it costs is counted)."""
        with self._ledger.lock:
            first = not self._error_logged
            self._error_logged = True
        if first:
            _log.warning(
                "infinium_logging cannot write to the spool in %s (%s): traces are kept in "
                "memory only while it fails (counted in stats().spool_write_errors)",
                self._settings.spool_dir,
                self._clean(f"{type(error).__name__}: {error}"),
            )

    def refused(self, ref: RecordRef, park: bool) -> bool:
        """A written trace the queue did not take: keep it in the spool (``park``, counted
        as spooled already) or settle its record; whether it was kept."""
        spool = self.spool
        if not park:
            if spool is not None:
                quietly(spool.ack, ref)
            return False
        if spool is not None and quietly(spool.release, ref):
            return True
        self._ledger.spool_lost(1)
        return False

    def _event(self, event: str, count: int) -> None:
        """The spool's listener (called with the spool's lock held: must not call the spool)."""
        ledger = self._ledger
        with ledger.lock:
            if event == "adopted":
                ledger.adopted += count
                ledger.spooled += count
                self._wake(1)
            elif event in ("evicted", "unreadable"):
                ledger.spooled -= count
                ledger.dropped["spool_full" if event == "evicted" else "invalid"] += count

    def chore(self, now: float, deadline: float | None) -> str:
        """Spool work a sender thread should do now, outside the lock (lock held)."""
        if self.spool is None or self.final:
            return ""
        return self.backlog.chore(
            now,
            spooled=self._ledger.spooled,
            closed=self._closed(),
            room=len(self._ledger.queue) <= self._admission.max_items // 2,
            deadline=deadline,
        )

    def due_by(self, limit: float) -> bool:
        """Whether spooled records may be taken up before ``limit`` (lock held)."""
        return (
            self.spool is not None
            and not self.final
            and self.backlog.due_by(limit, self._ledger.spooled)
        )

    def idle_wait(self, now: float) -> float | None:
        """How long an idle sender may sleep before spool work is due (lock held)."""
        if self.spool is None or self.final:
            return None
        return self.backlog.idle_wait(now, spooled=self._ledger.spooled, closed=self._closed())

    def do_chore(self, chore: str) -> None:
        """Adopt what other processes left, or take records of the backlog up into the queue."""
        spool = self.spool
        assert spool is not None
        ledger = self._ledger
        if chore == "adopt":
            try:
                spool.adopt()
            except Exception:
                _log.debug("spool adoption failed", exc_info=True)
            finally:
                with ledger.lock:
                    self.backlog.adopting = False
            return
        with ledger.lock:
            probing = self.backlog.failures > 0
            room, byte_room = self._admission.room_locked(REFILL_BATCH)
        taken: list[tuple[RecordRef, int, bytes]] = []
        try:
            # While the endpoint keeps failing, one record probes it per backoff period.
            taken = spool.take_backlog(1 if probing else room, byte_room)
        except Exception:
            _log.debug("reading the spool's backlog failed", exc_info=True)
        items = [backlog_item(ref, kind, payload, spool.parts(ref)) for ref, kind, payload in taken]
        with ledger.lock:
            self.backlog.refilled(probing, len(items))
            if self.final:
                return  # shutdown already counted these as left in the spool, where they are
            ledger.spooled -= len(items)
            for item in items:
                ledger.enqueue_locked(item)
            self._wake(max(1, len(items)))
            if ledger.waiters:
                ledger.settled_cond.notify_all()

    def recovered_locked(self) -> None:
        """The endpoint answers again: take the spool's backlog up at once (lock held)."""
        if self.backlog.recovered() and self._ledger.spooled:
            self._wake(1)

    def set_lanes(self, primary: int, needed: frozenset[int]) -> None:
        """Say which lanes (destinations, by :func:`~infinium_logging.spool.lane_tag`) each
        trace goes to: ``needed``, of which :meth:`ack` settles ``primary``'s part and
        :meth:`ack_lane` the others'.  A record is settled once all of them are done with it.
        Without this (or with one lane), :meth:`ack` settles a record whole."""
        self._primary, self._needed = primary, needed

    def ack(self, item: Item) -> None:
        """Settle a trace's spool record, before the trace counts as settled: whoever sees it
        settled (``flush()``, ``stats()``) must find its record settled too.  (Not under the
        lock: the spool calls its listener, which takes the lock, with its own lock held.)
        With several lanes, only the primary lane's part of it (see :meth:`set_lanes`) once
        the trace was handed to them."""
        ref = item.ref
        spool = self.spool
        if ref is not None and spool is not None and not item.settled:
            if item.handed and len(self._needed) > 1:
                quietly(spool.ack_part, ref, self._primary, self._needed)
            else:  # settled before any lane had it (invalid, sampled out): for all of them
                quietly(spool.ack, ref)

    def ack_lane(self, ref: RecordRef | None, tag: int) -> None:
        """The lane tagged ``tag`` is done with a record (None: a trace without one): the
        record is settled once every lane given to :meth:`set_lanes` is (without lanes set,
        at once)."""
        spool = self.spool
        if spool is not None and ref is not None:
            quietly(spool.ack_part, ref, tag, self._needed)

    def keep(self, item: Item, ref: RecordRef, reason: str, error: str | None) -> bool:
        """Leave a trace in the spool for a later attempt (or the next start, at shutdown)."""
        spool = self.spool
        assert spool is not None
        with self._ledger.lock:
            if not self._ledger.kept(item, error):
                return False
            if reason not in ("shutdown", "queue_full"):  # a full lane is no failing endpoint
                self.backlog.failed()
        # With lanes, the record stays as it is: a lane still holding it settles its part there.
        if item.loose and item.body is not None and len(self._needed) < 2:
            # Keep the exact wire body rather than the submitted dict: read back later, it is
            # sent as it is, without coercing (and counting the fixes) a second time.
            exact = quietly(spool.append, item.body, KIND_BODY)
            if exact is not None:
                quietly(spool.ack, ref)
                ref = exact
        # At the shutdown deadline it is not handed back: this process will not try it again.
        kept = quietly(spool.holds if reason == "shutdown" else spool.release, ref)
        if kept:
            if reason != "shutdown":
                # Kept by a lane's thread (see lanes.py), the senders may all be asleep with
                # nothing spooled when they looked: one looks again, and waits its turn.
                with self._ledger.lock:
                    self._wake(1)
            return True
        self._ledger.spool_lost(1)
        self._reporter.report(item, failure_response("spool_full", error))
        return True

    def left(self, kept: list[Item]) -> list[Item]:
        """At shutdown: of the traces counted as left in the spool, those it does not hold
        (counted as ``spool_full`` instead)."""
        spool = self.spool
        if spool is None:
            return []
        gone = [item for item in kept if not quietly(spool.holds, item.ref)]
        if gone:
            self._ledger.spool_lost(len(gone))
        return gone
