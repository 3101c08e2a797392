"""The Exporter: admission under the bounds, the buffer, and settling each trace exactly once.

It calls one way: the workers (workers.py) run its take/process loop, delivery.py makes the
attempts through a Destination, durability.py writes and reads spool records, results.py
tells on_result, ledger.py holds the stats' types, lifecycle.py shuts it down at exit and
resets it after fork, client.py is its synchronous API.  Over the size budget as one class:
admission, settling and the spool's accounting change the same counters under one lock
(``stats()`` must balance at every reading), and they are not yet split into a ledger object
of their own.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Final, Protocol

import msgspec

from . import failures, lifecycle, signals, spill
from ._logsetup import setup_logging
from .client import ApiClient
from .convert import Problem, lenient_task
from .credentials import settings_or_off
from .delivery import Deadline, Delivery
from .destination_infinium import InfiniumDestination, encode_trace
from .durability import (
    ADOPT_INTERVAL,
    KEEP_REASONS,
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
    replay_spool,
)
from .errors import InfiniumError, NetworkError
from .guard import EXPORTING
from .ledger import DROP_REASONS, DropWarner, ExporterStats, warn_dropped
from .model import MAX_BODY_BYTES, ApiResponse, BatchResult, PromptContent, TaskData, utc_now_iso
from .official import send_task, wait_for_interpretation
from .queued import (
    BASE_ESTIMATE,
    Item,
    PendingTrace,
    build_quietly,
    fields_estimate,
    struct_estimate,
)
from .redact import Redactor, redacted_record
from .results import OnResult, Reporter, failure_response
from .retry import RetryPolicy
from .sampling import sampled_in
from .sanitise import _object_fields
from .settings import Settings
from .spool import RecordRef, Spool
from .throttle import TokenBucket
from .transport import redacted
from .workers import Workers

__all__ = ["Exporter", "OfficialTask"]

_log = logging.getLogger("infinium_logging.exporter")

#: Memory a trace's steps take per byte of their JSON (dicts, structs, small strings and
#: numbers as Python objects; measured on realistic traces: 2.1 for dicts, 1.6 for TaskData).
_MEMORY_PER_WIRE_BYTE: Final = 2.0
#: What a step is taken to weigh on the wire until encoded traces tell (realistic steps,
#: with an LLM or tool call and previews, weigh about 1 KB).
_INITIAL_STEP_BYTES: Final = 1024.0
#: Distinct rejection messages remembered (each is logged once); a bound against odd servers.
_MAX_REMEMBERED: Final = 256
#: Time allowed past a shutdown deadline for reporting its losses to ``on_result``.
_REPORT_GRACE: Final = 0.25
#: How long shutdown waits for idle sender threads to end (they are daemons: only tidiness).
_JOIN_GRACE: Final = 0.1

#: A sender starts on a trace while another is still starting (taken, not yet through its
#: first request) only once that one has been at it this long: see Exporter._take.
_OVERLAP_AFTER: Final = 0.002


class OfficialTask(Protocol):
    """The official client's ``TaskData`` (or any dataclass of TaskData fields)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


#: Captured traces a caller leaves in the inbox before admitting them itself (see submit).
_INBOX_BATCH: Final = 32


def _prepare_msgspec() -> None:
    """Build msgspec's conversion tables of the trace types now, while the module is imported.

    msgspec builds them on a type's first conversion, and two threads doing that at the same
    time can crash the interpreter (msgspec 0.22 on CPython 3.11: a segfault in about four
    runs out of ten with four threads).  The sender threads, the threads of ``send_batch``
    and a server's threads may all begin with a first conversion; an import runs on one
    thread, and this one builds the tables of every nested type too.
    """
    minimal = {"name": "-", "description": "-", "current_datetime": "2026-01-01T00:00:00Z"}
    msgspec.convert({**minimal, "duration": 0.0}, TaskData)


_prepare_msgspec()

# --- the exporter ---------------------------------------------------------------------------------


class Exporter:
    """Delivers traces to Infinium in the background, one POST per trace.

    ``submit`` takes a trace from any thread in about a microsecond (tens of
    microseconds with a spool) and never blocks, raises or touches the
    network; ``settings.workers`` daemon threads (started on the first
    submit) build, encode and send.  The buffer is bounded by
    ``max_queue_size`` traces and ``max_queue_bytes`` bytes of memory (as
    estimated while a trace waits; its encoded size once a sender has it);
    requests pass a token bucket shared by all threads; failures are retried
    with jittered backoff as the :class:`~infinium_logging.retry.RetryPolicy`
    says.  Against a fast server the senders take turns (a trace is started
    while another is being started only once that one has been at it for
    2 ms): their requests are then mostly Python, and side by side they
    would only contend for the GIL.  ``flush`` and ``shutdown`` never wait
    past their deadline, and interpreter exit calls
    ``shutdown(settings.shutdown_timeout)``.

    Traces captured by :class:`~infinium_logging.InfiniumHandler`,
    :class:`~infinium_logging.InfiniumProcessor` and ``task()``
    (:class:`~infinium_logging.mapping.PendingTrace`) are built on a sender
    thread, from the objects that were logged: mutating those after logging
    them changes the trace (the contract of :class:`logging.handlers.QueueHandler`).

    ``settings=None`` reads the ``INFINIUM_*`` environment, with ``overrides``
    on top (``Exporter(workers=2)``); with settings given, ``overrides``
    replace some of them.  ``on_result(task, response)`` is called on a sender
    thread with the outcome of every trace it settles: on success
    ``response.data["traceId"]`` names the stored trace, on failure
    ``response.success`` is False and ``response.data["reason"]`` is the
    drop reason.  Traces refused by ``submit`` itself (it returned False) are
    not reported there.

    With ``settings.spool_dir`` set, every trace is also written to a durable
    spool before ``submit`` returns, and removed from it once the platform
    accepted it (or refused it for good).  A trace that meets a full queue,
    runs out of retries or has its credentials refused stays in the spool and
    is retried later, backing off while the endpoint keeps failing; what is
    left at shutdown stays there for the next start.  Records that earlier or
    dead processes left for the same agent are adopted and delivered (at
    least once).  A spool that cannot be written costs durability, never a
    trace or an exception: the trace goes on in memory only, counted in
    ``stats().spool_write_errors``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        on_result: OnResult | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = settings_or_off(**overrides)
        elif not isinstance(settings, Settings):
            # Exporter(agent_id, ...) as the official client is made: say how it is done here.
            raise TypeError(
                f"Exporter() takes a Settings or keyword arguments (agent_id=..., "
                f"agent_secret=..., ...), not a {type(settings).__name__} as its first argument"
            )
        elif overrides:
            settings = settings.replace(**overrides)
        if on_result is not None and not callable(on_result):
            raise TypeError("on_result must be callable")
        self._settings = settings
        # Read on every submit: plain attributes are cheaper than going through the settings.
        self._disabled = settings.disabled
        self._max_items = settings.max_queue_size
        self._max_bytes = settings.max_queue_bytes
        self._on_result = on_result
        self._policy = RetryPolicy.from_settings(settings)
        self._redactor = Redactor.from_settings(settings)
        self._sample_rate = settings.sample_rate
        self._client = ApiClient(
            settings, lambda: self._delivery, self._is_finished, redactor=self._redactor
        )
        self._secret = settings.agent_secret
        if settings.enable_logging:
            setup_logging(settings.log_level)
        # The spool outlives a fork (the child writes segments of its own), so it is not
        # part of _init_state.
        self._spool_dir = None if settings.disabled else settings.spool_dir
        #: Whether submit may take its shortest path (no spool to write first, not disabled).
        self._light = self._spool_dir is None and not settings.disabled
        self._spool: Spool | None = None
        self._spool_retry_at = 0.0
        self._init_state()
        lifecycle.track(self)
        if self._spool_dir is not None:
            self._start_with_spool()
        if not settings.disabled:
            signals.install(settings.handle_signals)
            spill.replay_left(settings, replay_spool)

    def _init_state(self) -> None:
        """Fresh locks, an empty buffer and zero counts (at construction and in a forked child)."""
        settings = self._settings
        # Reentrant, as logging's handler locks are: code this thread runs while holding it
        # (a __del__ run by the garbage collector, a signal handler) may log, and submit.
        self._lock = threading.RLock()
        self._lock_owned: Callable[[], bool] = self._lock._is_owned  # type: ignore[attr-defined]
        # Sender threads wait on _work for traces; flush/shutdown wait on _settled_cond.
        self._work = threading.Condition(self._lock)
        self._settled_cond = threading.Condition(self._lock)
        self._start_lock = threading.RLock()
        self._workers: Workers[Item] = Workers(
            settings.workers, self._lock, self._take, self._process_safely, self._worker_exited
        )
        #: The shutdown deadline, and the events that wake sleepers when it is set or met.
        self._until = Deadline()
        #: Waiting traces, oldest first.
        self._queue: collections.deque[Item] = collections.deque()
        #: Traces submitted and not yet admitted to the queue (see submit): captured ones wait
        #: here for a batch; others pass through under the lock.
        self._inbox: collections.deque[object] = collections.deque()
        self._in_flight: set[Item] = set()
        self._closed = False
        self._shutdown_begun = False
        self._idle = 0
        #: A sender was woken for admitted traces and has not run yet (see submit).
        self._waking = False
        #: Threads waiting in shutdown for whatever settles; flushes wait for a target instead.
        self._waiters = 0
        self._flush_targets: list[int] = []
        self._flush_min = -1  # the earliest of them, -1 when none waits
        #: (traces submitted, until when) after a flush gave up waiting shutdown_timeout: see
        #: _stuck_since_flush.
        self._gave_up: tuple[int, float] | None = None
        self._seq = 0
        self._held_bytes = 0
        self._submitted = 0
        self._sent = 0
        self._retries = 0
        self._bytes_sent = 0
        self._dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._coerced: collections.Counter[str] = collections.Counter()
        self._last_error: str | None = None
        self._last_success: float | None = None
        self._auth_until = 0.0
        self._auth_failing = False
        self._rejections_logged: set[str] = set()
        self._reporter = Reporter(self._on_result)
        self._warner = DropWarner()
        # Pacing (see _take): traces being started, when the last was taken, who waits.
        self._starting = 0
        self._last_start = 0.0
        self._pacing = 0
        self._step_bytes = _INITIAL_STEP_BYTES
        #: Memory counted per step of a queued trace (see _estimate).
        self._step_estimate = int(_INITIAL_STEP_BYTES * _MEMORY_PER_WIRE_BYTE)
        #: Memory counted for the rest of a captured trace (learnt like the steps' share).
        self._fixed_estimate = BASE_ESTIMATE
        self._final = False  # shutdown has counted what is left: nothing more is queued
        # Spool state: records held only there, adoption, and the backoff of the backlog.
        self._spooled = 0
        self._adopted = 0
        self._spool_write_errors = 0
        self._sampled_out = 0
        self._spool_error_logged = False
        self._backlog = Backlog(self._policy)
        self._bucket = TokenBucket(
            settings.requests_per_second,
            settings.burst_size,
            enabled=settings.enable_rate_limiting,
        )
        # A new pool too: the parent's connections are the parent's.
        self._delivery = Delivery(
            InfiniumDestination(settings), self._policy, self._bucket, self._until, settings.timeout
        )

    def _reset_after_fork(self) -> None:
        # The child owns none of the parent's traces (they are the parent's to deliver: no
        # duplicates), none of its threads, and no lock a parent thread may have held.
        was_closed = self._closed
        self._init_state()
        if was_closed:
            self._closed = self._shutdown_begun = True
            self._until.finished.set()
        spool = self._spool
        if spool is not None and not spool.closed:
            # The parent's records stay the parent's; the child writes segments of its own.
            spool.after_fork_in_child()
            self._backlog.next_adopt = time.monotonic() + ADOPT_INTERVAL

    def _is_finished(self) -> bool:
        return self._until.finished.is_set()

    def __repr__(self) -> str:
        if self._until.finished.is_set():
            state = "shut down"
        elif self._closed:
            state = "shutting down"
        elif self._workers.started:
            state = "running"
        else:
            state = "idle"
        return (
            f"Exporter(base_url={self._settings.base_url!r}, agent_id={self._settings.agent_id!r}, "
            f"workers={self._settings.workers}, {state})"
        )

    # A shallow copy would share the threads, buffer and counters while looking like a second
    # exporter; a deep copy fails on a lock.  Like a logger, an exporter is a shared resource:
    # copying an object that holds one (a handler, a processor, a config) keeps the one.
    def __copy__(self) -> Exporter:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Exporter:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(
            "an Exporter cannot be pickled (it owns threads and holds the agent secret): "
            "create one in each process"
        )

    # --- public API ---------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in force."""
        return self._settings

    @property
    def closed(self) -> bool:
        """True once ``shutdown`` started: ``submit`` accepts nothing more."""
        return self._closed

    def submit(self, task: TaskData | Mapping[str, Any] | PendingTrace | OfficialTask) -> bool:
        """Queue a trace for delivery; True when accepted.

        Thread-safe, O(1), never blocks on the network and never raises.  A dict
        is read leniently (``to_task(d, strict=False)``) on a sender thread, and
        a :class:`~infinium_logging.mapping.PendingTrace` (what the handler and
        processor capture) is built there too.  False means the trace was not
        accepted; it is then counted in ``stats().dropped`` as ``queue_full``,
        ``closed``, ``disabled`` or ``invalid`` (not a TaskData nor a dict).
        Captured traces (handlers and processors do not look at the answer) are
        admitted in small batches without a spool: one found over the bounds then
        is counted as ``queue_full`` although submit said True; ``stats()`` and
        ``flush()`` admit what waits first, so their counts are exact.

        With a spool, the trace is written to it before this returns (encoded
        here, on the caller's thread: tens of microseconds; a captured trace as
        it was captured, built later by a sender), and a full queue keeps it in
        the spool for later instead of refusing it.
        """
        try:
            if self._light:
                if isinstance(task, PendingTrace):
                    # What a handler or processor captured (it does not look at the answer):
                    # into the inbox, without a lock.  Traces there are admitted (counted,
                    # estimated, queued or refused as ``queue_full``) in batches: by the
                    # caller every _INBOX_BATCH traces, at once when a sender waits for work
                    # or the exporter closes, else by the next sender looking for work.  A
                    # lock and a queue entry per trace cost as much as capturing it.  Once
                    # a sender has been woken, the traces that follow wait for it in the
                    # inbox: it needs the GIL to run, which a thread logging in a loop
                    # holds for up to sys.getswitchinterval(), and admitting and waking
                    # again for each of them would cost more than capturing it.
                    inbox = self._inbox
                    inbox.append(task)
                    if (
                        len(inbox) >= _INBOX_BATCH
                        or (self._idle and not self._waking)
                        or self._closed
                        or not self._workers.started
                    ):
                        return self._admit()
                    return True
                task = _as_trace(task)
                if self._lock_owned():  # re-entered: see _admit
                    self._inbox.append(task)
                    return True
                with self._lock:
                    self._inbox.append(task)  # behind the traces waiting there
                    accepted = self._admit_locked()
                    started = self._workers.started
                if not started:
                    self._start_workers()
                return accepted
            if not isinstance(task, PendingTrace):
                task = _as_trace(task)
            ref: RecordRef | None = None
            body: bytes | None = None
            reason = ""
            if self._disabled:
                reason = "disabled"
                size = 0
            elif self._spool_dir is not None and not self._closed:
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
                    ref, body, size = self._write_ahead(trace, record)
            else:  # with a spool, once closed: refused below
                size = self._estimate(task)
                if size < 0:
                    reason = "invalid"
            park = False
            # ``with``, not acquire() then try: an exception raised by a signal handler
            # between the two (sys.exit on SIGTERM) would leave the lock held, and exit hung.
            with self._lock:
                self._submitted += 1
                if self._closed:
                    reason = "closed"
                if not reason and (
                    len(self._queue) >= self._max_items or self._held_bytes + size > self._max_bytes
                ):
                    if ref is not None:
                        park = True  # it waits in the spool until the queue has room
                        self._spooled += 1
                    else:
                        reason = "queue_full"
                if reason:
                    self._dropped[reason] += 1
                elif not park:
                    # With the body encoded, the task itself is only kept for on_result.
                    held = task if body is None or self._on_result is not None else None
                    self._queue.append(
                        Item(held, self._seq, size, body, ref, ref is not None and body is None)
                    )
                    self._seq += 1
                    self._held_bytes += size
                    if self._idle:
                        self._work.notify()
                started = self._workers.started
            if ref is not None and (reason or park):
                kept = self._refused_with_record(ref, park)
                if not kept or started:
                    return kept
            elif reason:
                return False
            if not started:
                self._start_workers()
            return True
        except Exception:  # the caller is logging: whatever happens here must not reach it
            return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every trace submitted before this call is settled; False on timeout.

        Settled means delivered, dropped and counted, or (with a spool) kept in
        the spool for a later attempt.  Returns within ``timeout`` seconds
        (default ``settings.shutdown_timeout``) even if the server hangs.  On a
        sender thread (e.g. from ``on_result``) it does not wait: it only says
        whether that is already the case.
        """
        limit = self._settings.shutdown_timeout if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + limit
        if not EXPORTING.get() and not self._lock_owned():
            lifecycle.run_flush_hooks()
        with self._lock:
            self._admit_locked()
            target = self._seq
            idle = not self._workers.started and bool(self._queue)
        if idle:  # traces left in the inbox by a submit that could not admit them (see _admit)
            self._start_workers()
        with self._lock:
            if EXPORTING.get():
                return self._settled_before(target)
            # Woken only once the earliest target of the waiting flushes can have been reached
            # (see _mark_settled), not at every trace settled.
            targets = self._flush_targets
            targets.append(target)
            self._flush_min = min(targets)
            try:
                while not self._settled_before(target):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        if limit >= self._settings.shutdown_timeout:
                            self._gave_up = (self._submitted, time.monotonic() + limit)
                        return False
                    self._settled_cond.wait(remaining)
                self._gave_up = None
                return True
            finally:
                targets.remove(target)
                self._flush_min = min(targets) if targets else -1

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop accepting traces, deliver what can be delivered before a deadline, drop the rest.

        The one deadline (``timeout`` seconds from now, default
        ``settings.shutdown_timeout``) covers requests already in flight: no
        retry, throttle wait or request is allowed to outlast it, and what is
        still queued or in flight then is counted as ``shutdown`` loss.  With a
        spool, traces waiting in it are sent too while the deadline allows, and
        what is left then stays there for the next start (counted as
        ``spooled``, not lost).  Idempotent and thread-safe; later submits are
        counted as ``closed``.  Returns True when nothing was lost to the
        deadline.
        """
        if timeout is not None:
            limit = max(0.0, timeout)
        elif self._stuck_since_flush():
            limit = 0.0
        else:
            limit = self._settings.shutdown_timeout
        if not self._begin_shutdown(limit):
            # Someone else is shutting down: wait for them, within our own timeout.
            if not EXPORTING.get():
                self._until.finished.wait(limit)
            return self._until.finished.is_set() and self._dropped["shutdown"] == 0
        if EXPORTING.get():
            # Called from a sender thread (on_result): waiting here would wait for ourselves.
            return False
        return self._finish_shutdown()

    def close(self) -> None:
        """Same as :meth:`shutdown` with the default timeout."""
        self.shutdown()

    def _stuck_since_flush(self) -> bool:
        """Whether a flush gave up after waiting ``shutdown_timeout``, less than that long
        ago, with nothing submitted since: waiting again would wait for the same stuck
        traces (``logging.shutdown()`` flushes every handler, then closes them, then the
        exit hook shuts the exporter down: an exit would otherwise wait three times)."""
        with self._lock:
            self._admit_locked()
            gave_up = self._gave_up
            return (
                gave_up is not None
                and gave_up[0] == self._submitted
                and time.monotonic() < gave_up[1]
            )

    def stats(self) -> ExporterStats:
        """A consistent snapshot of the counters (the ``spool_*`` figures are the spool's own,
        read just before)."""
        spool = self._spool
        # Read before taking our lock: the spool calls into the exporter with its own lock held.
        held = spool.stats() if spool is not None else None
        with self._lock:
            self._admit_locked()
            return ExporterStats(
                submitted=self._submitted,
                sent=self._sent,
                retries=self._retries,
                dropped=dict(self._dropped),
                queued=len(self._queue),
                in_flight=len(self._in_flight),
                buffered_bytes=self._held_bytes,
                bytes_sent=self._bytes_sent,
                coerced=dict(self._coerced),
                last_error=self._last_error,
                last_success_time=self._last_success,
                spooled=self._spooled,
                adopted=self._adopted,
                spool_pending_records=held.pending_records if held is not None else 0,
                spool_pending_bytes=held.pending_bytes if held is not None else 0,
                spool_corrupt=held.corrupt if held is not None else 0,
                spool_write_errors=self._spool_write_errors,
                sampled_out=self._sampled_out,
                redacted=self._redactor.counts(),
            )

    def send(self, task: TaskData | Mapping[str, Any] | PendingTrace | OfficialTask) -> ApiResponse:
        """Send one trace now and return the platform's answer (``data["traceId"]``).

        Synchronous, on the caller's thread, through the same throttle and
        retry policy as the background delivery.  A dict is validated strictly.
        Raises :class:`~infinium_logging.errors.ValidationError` for an invalid
        trace, :class:`~infinium_logging.errors.AuthenticationError` for refused
        credentials, and the last error (``ServerError``, ``RateLimitError``,
        ``NetworkError``...) when the retries run out.  With
        ``INFINIUM_DISABLED`` on, nothing is sent and the answer says so.
        """
        return self._client.send(task)

    def send_batch(
        self,
        tasks: Iterable[TaskData | Mapping[str, Any] | OfficialTask],
        *,
        max_concurrent: int | None = None,
        fail_fast: bool = False,
    ) -> BatchResult:
        """Send up to 100 traces now, concurrently over the pool; results in input order.

        ``max_concurrent`` bounds the requests in flight (default: ``workers``;
        ``1`` sends one after the other, the official synchronous client's way).
        One trace's failure never stops the others: each gets its own
        ApiResponse in ``results`` (``success=False`` and the error's text for a
        failure, also listed in ``errors``) -- unless ``fail_fast=True``: then
        the first failure stops what is not yet sent and raises
        :class:`~infinium_logging.errors.BatchError` with the counts.  More than
        100 traces is a ``ValueError``.  ``BatchError`` is also raised when
        nothing at all could be sent (for example refused credentials).
        """
        return self._client.send_batch(tasks, max_concurrent=max_concurrent, fail_fast=fail_fast)

    def get_interpreted_result(self, trace_id: str) -> ApiResponse:
        """The platform's interpretation of a trace sent earlier.

        ``data["interpretedTraceResult"]`` is None until the platform graded it.
        Same throttle, retries and errors as :meth:`send`.
        """
        return self._client.get_interpreted_result(trace_id)

    def wait_for_interpretation(
        self, trace_id: str, timeout: float = 120.0, poll_interval: float = 3.0
    ) -> ApiResponse:
        """Poll :meth:`get_interpreted_result` until Maestro has interpreted the trace.

        Returns the answer whose ``data["interpretedTraceResult"]`` is set; raises
        :class:`~infinium_logging.errors.InfiniumTimeoutError` after ``timeout``
        seconds, as the official client's ``wait_for_interpretation`` does.
        """
        return wait_for_interpretation(self, trace_id, timeout, poll_interval)

    def send_task(
        self,
        name: str,
        description: str,
        duration: float,
        current_datetime: str | None = None,
        **fields: Any,
    ) -> ApiResponse:
        """The official ``send_task``: build a trace from keyword arguments (strictly, see
        :func:`~infinium_logging.official.create_task_data`) and send it now."""
        return send_task(self, name, description, duration, current_datetime, **fields)

    def get_prompt(
        self,
        prompt_id: str,
        prompt_key: str,
        version: int | str = "latest",
        variables: Mapping[str, str] | None = None,
    ) -> PromptContent:
        """A Prompt Studio prompt; ``variables`` fill its ``{{placeholders}}`` into
        ``rendered_content`` (unknown ones are left as they are)."""
        prompt = self._client.get_prompt(prompt_id, prompt_key, version, variables)
        # The capture side imports this module: linking reaches back to it only here.
        from .tasks import link_prompt  # noqa: PLC0415

        link_prompt(
            {
                "prompt_id": prompt.prompt_id,
                "prompt_name": prompt.name,
                "version": prompt.version,
                "source": "prompt_studio",
                "variables_used": list(variables) if variables else None,
                "fetched_at": utc_now_iso(),
            }
        )
        return prompt

    def __enter__(self) -> Exporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> Exporter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # shutdown() waits on threads: do it off the event loop.
        await asyncio.to_thread(self.shutdown)

    # --- submit side --------------------------------------------------------------------------

    def _admit(self) -> bool:
        """Admit what waits in the inbox and start the senders if they are not running yet;
        whether the last trace was accepted."""
        if self._lock_owned():
            # Logged from code this thread ran while holding the lock (a __del__ run by the
            # garbage collector, a signal handler): admitting now would deadlock, or corrupt
            # the admission under way.  The trace waits in the inbox; the admission under way
            # (its loop runs until the inbox is empty) or the next one takes it.
            return True
        with self._lock:
            accepted = self._admit_locked()
            started = self._workers.started
        if not started:
            self._start_workers()
        return accepted

    def _admit_locked(self) -> bool:
        """Admit the inbox's traces in order (lock held): count each, and queue it or count
        why not; wake senders waiting for work.  Whether the last one was accepted."""
        inbox = self._inbox
        if not inbox:
            return True
        # One loop with the state in locals, not a call per trace: this is most of what a
        # captured trace costs once the handler has built it.
        estimate = self._estimate
        queue = self._queue
        dropped = self._dropped
        room = self._max_items - len(queue)
        held = self._held_bytes
        seq = self._seq
        max_bytes = self._max_bytes
        closed = self._closed
        fixed = self._fixed_estimate
        per_step = self._step_estimate
        taken = 0
        accepted = True
        while inbox:
            task = inbox.popleft()
            taken += 1
            try:
                if isinstance(task, PendingTrace):  # nearly every trace that comes this way
                    size = task.estimate(fixed, per_step)
                else:
                    size = estimate(task)
            except Exception:  # a trace of the application's own whose estimate fails
                size = -1
            if size < 0:
                dropped["invalid"] += 1
                accepted = False
            elif closed:
                dropped["closed"] += 1
                accepted = False
            elif room <= 0 or held + size > max_bytes:
                dropped["queue_full"] += 1
                accepted = False
            else:
                queue.append(Item(task, seq, size))
                seq += 1
                held += size
                room -= 1
                accepted = True
        added = seq - self._seq
        self._submitted += taken
        self._held_bytes = held
        self._seq = seq
        if added and self._idle:
            self._work.notify(added)
            self._waking = True
        return accepted

    def _estimate(self, task: object) -> int:
        """A cheap guess of the memory a queued trace holds (a few attribute reads), or -1 if
        it is not a trace (never raises).

        Encoding on the caller's thread would cost as much as the logging call
        itself, so the byte bound counts this estimate while the trace waits;
        a sender thread replaces it with the size of the encoded body once it
        has one.  Summaries count once (a character is a byte in memory as on
        the wire, for the usual ASCII); each step counts what a step of the
        traces encoded so far takes on the wire, times
        :data:`_MEMORY_PER_WIRE_BYTE`: dicts, structs and small objects take
        about twice the room of their JSON.
        """
        fixed = self._fixed_estimate
        per_step = self._step_estimate
        try:
            if type(task) is dict:
                return fields_estimate(task, fixed, per_step)
            if isinstance(task, PendingTrace):
                return task.estimate(fixed, per_step)
            if isinstance(task, TaskData):
                return struct_estimate(task, per_step)
            if isinstance(task, Mapping):
                return fields_estimate(task, fixed, per_step)
        except Exception:  # a mapping whose get() fails, say: not a trace
            return -1
        return -1

    # --- the spool ------------------------------------------------------------------------------

    def _start_with_spool(self) -> None:
        """At construction: when the agent's spool directory exists, open it, and start the
        senders at once if it holds segments (an earlier run's records are replayed now)."""
        settings = self._settings
        assert settings.spool_dir is not None
        root = os.path.join(
            os.path.abspath(os.path.expanduser(settings.spool_dir)), settings.agent_id
        )
        try:
            names = os.listdir(root)
        except OSError:
            return  # no spool yet: the first submit creates it
        if self._open_spool() is not None and any(n.endswith(".log") for n in names):
            self._start_workers()

    def _open_spool(self) -> Spool | None:
        spool = self._spool
        if spool is not None or time.monotonic() < self._spool_retry_at:
            return spool
        settings = self._settings
        assert settings.spool_dir is not None
        with self._start_lock:
            if self._spool is None and not self._closed:
                try:
                    # Adoption reads whole files: a sender thread does it, not the caller.
                    self._spool = Spool(
                        settings.spool_dir,
                        settings.agent_id,
                        max_bytes=settings.spool_max_bytes,
                        fsync=settings.spool_fsync,
                        adopt=False,
                        listener=self._spool_event,
                        kinds=KINDS,
                    )
                except Exception as exc:
                    self._spool_retry_at = time.monotonic() + SPOOL_RETRY
                    self._spool_trouble(exc)
            return self._spool

    def _write_ahead(
        self, task: TaskData | Mapping[str, Any] | PendingTrace, captured: bytes | None = None
    ) -> tuple[RecordRef | None, bytes | None, int]:
        """Write a submitted trace to the spool: ``(record, encoded body or None, size)``.

        ``captured`` is the record of a captured trace (see :func:`captured_record`).
        The size is exact for a TaskData and the record's size otherwise (a
        better guess than :meth:`_estimate`).  Never raises: a trace that
        cannot be written goes on in memory only.
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
            return None, body, len(body) if body is not None else max(0, self._estimate(task))
        spool = self._spool or self._open_spool()
        error: Exception | None = None
        if spool is not None:
            try:
                return spool.append(payload, kind), body, size
            except Exception as exc:  # a full disk, lost permissions, a closed spool
                error = exc
        with self._lock:
            if not self._closed:
                self._spool_write_errors += 1
        if error is not None and not self._closed:
            self._spool_trouble(error)
        return None, body, size

    def _spool_trouble(self, error: BaseException) -> None:
        """Say once why the spool cannot be used (each trace it costs is counted)."""
        with self._lock:
            first = not self._spool_error_logged
            self._spool_error_logged = True
        if first:
            _log.warning(
                "infinium_logging cannot write to the spool in %s (%s): traces are kept in "
                "memory only while it fails (counted in stats().spool_write_errors)",
                self._spool_dir,
                self._clean(f"{type(error).__name__}: {error}"),
            )

    def _refused_with_record(self, ref: RecordRef, park: bool) -> bool:
        """A written trace the queue did not take: keep it in the spool (``park``) or settle it."""
        spool = self._spool
        if not park:
            if spool is not None:
                quietly(spool.ack, ref)
            return False
        if spool is not None and quietly(spool.release, ref):
            return True
        with self._lock:
            self._spooled -= 1
            self._dropped["spool_full"] += 1
        return False

    def _spool_event(self, event: str, count: int) -> None:
        """The spool's listener (called with the spool's lock held: must not call the spool)."""
        with self._lock:
            if event == "adopted":
                self._adopted += count
                self._spooled += count
                if self._idle:
                    self._work.notify()
            elif event in ("evicted", "unreadable"):
                self._spooled -= count
                self._dropped["spool_full" if event == "evicted" else "invalid"] += count

    def _spool_chore(self, now: float) -> str:
        """Spool work a sender thread should do now, outside the lock (lock held)."""
        if self._spool is None or self._final:
            return ""
        return self._backlog.chore(
            now,
            spooled=self._spooled,
            closed=self._closed,
            room=len(self._queue) <= self._max_items // 2,
            deadline=self._until.at,
        )

    def _backlog_due_by(self, limit: float) -> bool:
        """Whether spooled records may be taken up before ``limit`` (lock held)."""
        return (
            self._spool is not None
            and not self._final
            and self._backlog.due_by(limit, self._spooled)
        )

    def _idle_wait(self, now: float) -> float | None:
        """How long an idle sender may sleep before spool work is due (lock held)."""
        if self._spool is None or self._final:
            return None
        return self._backlog.idle_wait(now, spooled=self._spooled, closed=self._closed)

    def _do_chore(self, chore: str) -> None:
        spool = self._spool
        assert spool is not None
        if chore == "adopt":
            try:
                spool.adopt()
            except Exception:
                _log.debug("spool adoption failed", exc_info=True)
            finally:
                with self._lock:
                    self._backlog.adopting = False
            return
        with self._lock:
            probing = self._backlog.failures > 0
            room = max(1, min(REFILL_BATCH, self._max_items - len(self._queue)))
            byte_room = max(1, self._max_bytes - self._held_bytes)
        taken: list[tuple[RecordRef, int, bytes]] = []
        try:
            # While the endpoint keeps failing, one record probes it per backoff period.
            taken = spool.take_backlog(1 if probing else room, byte_room)
        except Exception:
            _log.debug("reading the spool's backlog failed", exc_info=True)
        items = [backlog_item(ref, kind, payload) for ref, kind, payload in taken]
        with self._lock:
            self._backlog.refilled(probing, len(items))
            if self._final:
                return  # shutdown already counted these as left in the spool, where they are
            self._spooled -= len(items)
            for item in items:
                item.seq = self._seq
                self._seq += 1
                self._held_bytes += item.size
                self._queue.append(item)
            if self._idle:
                self._work.notify(max(1, len(items)))
            if self._waiters:
                self._settled_cond.notify_all()

    def _learn_step_size(self, task: TaskData, size: int) -> None:
        """Learn from a trace just encoded (``size`` bytes) what a step weighs, and what the
        part of a trace that submit does not count field by field weighs."""
        summaries = len(task.input_summary or "") + len(task.output_summary or "")
        rest = BASE_ESTIMATE + len(task.name) + len(task.description)
        steps = task.steps
        # Moving averages: unlocked, since a lost update only makes one estimate a bit off.
        if steps:
            per_step = (size - rest - summaries) / len(steps)
            per_step = min(max(per_step, 32.0), float(MAX_BODY_BYTES))
            self._step_bytes = step_bytes = 0.9 * self._step_bytes + 0.1 * per_step
            self._step_estimate = int(step_bytes * _MEMORY_PER_WIRE_BYTE)
        else:
            rest = max(rest, size - summaries)
        self._fixed_estimate = int(0.9 * self._fixed_estimate + 0.1 * min(rest, MAX_BODY_BYTES))

    def _start_workers(self) -> None:
        if self._workers.start(lambda: self._closed):
            lifecycle.ensure_exit_hooks()

    # --- sender threads -----------------------------------------------------------------------

    def _process_safely(self, item: Item) -> None:
        """Process one trace; a bug costs that trace (counted invalid), not the sender."""
        try:
            self._process(item)
        except Exception as exc:
            if self._settle(item, "invalid", f"internal error: {exc!r}"):
                _log.exception("infinium_logging could not process a trace")
        self._warn_drops()

    def _worker_exited(self) -> None:
        # Called with the lock held.
        if self._waiters:
            self._settled_cond.notify_all()

    def _take(self) -> Item | None:
        """The next trace to send; spool chores (adoption, taking up the backlog) on the way."""
        while True:
            with self._lock:
                while True:
                    self._admit_locked()
                    now = time.monotonic()
                    chore = self._spool_chore(now)
                    if chore:
                        break
                    if self._queue:
                        # Pacing: a trace is started while another is still being started
                        # only once that one has been at it for _OVERLAP_AFTER.  Against a
                        # fast server the requests are short and mostly Python (urllib3 and
                        # http.client), so senders running them side by side only fight
                        # over the GIL (each GIL hand-off a context switch): one at a time
                        # delivers more.  Against a slow one they wait on the network, so
                        # every worker is soon busy, as without pacing.  Not after close:
                        # the shutdown deadline wants everything out at once.
                        since = now - self._last_start
                        if self._starting and since < _OVERLAP_AFTER and not self._closed:
                            self._pacing += 1
                            try:
                                self._work.wait(_OVERLAP_AFTER - since)
                            finally:
                                self._pacing -= 1
                                self._waking = False  # whoever was woken is running
                            continue
                        item = self._queue.popleft()
                        self._in_flight.add(item)
                        item.starting = True
                        self._starting += 1
                        self._last_start = now
                        return item
                    if self._closed and not self._backlog_due_by(self._until.at or now):
                        return None
                    self._idle += 1
                    try:
                        # A caller that saw no sender idle left its trace in the inbox for
                        # us: look once more now that we count as idle (callers check after
                        # adding to it), so that no trace waits there with every sender asleep.
                        if self._inbox:
                            continue
                        self._work.wait(self._idle_wait(now))
                    finally:
                        self._idle -= 1
                        self._waking = False
            self._do_chore(chore)

    def _process(self, item: Item) -> None:
        if item.body is not None:  # encoded on the caller's thread, or a spooled wire body
            self._deliver(item, item.body)
            return
        task = item.task
        if isinstance(task, PendingTrace):  # captured by a handler or processor: build it now
            try:
                task = task.materialize()
            except Exception as exc:
                self._settle(item, "invalid", f"could not be built: {exc!r}")
                return
            item.task = task
        body: bytes | None = None
        if not isinstance(task, TaskData):
            problems: list[Problem] = []
            # A dict that needs no fixing comes back with its body: no second encoding.
            task, body = lenient_task(task, problems)
            if problems:
                with self._lock:
                    for problem in problems:
                        self._coerced[problem.action] += 1
                if any(p.path == "" and p.action == "replaced" for p in problems):
                    self._settle(item, "invalid", "could not be read as a trace")
                    return
            item.task = task
        try:
            if body is None or len(body) > MAX_BODY_BYTES:
                body = encode_trace(task)
            redacted_task = self._redactor.encoded(task, body)
            if redacted_task is not task:
                item.task = task = redacted_task
                body = encode_trace(task)
        except Exception as exc:
            self._settle(item, "invalid", f"could not be encoded: {exc}")
            return
        self._learn_step_size(task, len(body))
        with self._lock:
            if item.settled:
                return
            self._held_bytes += len(body) - item.size
            item.size = len(body)
        if item.loose:
            item.body = body  # for _keep, should the trace stay in the spool
        self._deliver(item, body)

    def _deliver(self, item: Item, body: bytes) -> None:
        if self._sample_rate < 1.0 and not sampled_in(body, self._sample_rate):
            self._sampled_away(item)
            return

        def given_up() -> bool:
            return item.settled

        def on_retry(error: InfiniumError) -> bool:
            if isinstance(error, NetworkError):
                self._explain("network", error)
            with self._lock:
                # Waiting to retry: let another sender start a trace meanwhile.
                self._started_request(item, waking=True)
                if item.settled:
                    return False
                self._retries += 1
                self._last_error = self._describe(error)
            return True

        outcome = self._delivery.deliver(
            body, given_up=given_up, on_retry=on_retry, not_before=self._credentials_at
        )
        reason, error = outcome.reason, outcome.error
        if reason == "sent":
            assert outcome.response is not None
            self._delivered(item, outcome.response, len(body))
        elif reason == "abandoned":
            return  # given up at the shutdown deadline while this was under way
        elif error is None or reason == "shutdown":
            self._settle(item, reason)
        elif reason == "auth":
            self._auth_failed(item, error)
        elif reason == "rejected":
            self._rejected(item, error)
        else:
            self._settle(item, reason, self._describe(error))
            self._explain(reason, error)

    def _credentials_at(self) -> float:
        """When sending may resume after refused credentials (0.0: now)."""
        return self._auth_until

    def _auth_failed(self, item: Item, error: InfiniumError) -> None:
        with self._lock:
            first = not self._auth_failing
            self._auth_failing = True
            self._auth_until = time.monotonic() + self._settings.auth_backoff
        self._settle(item, "auth", self._describe(error))
        if first:
            fate = (
                "kept in the spool for later"
                if self._spool is not None
                else "dropped (counted as 'auth')"
            )
            fate += f"; sending pauses for {self._settings.auth_backoff:g} s before each new try"
            failures.tell(self, "auth", error, self._settings, fate, self._clean)

    def _rejected(self, item: Item, error: InfiniumError) -> None:
        said = str(error.details.get("server_message") or error.message)
        self._settle(item, "rejected", self._describe(error))
        key = f"{error.status_code}:{said}"
        with self._lock:
            new = key not in self._rejections_logged
            if new and len(self._rejections_logged) < _MAX_REMEMBERED:
                self._rejections_logged.add(key)
        if new:
            explained = failures.explain("rejected", error, self._settings, "")
            failures.say(_log, logging.WARNING, self._clean(explained))

    def _delivered(self, item: Item, response: ApiResponse, size: int) -> None:
        self._ack(item)
        with self._lock:
            if item.settled:  # given up at the shutdown deadline while the request was out
                return
            self._mark_settled(item)
            self._sent += 1
            self._bytes_sent += size
            self._last_success = time.time()
            recovered = self._auth_failing
            self._auth_failing = False
            # The endpoint answers again: take the spool's backlog up at once.
            if self._backlog.recovered() and self._idle and self._spooled:
                self._work.notify()
        if recovered and not self._closed:
            _log.info("Infinium accepted the agent credentials again; sending resumed")
        self._reporter.report(item, response)

    def _sampled_away(self, item: Item) -> None:
        """Settle a trace ``sample_rate`` leaves out: counted apart from the losses."""
        self._ack(item)
        with self._lock:
            if item.settled:
                return
            self._mark_settled(item)
            self._sampled_out += 1
        self._reporter.report(item, failure_response("sampled_out", None))

    def _settle(self, item: Item, reason: str, error: str | None = None) -> bool:
        """Count a trace as lost for ``reason`` unless it is settled already; tell on_result.

        A trace with a spool record is kept there instead when ``reason`` is
        retryable later (:data:`KEEP_REASONS`); one dropped for good is
        settled in the spool too.
        """
        ref = item.ref
        spool = self._spool
        if ref is not None and spool is not None and reason in KEEP_REASONS:
            return self._keep(item, ref, spool, reason, error)
        if reason == "shutdown" and ref is None and spill.active(self._settings):
            return self._spill(item)
        self._ack(item)
        with self._lock:
            if item.settled:
                return False
            self._mark_settled(item)
            self._dropped[reason] += 1
            if error is not None:
                self._last_error = error
        self._reporter.report(item, failure_response(reason, error))
        return True

    def _spill_record(self, item: Item) -> tuple[int, bytes] | None:
        return spill.record_of(item, self._redactor)

    def _spill(self, item: Item) -> bool:
        """At exit, keep a trace the deadline caught on disk (see :mod:`.spill`)."""
        with self._lock:
            if item.settled:
                return False
            self._mark_settled(item)
            self._spooled += 1  # counted first: no reading sees it nowhere
        if spill.keep(self._settings, [item], self._spill_record):
            with self._lock:
                self._spooled -= 1
                self._dropped["shutdown"] += 1
            self._reporter.report(item, failure_response("shutdown", None))
        return True

    def _spill_lost(self, lost: list[Item]) -> list[Item]:
        """At exit, keep on disk what shutdown counted as lost (see :mod:`.spill`); what could
        not be kept."""
        left = spill.keep(self._settings, lost, self._spill_record)
        with self._lock:
            self._dropped["shutdown"] -= len(lost) - len(left)
            self._spooled += len(lost) - len(left)
        return left

    def _ack(self, item: Item) -> None:
        """Settle a trace's spool record, before the trace counts as settled: whoever sees it
        settled (``flush()``, ``stats()``) must find its record settled too.  (Not under the
        lock: the spool calls its listener, which takes the lock, with its own lock held.)"""
        ref = item.ref
        spool = self._spool
        if ref is not None and spool is not None and not item.settled:
            quietly(spool.ack, ref)

    def _keep(
        self, item: Item, ref: RecordRef, spool: Spool, reason: str, error: str | None
    ) -> bool:
        """Leave a trace in the spool for a later attempt (or the next start, at shutdown)."""
        with self._lock:
            if item.settled:
                return False
            self._mark_settled(item)
            # Counted before the spool takes it back, so that no reading sees it twice.
            self._spooled += 1
            if error is not None:
                self._last_error = error
            if reason != "shutdown":
                self._backlog.failed()
        if item.loose and item.body is not None:
            # Keep the exact wire body rather than the submitted dict: read back later, it is
            # sent as it is, without coercing (and counting the fixes) a second time.
            exact = quietly(spool.append, item.body, KIND_BODY)
            if exact is not None:
                quietly(spool.ack, ref)
                ref = exact
        # At the shutdown deadline it is not handed back: this process will not try it again.
        kept = quietly(spool.holds if reason == "shutdown" else spool.release, ref)
        if kept:
            return True
        with self._lock:
            self._spooled -= 1
            self._dropped["spool_full"] += 1
        self._reporter.report(item, failure_response("spool_full", error))
        return True

    def _started_request(self, item: Item, *, waking: bool) -> None:
        """``item`` is through its first request (or settled without one): another trace may
        be started (lock held).  ``waking`` when this sender will not take one itself soon."""
        if item.starting:
            item.starting = False
            self._starting -= 1
            if waking and self._pacing and self._queue:
                self._work.notify()

    def _mark_settled(self, item: Item) -> None:
        # Called with the lock held.
        self._started_request(item, waking=False)
        item.settled = True
        self._in_flight.discard(item)
        self._held_bytes -= item.size
        if self._waiters:
            self._settled_cond.notify_all()
        elif (
            0 <= item.seq < self._flush_min
            and self._flush_targets
            and self._settled_before(self._flush_min)
        ):
            # Waking a flush for every trace settled costs the senders the lock and the GIL
            # thousands of times a second; it can only return once its target is reached.
            self._settled_cond.notify_all()

    def _warn_drops(self) -> None:
        if self._closed or not self._warner.due():
            # When closed, shutdown reports what is left: logging now could meet logging.shutdown().
            return
        with self._lock:
            news = self._warner.news(self._dropped)
        if news:
            warn_dropped(news, self._last_error)

    def _explain(self, kind: str, error: InfiniumError) -> None:
        fate = "kept in the spool for later" if self._spool is not None else "dropped"
        failures.tell(self, kind, error, self._settings, fate, self._clean)

    def _describe(self, error: InfiniumError) -> str:
        return self._clean(f"{type(error).__name__}: {error.message}")

    def _clean(self, text: str) -> str:
        return redacted(text, (self._secret,))

    def _settled_before(self, target: int) -> bool:
        # Called with the lock held. Traces leave the queue in order, so the oldest unsettled
        # one is the queue's head or one of the (few) traces in flight.
        if self._queue and self._queue[0].seq < target:
            return False
        return all(item.seq >= target for item in self._in_flight)

    # --- shutdown ---------------------------------------------------------------------------------

    def _exit_pending(self) -> bool:
        """Whether exit must shut this down (see :mod:`~infinium_logging.lifecycle`)."""
        return not self._shutdown_begun and bool(
            self._workers.started or self._queue or self._inbox
        )

    def _begin_exit(self) -> bool:
        """Begin the shutdown at exit, within ``shutdown_timeout`` (none after a stuck flush)."""
        return self._begin_shutdown(
            0.0 if self._stuck_since_flush() else self._settings.shutdown_timeout
        )

    def _begin_shutdown(self, timeout: float) -> bool:
        """Close the door and set the deadline; False if a shutdown had already begun."""
        with self._lock:
            if self._shutdown_begun:
                return False
            self._shutdown_begun = True
            self._admit_locked()  # submitted before the door closed
            self._closed = True
            self._until.at = time.monotonic() + timeout
            self._work.notify_all()
        self._until.stopping.set()
        self._bucket.wake()
        return True

    def _finish_shutdown(self) -> bool:
        """Wait for the senders until the deadline, then count what is left as ``shutdown``
        (with a spool: leave it there for the next start)."""
        deadline = self._until.at if self._until.at is not None else time.monotonic()
        token = EXPORTING.set(True)
        spool = self._spool
        try:
            if not self._workers.alive and (self._queue or self._inbox):
                # No sender runs (none could start at exit, or none was needed): send what
                # waits from this thread, as a sender would, until the deadline.
                self._workers.run_here()
            with self._lock:
                self._admit_locked()  # added while the door closed: counted as closed
                self._waiters += 1
                try:
                    while True:
                        now = time.monotonic()
                        remaining = deadline - now
                        if remaining <= 0:
                            break
                        if self._queue or self._in_flight or self._backlog.refilling:
                            wait = remaining  # every settle and refill notifies
                        elif self._workers.alive and self._backlog_due_by(deadline):
                            # Spooled records a sender may still take up before the deadline.
                            wait = min(remaining, max(0.01, self._backlog.at - now))
                        else:
                            break
                        self._settled_cond.wait(wait)
                finally:
                    self._waiters -= 1
                self._final = True
                stuck = bool(self._in_flight)
                left = list(self._queue)
                left += sorted(self._in_flight, key=lambda i: i.seq)
                self._queue.clear()
                lost: list[Item] = []
                kept: list[Item] = []
                for item in left:
                    self._mark_settled(item)
                    if item.ref is not None and spool is not None:
                        self._spooled += 1  # checked below, outside the lock
                        kept.append(item)
                    else:
                        self._dropped["shutdown"] += 1
                        lost.append(item)
                self._work.notify_all()
                self._settled_cond.notify_all()  # flushes waiting: everything is settled now
            gone = [item for item in kept if not quietly(spool.holds, item.ref)] if spool else []
            lost = self._spill_lost(lost)
            with self._lock:
                if gone:
                    self._spooled -= len(gone)
                    self._dropped["spool_full"] += len(gone)
                news = self._warner.news(self._dropped, force=True)
                spooled = self._spooled
            self._until.finished.set()
            self._bucket.wake()
            self._reporter.report_lost(lost + gone, deadline + _REPORT_GRACE)
            if not stuck:
                # Idle senders exit at once; a sender stuck in a request is a daemon thread
                # and is left behind (its late answer is ignored: the trace is settled).
                self._workers.join(_JOIN_GRACE)
            self._delivery.destination.close()
            if spool is not None:
                # Unlocks the segments: the next start (or another process) adopts what is left.
                quietly(spool.close)
            if news:
                warn_dropped(news, self._last_error)
            spill.close(self._settings)
            if spooled and spool is not None:
                _log.info(
                    "infinium_logging left %d trace(s) in the spool (%s) for the next start",
                    spooled,
                    spool.root,
                )
            return self._dropped["shutdown"] == 0
        finally:
            EXPORTING.reset(token)


def _as_trace(task: Any) -> Any:
    """``task``, or the fields of the official client's TaskData (a dataclass) as a dict,
    read as a dict of TaskData fields is (its nested dataclasses included)."""
    if type(task) is dict or isinstance(task, (TaskData, Mapping)):
        return task
    if dataclasses.is_dataclass(task) and not isinstance(task, type):
        return _object_fields(task)
    return task
