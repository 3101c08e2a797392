"""The Infino destination: traces batched into signed bulk uploads, retried, spooled, counted.

Over the class budget as one thing: ``InfinoSink``'s queue, its sender thread and its
settle-once accounting share one condition variable, and the invariant between them is the
class's own.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from . import lifecycle
from .convert import decode_task, lenient_task
from .delivery import Deadline, Delivery
from .errors import InfiniumError, ValidationError
from .guard import EXPORTING
from .infino_client import InfinoClient
from .infino_destination import InfinoDestination
from .infino_settings import InfinoSettings
from .model import TaskData, encode_task
from .queued import PendingTrace
from .redact import Redactor, default_redactor
from .retry import RetryPolicy
from .spool import RecordRef, Spool
from .throttle import TokenBucket
from .transport import redacted

__all__ = ["InfinoSink", "InfinoStats"]

_log = logging.getLogger("infinium_logging.infino")

#: Reasons a trace is lost for, as counted in ``InfinoStats.dropped``.
DROP_REASONS: Final = (
    "queue_full",  # the buffer held max_queue_size traces
    "closed",  # submitted after shutdown() started
    "invalid",  # could not be read as a trace, or encoded
    "rejected",  # Infino refused its trace row for good (see rows_rejected for why)
    "auth",  # Infino refused the keys (401/403)
    "retries_exhausted",  # still failing after max_retries retries
    "max_elapsed",  # still failing when the batch's max_elapsed ran out
    "shutdown",  # still waiting when the shutdown deadline came
    "spool_full",  # evicted from the spool past its size bound before it could be delivered
)
#: With a spool, traces that fail for these reasons stay there for a later attempt.
_KEEP_REASONS: Final = frozenset({"auth", "retries_exhausted", "max_elapsed", "shutdown"})
#: How often (seconds) records handed back to the spool are tried again.
_BACKLOG_INTERVAL: Final = 5.0


class InfinoStats(msgspec.Struct, frozen=True, kw_only=True):
    """What the Infino destination did, read at one instant.

    ``submitted + adopted == sent + dropped_total + queued + in_flight + spooled``.
    """

    destination: str = "infino"
    submitted: int
    #: Traces whose trace row Infino stored.
    sent: int
    #: Records (trace and step rows) Infino stored, and the bulk requests that carried them.
    rows_sent: int
    requests: int
    #: Retries of a request or of records a 200 answer refused for now.
    retries: int
    #: Traces lost, by reason (every reason of ``DROP_REASONS`` is present).
    dropped: dict[str, int]
    #: Rows refused for good inside a 200 answer, by the error type Infino gave.
    rows_rejected: dict[str, int]
    queued: int
    in_flight: int
    #: Traces held only in the spool, waiting for a later attempt.
    spooled: int
    #: Traces taken over from the spool of an earlier process.
    adopted: int
    last_error: str | None
    #: Values redacted from traces, by kind (see ``INFINIUM_REDACT``).
    redacted: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        """All traces lost, whatever the reason."""
        return sum(self.dropped.values())


@dataclasses.dataclass(eq=False)
class _Record:
    """One trace on its way: its record for each destination still to store it."""

    records: dict[str, bytes]
    ref: RecordRef | None
    trace_refused: bool = False


class InfinoSink:
    """Sends every trace to an Infino dataset as one flat row (and one row per step with
    ``steps_dataset``), in signed bulk requests; usable wherever ``exporter=`` is taken.

    ``submit`` never blocks or raises.  One thread batches traces (``max_batch_records``,
    ``max_batch_bytes``, at most ``linger`` seconds of waiting) and delivers them through one
    :class:`~infinium_logging.delivery.Delivery` per dataset (token bucket, retries, the 429
    rule); rows a 200 answer refuses for now are sent again, rows refused for good counted by
    reason.  Row ids derive from the trace: a retry or replay overwrites.  ``settings=None``
    reads ``INFINIUM_INFINO_*`` (keyword arguments win); with ``spool_dir``, traces survive a
    crash or restart.
    """

    def __init__(self, settings: InfinoSettings | None = None, **overrides: Any) -> None:
        if settings is None:
            settings = InfinoSettings.from_env(**overrides)
        elif overrides:
            settings = dataclasses.replace(settings, **overrides)
        self._settings = settings
        self._redactor = default_redactor().with_secrets(settings.secret_key)
        self._clock = time.monotonic
        self._client = InfinoClient(settings)
        self._policy = RetryPolicy(
            max_retries=settings.max_retries,
            backoff_base=settings.retry_backoff_base,
            backoff_max=settings.retry_backoff_max,
            max_elapsed=settings.max_elapsed,
        )
        # One bucket for every dataset: Infino's request budget is the client's as a whole.
        self._bucket = TokenBucket(settings.requests_per_second, settings.burst_size)
        self._deadline = Deadline()
        self._destinations = [InfinoDestination(settings, client=self._client)]
        if settings.steps_dataset:
            self._destinations.append(InfinoDestination(settings, steps=True, client=self._client))
        self._deliveries = {
            destination.name: Delivery(
                destination, self._policy, self._bucket, self._deadline, settings.timeout
            )
            for destination in self._destinations
        }
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[object, RecordRef | None, float]] = collections.deque()
        self._counts: collections.Counter[str] = collections.Counter()
        self._dropped: collections.Counter[str] = collections.Counter()
        self._rejected: collections.Counter[str] = collections.Counter()
        self._in_flight = 0
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._flushes = 0
        self._next_backlog = 0.0
        self._spool: Spool | None = None
        if settings.spool_dir:
            self._spool = Spool(
                settings.spool_dir, f"infino-{settings.dataset}", listener=self._spool_event
            )
            self._counts["adopted"] = self._spool.backlog_size()
            if self._counts["adopted"]:
                self._start()  # what an earlier process left is sent without waiting for more
        lifecycle.track(self)

    def __repr__(self) -> str:
        return (
            f"InfinoSink(endpoint={self._settings.endpoint!r}, dataset={self._settings.dataset!r})"
        )

    @property
    def settings(self) -> InfinoSettings:
        """The settings of this destination (the secret key masked in their repr)."""
        return self._settings

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` has begun (as :attr:`Exporter.closed`)."""
        return self._closing

    def submit(self, task: TaskData | dict[str, Any] | PendingTrace | object) -> bool:
        """Take one finished trace; False when it was not taken (full, closed: counted)."""
        try:
            return self._submit(task)
        except Exception as exc:  # never into the caller
            self._count_drop("invalid", f"could not take the trace: {exc!r}")
            return False

    def _submit(self, task: object) -> bool:
        with self._cond:
            self._counts["submitted"] += 1
            if self._closing:
                self._dropped["closed"] += 1
                return False
            if len(self._queue) >= self._settings.max_queue_size:
                self._dropped["queue_full"] += 1
                return False
        ref = None
        if self._spool is not None:
            body = _encoded(task, self._redactor)
            if body is None:
                self._count_drop("invalid", "the trace could not be encoded")
                return False
            task = body
            try:
                ref = self._spool.append(body)
            except (OSError, ValueError) as exc:
                _log.warning("Infino spool: could not write a trace (%s); kept in memory", exc)
        with self._cond:
            self._queue.append((task, ref, self._clock()))
            if self._thread is None:
                self._start()
            self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now, without waiting for batches to fill; True when nothing is
        left queued or in flight within ``timeout`` seconds."""
        limit = self._settings.shutdown_timeout if timeout is None else timeout
        end = time.monotonic() + limit
        with self._cond:
            self._flushes += 1
            self._cond.notify_all()
            try:
                while self._queue or self._in_flight:
                    left = end - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(min(left, 0.05))
            finally:
                self._flushes -= 1
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Deliver what is held within ``timeout`` seconds (default ``shutdown_timeout``), then
        stop; what is left is counted as ``shutdown`` (or stays in the spool)."""
        began = self._begin_shutdown(
            self._settings.shutdown_timeout if timeout is None else timeout
        )
        return self._finish_shutdown(began)

    close = shutdown

    def _begin_shutdown(self, limit: float) -> bool:
        """Close and set the deadline; False when a shutdown had begun already."""
        with self._cond:
            if self._closing:
                return False
            self._closing = True
            self._deadline.at = self._clock() + limit
            self._cond.notify_all()
        self._deadline.stopping.set()
        self._bucket.wake()
        return True

    def _finish_shutdown(self, began: bool = True) -> bool:
        """Wait (within the deadline) for the sender; count what is left."""
        thread = self._thread
        limit = max(0.0, (self._deadline.at or self._clock()) - self._clock())
        if thread is not None and thread is not threading.current_thread():
            thread.join(limit + 0.5)
        if began:
            with self._cond:
                left = [entry[1] for entry in self._queue]
                self._queue.clear()
                self._settle_lost(left, "shutdown")
            self._deadline.finished.set()
            if self._spool is not None:
                self._spool.close()
            self._client.close()
        with self._cond:
            return not self._in_flight and self._dropped["shutdown"] == 0

    def stats(self) -> InfinoStats:
        """Counts so far (one consistent reading)."""
        with self._cond:
            spooled = self._spool.backlog_size() if self._spool is not None else 0
            return InfinoStats(
                submitted=self._counts["submitted"],
                sent=self._counts["sent"],
                rows_sent=self._counts["rows_sent"],
                requests=self._counts["requests"],
                retries=self._counts["retries"],
                dropped={reason: self._dropped[reason] for reason in DROP_REASONS},
                rows_rejected=dict(self._rejected),
                queued=len(self._queue),
                in_flight=self._in_flight,
                spooled=spooled,
                adopted=self._counts["adopted"],
                last_error=self._last_error,
                redacted=self._redactor.counts(),
            )

    # -- what the process-wide hooks ask (lifecycle.Stoppable) ----------------------------------

    def _exit_pending(self) -> bool:
        return self._thread is not None or bool(self._queue)

    def _begin_exit(self) -> bool:
        return self._begin_shutdown(self._settings.shutdown_timeout)

    def _reset_after_fork(self) -> None:
        # The parent's thread is not in the child and its locks may be held: the child
        # starts empty (the parent still delivers what it holds; its spool stays its own).
        self._cond, self._queue, self._in_flight = threading.Condition(), collections.deque(), 0
        self._thread = self._spool = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="infino-sender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # What this thread logs (urllib3 included) must never become a trace: the same guard
        # as the exporter's own sender threads.
        EXPORTING.set(True)
        self._loop()

    def _loop(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            if batch:
                try:
                    self._deliver(batch)
                except Exception as exc:  # the thread must live on
                    _log.exception("Infino delivery failed unexpectedly")
                    self._settle([r for r in batch if r.records], "invalid", repr(exc))
                finally:
                    with self._cond:
                        self._in_flight -= len(batch)
                        self._cond.notify_all()

    def _gather(self) -> list[_Record] | None:
        """The next batch (empty when only the backlog was looked at), or None to stop."""
        settings = self._settings
        with self._cond:
            while True:
                now = self._clock()
                if self._closing and (not self._queue or now >= (self._deadline.at or now)):
                    return None
                if self._queue:
                    oldest = self._queue[0][2]
                    full = len(self._queue) >= settings.max_batch_records
                    if full or self._flushes or self._closing or now - oldest >= settings.linger:
                        break
                    self._cond.wait(max(0.001, settings.linger - (now - oldest)))
                    continue
                if self._spool is not None and now >= self._next_backlog:
                    self._next_backlog = now + _BACKLOG_INTERVAL
                    self._refill()
                    if self._queue:
                        continue
                self._cond.wait(_BACKLOG_INTERVAL if self._spool is not None else None)
            entries: list[tuple[object, RecordRef | None, float]] = []
            while self._queue and len(entries) < settings.max_batch_records:
                entries.append(self._queue.popleft())
            self._in_flight += len(entries)
        batch = []
        for task, ref, _ in entries:
            record = self._record(task, ref)
            if record is not None:
                batch.append(record)
        if len(batch) < len(entries):
            with self._cond:
                self._in_flight -= len(entries) - len(batch)
                self._cond.notify_all()
        return batch

    def _refill(self) -> None:
        """Move records handed back to (or adopted by) the spool into the queue (lock held)."""
        assert self._spool is not None
        room = self._settings.max_queue_size - len(self._queue)
        for ref, _kind, payload in self._spool.take_backlog(min(room, 10_000)):
            self._queue.append((payload, ref, self._clock()))

    def _record(self, task: object, ref: RecordRef | None) -> _Record | None:
        """The records of one trace for each destination, or None (counted) when it cannot be
        read."""
        try:
            records = _records_of(task, self._destinations, self._redactor)
        except Exception as exc:
            self._count_drop("invalid", f"a trace could not be read: {exc!r}")
            if ref is not None and self._spool is not None:
                self._spool.ack(ref)
            return None
        return _Record(records, ref)

    def _deliver(self, batch: list[_Record]) -> None:
        """Send every record of ``batch`` to every destination; settle each trace."""
        started = self._clock()
        retries = 0
        while True:
            for destination in self._destinations:
                for chunk in _chunks(batch, destination):
                    ended = self._send(destination, chunk)
                    if ended is not None:  # nothing more will pass now
                        self._settle([r for r in batch if r.records], ended, self._last_error)
                        self._finish([r for r in batch if not r.records])
                        return
            self._finish([r for r in batch if not r.records])
            batch = [r for r in batch if r.records]
            if not batch:
                return
            # Only records a 200 answer refused for now are left: they get another attempt.
            decision = self._policy.decide(retries, self._clock() - started)
            if not decision.retry:
                self._settle(batch, decision.reason, self._last_error)
                return
            retries += 1
            with self._cond:
                self._counts["retries"] += 1
            if not self._deadline.sleep_until(self._clock() + decision.delay):
                self._settle(batch, "shutdown", "the shutdown deadline came first")
                return

    def _send(self, destination: InfinoDestination, chunk: list[_Record]) -> str | None:
        """One delivery of ``chunk`` (retried inside for 429, 5xx, no answer); None when it
        was answered, else the reason the whole batch ends with."""
        name = destination.name
        body = destination.frame([record.records[name] for record in chunk])
        outcome = self._deliveries[name].deliver(body, on_retry=self._retrying)
        with self._cond:
            self._counts["requests"] += 1
        if outcome.error is not None:
            self._note_error(outcome.error.message)
        if outcome.reason == "rejected":
            status = outcome.error.status_code if outcome.error is not None else None
            for record in chunk:
                self._refuse(record, destination, f"http_{status}")
            return None
        if outcome.reason != "sent" or outcome.response is None:
            return "shutdown" if outcome.reason == "abandoned" else outcome.reason
        results = destination.results(outcome.response, len(chunk))
        stored = 0
        for record, result in zip(chunk, results, strict=True):
            if result.verdict == "sent":
                stored += record.records.pop(name).count(b"\n") // 2
            elif result.verdict == "reject":
                self._refuse(record, destination, result.reason)
            else:
                self._note_error(f"Infino refused a record of {destination.dataset} for now")
        with self._cond:
            self._counts["rows_sent"] += stored
        return None

    def _retrying(self, error: InfiniumError) -> bool:
        with self._cond:
            self._counts["retries"] += 1
            self._counts["requests"] += 1
        self._note_error(error.message)
        return True

    def _refuse(self, record: _Record, destination: InfinoDestination, reason: str) -> None:
        data = record.records.pop(destination.name, b"")
        if destination is self._destinations[0]:
            record.trace_refused = True
        with self._cond:
            self._rejected[reason] += max(1, data.count(b"\n") // 2)
        self._note_error(f"Infino refused a record of {destination.dataset} for good: {reason}")

    # -- settling --------------------------------------------------------------------------------

    def _finish(self, records: list[_Record]) -> None:
        """Traces with no row left to send: stored, or refused for good."""
        with self._cond:
            for record in records:
                if record.trace_refused:
                    self._dropped["rejected"] += 1
                else:
                    self._counts["sent"] += 1
        for record in records:
            if record.ref is not None and self._spool is not None:
                self._spool.ack(record.ref)

    def _settle(self, records: list[_Record], reason: str, error: str | None) -> None:
        if error:
            self._note_error(error)
        with self._cond:
            self._settle_lost([record.ref for record in records], reason)

    def _settle_lost(self, refs: list[RecordRef | None], reason: str) -> None:
        """Count traces that could not be delivered now (lock held): kept in the spool when
        the reason allows, lost otherwise."""
        for ref in refs:
            spool = self._spool
            if (
                ref is not None
                and spool is not None
                and reason in _KEEP_REASONS
                and spool.release(ref)
            ):
                continue
            if ref is not None and spool is not None:
                spool.ack(ref)
            self._dropped[reason] += 1

    def _count_drop(self, reason: str, error: str) -> None:
        self._note_error(error)
        with self._cond:
            self._dropped[reason] += 1

    def _note_error(self, text: str) -> None:
        self._last_error = redacted(text, (self._settings.secret_key,))

    def _spool_event(self, event: str, count: int) -> None:
        if event == "evicted":
            with self._cond:
                self._dropped["spool_full"] += count


def _chunks(batch: list[_Record], destination: InfinoDestination) -> Iterator[list[_Record]]:
    """The records still bound for ``destination``, in requests within its limits."""
    limits = destination.limits
    chunk: list[_Record] = []
    size = 0
    for record in batch:
        data = record.records.get(destination.name)
        if data is None:
            continue
        if chunk and (size + len(data) > limits.max_bytes or len(chunk) >= limits.max_records):
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += len(data)
    if chunk:
        yield chunk


def _records_of(
    task: object, destinations: list[InfinoDestination], redactor: Redactor
) -> dict[str, bytes]:
    """A trace's record for each destination that has one."""
    if isinstance(task, bytes):  # from the spool (redacted before it was written)
        body, built = task, decode_task(task, strict=False)
    else:
        built, body = _redacted(_built(task), redactor)
    records = {}
    for destination in destinations:
        try:
            records[destination.name] = destination.encode_body(built, body)
        except ValidationError:  # nothing for this one (a trace without steps)
            continue
    return records


def _built(task: object) -> TaskData:
    if isinstance(task, PendingTrace):
        task = task.materialize()
    if isinstance(task, TaskData):
        return task
    return lenient_task(task)[0]


def _redacted(trace: TaskData, redactor: Redactor) -> tuple[TaskData, bytes]:
    """The trace redacted (``INFINIUM_REDACT``, the sink's secret key included) and its wire
    body, what its rows' ``_id`` derive from: every trace, before it is spooled or sent."""
    body = encode_task(trace)
    clean = redactor.encoded(trace, body)
    if clean is not trace:
        trace, body = clean, encode_task(clean)
    return trace, body


def _encoded(task: object, redactor: Redactor) -> bytes | None:
    """The trace's redacted wire body, or None."""
    try:
        return _redacted(_built(task), redactor)[1]
    except Exception:
        return None
