"""The Infino destination: traces batched into signed bulk uploads, retried, spooled, counted."""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import msgspec

from .convert import decode_task, lenient_task
from .errors import InfiniumError, RateLimitError
from .exporter import _EXPORTING, before_exit
from .infino_client import InfinoClient
from .infino_rows import bulk_entry, read_bulk_answer, step_rows, trace_id_of, trace_row
from .infino_settings import InfinoSettings
from .mapping import PendingTrace
from .model import TaskData, encode_task
from .retry import RetryPolicy, classify, retry_after_of
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

    @property
    def dropped_total(self) -> int:
        """All traces lost, whatever the reason."""
        return sum(self.dropped.values())


@dataclasses.dataclass(eq=False)
class _Record:
    """One trace on its way: its rows by dataset (``_id`` -> NDJSON entry) until stored."""

    trace_id: str
    rows: dict[str, dict[str, bytes]]
    ref: RecordRef | None
    trace_stored: bool = False
    trace_refused: bool = False


class InfinoSink:
    """Sends every trace it is given to an Infino dataset, as one flat row (plus one row per
    step when ``steps_dataset`` is set), in signed bulk requests.

    ``submit(task)`` takes a trace (a TaskData, a dict of TaskData fields, a
    trace not yet built) without blocking or raising; one background thread
    gathers traces into batches of up to ``max_batch_records`` traces and
    ``max_batch_bytes`` bytes, waiting at most ``linger`` seconds for a batch
    to fill, and sends them through a token bucket of ``requests_per_second``.
    Failed requests (429, 5xx, no answer) are retried with jittered backoff and
    ``Retry-After``; rows a 200 answer refuses for now are sent again, rows it
    refuses for good are counted by reason.  Each row's ``_id`` is derived from
    the trace, so a retry or replay overwrites instead of adding a copy.

    ``settings=None`` reads ``INFINIUM_INFINO_*`` (keyword arguments win).
    Usable wherever ``exporter=`` is taken.  With ``spool_dir`` set, traces are
    written to a durable spool before ``submit`` returns and delivered after a
    crash or restart (at least once; the ``_id`` makes it exactly once in Infino).
    """

    def __init__(
        self,
        settings: InfinoSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = InfinoSettings.from_env(**overrides)
        elif overrides:
            settings = dataclasses.replace(settings, **overrides)
        self._settings = settings
        self._clock = clock
        self._client = InfinoClient(settings)
        self._policy = RetryPolicy(
            max_retries=settings.max_retries,
            backoff_base=settings.retry_backoff_base,
            backoff_max=settings.retry_backoff_max,
            max_elapsed=settings.max_elapsed,
        )
        self._bucket = TokenBucket(settings.requests_per_second, settings.burst_size, clock=clock)
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[object, RecordRef | None, float]] = collections.deque()
        self._counts: collections.Counter[str] = collections.Counter()
        self._dropped: collections.Counter[str] = collections.Counter()
        self._rejected: collections.Counter[str] = collections.Counter()
        self._in_flight = 0
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._deadline: float | None = None
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
        before_exit.append(self._shutdown_at_exit)

    def __repr__(self) -> str:
        return (
            f"InfinoSink(endpoint={self._settings.endpoint!r}, dataset={self._settings.dataset!r})"
        )

    @property
    def settings(self) -> InfinoSettings:
        """The settings of this destination (the secret key masked in their repr)."""
        return self._settings

    # -- the caller's side ---------------------------------------------------------------------

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
            body = _encoded(task)
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
        limit = self._settings.shutdown_timeout if timeout is None else timeout
        with self._cond:
            already = self._closing
            self._closing = True
            self._deadline = self._clock() + limit
            thread = self._thread
            self._cond.notify_all()
        self._bucket.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(limit + 0.5)
        if not already:
            with self._cond:
                left = [entry[1] for entry in self._queue]
                self._queue.clear()
                self._settle_lost(left, "shutdown")
            if self._spool is not None:
                self._spool.close()
            self._client.close()
        with self._cond:
            return not self._in_flight and self._dropped["shutdown"] == 0

    close = shutdown

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
            )

    def _shutdown_at_exit(self) -> None:
        if self._thread is not None or self._queue:
            self.shutdown()

    # -- the sending thread --------------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="infino-sender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # What this thread logs (urllib3 included) must never become a trace: the same guard
        # as the exporter's own sender threads.
        _EXPORTING.set(True)
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
                    self._settle([r for r in batch if _pending(r)], "invalid", repr(exc))
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
                if self._closing and (not self._queue or now >= (self._deadline or now)):
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
        """The rows of one trace, or None (counted) when it cannot be read."""
        settings = self._settings
        try:
            if isinstance(task, bytes):  # from the spool: the body the id was derived from
                body, built = task, decode_task(task, strict=False)
            else:
                built = _built(task)
                body = encode_task(built)
            trace_id = trace_id_of(body)
            row = trace_row(built, trace_id, settings.agent)
            rows = {settings.dataset: {trace_id: bulk_entry(trace_id, row)}}
            if settings.steps_dataset:
                rows[settings.steps_dataset] = {
                    doc_id: bulk_entry(doc_id, row) for doc_id, row in step_rows(built, trace_id)
                }
        except Exception as exc:
            self._count_drop("invalid", f"a trace could not be read: {exc!r}")
            if ref is not None and self._spool is not None:
                self._spool.ack(ref)
            return None
        return _Record(trace_id, rows, ref)

    def _deliver(self, batch: list[_Record]) -> None:
        """Send every row of ``batch``, retrying as the policy allows; settle each trace."""
        started = self._clock()
        retries = 0
        while True:
            retry_after: float | None = None
            for dataset, chunk in self._chunks(batch):
                outcome = self._send(dataset, chunk)
                if isinstance(outcome, str):  # the keys were refused: nothing else will pass
                    self._settle([r for r in batch if _pending(r)], outcome, self._last_error)
                    return
                if outcome is not None:
                    retry_after = max(retry_after or 0.0, outcome)
            self._finish([r for r in batch if not _pending(r)])
            batch = [r for r in batch if _pending(r)]
            if not batch:
                return
            decision = self._policy.decide(retries, self._clock() - started, retry_after)
            deadline = self._deadline
            if deadline is not None and self._clock() + decision.delay > deadline:
                self._settle(batch, "shutdown", "the shutdown deadline came first")
                return
            if not decision.retry:
                self._settle(batch, decision.reason, self._last_error)
                return
            retries += 1
            with self._cond:
                self._counts["retries"] += 1
                self._cond.wait_for(lambda: self._closing, decision.delay)

    def _chunks(self, batch: list[_Record]) -> Iterator[tuple[str, list[tuple[_Record, str]]]]:
        """Pending rows by dataset, in requests of at most ``max_batch_bytes``."""
        limit = self._settings.max_batch_bytes
        for dataset in self._settings.datasets:
            chunk: list[tuple[_Record, str]] = []
            size = 0
            for record in batch:
                for doc_id, entry in record.rows.get(dataset, {}).items():
                    if chunk and size + len(entry) > limit:
                        yield dataset, chunk
                        chunk, size = [], 0
                    chunk.append((record, doc_id))
                    size += len(entry)
            if chunk:
                yield dataset, chunk

    def _send(self, dataset: str, chunk: list[tuple[_Record, str]]) -> float | str | None:
        """One bulk request: None when answered, the seconds to wait when it is to be
        retried (0.0 without ``Retry-After``), or a drop reason that ends the batch."""
        body = b"".join(record.rows[dataset][doc_id] for record, doc_id in chunk)
        deadline = self._deadline
        if not self._bucket.acquire(lambda: self._deadline):
            return 0.0
        timeout = None if deadline is None else max(0.05, deadline - self._clock())
        with self._cond:
            self._counts["requests"] += 1
        try:
            raw = self._client.bulk(dataset, body, timeout=timeout)
        except InfiniumError as exc:
            self._note_error(exc.message)
            verdict = classify(exc)
            if verdict == "auth":
                return "auth"
            if verdict == "retry":
                wait = retry_after_of(exc)
                if isinstance(exc, RateLimitError):
                    self._bucket.pause(wait if wait is not None else 1.0)
                return wait or 0.0
            reason = f"http_{exc.status_code}"
            for record, doc_id in chunk:
                self._refuse(record, dataset, doc_id, reason)
            return None
        answer = read_bulk_answer([doc_id for _, doc_id in chunk], raw)
        stored = 0
        for record, doc_id in chunk:
            if doc_id in answer.accepted:
                record.rows[dataset].pop(doc_id, None)
                stored += 1
                if dataset == self._settings.dataset:
                    record.trace_stored = True
            elif doc_id in answer.failed:
                self._refuse(record, dataset, doc_id, answer.failed[doc_id])
        with self._cond:
            self._counts["rows_sent"] += stored
        if answer.retry:
            self._note_error(f"Infino refused {len(answer.retry)} row(s) for now")
            return 0.0
        return None

    def _refuse(self, record: _Record, dataset: str, doc_id: str, reason: str) -> None:
        record.rows[dataset].pop(doc_id, None)
        if dataset == self._settings.dataset:
            record.trace_refused = True
        with self._cond:
            self._rejected[reason] += 1
        self._note_error(f"Infino refused a row of {dataset} for good: {reason}")

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


def _pending(record: _Record) -> bool:
    return any(record.rows.values())


def _built(task: object) -> TaskData:
    if isinstance(task, PendingTrace):
        task = task.materialize()
    if isinstance(task, TaskData):
        return task
    return lenient_task(task)[0]


def _encoded(task: object) -> bytes | None:
    """The trace's wire body (what its ``_id`` is derived from), or None."""
    try:
        return encode_task(_built(task))
    except Exception:
        return None
