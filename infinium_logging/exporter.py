"""The Exporter: the façade that wires admission, the ledger, the workers and delivery.

It calls one way: admission.py takes submitted traces into the ledger's queue (ledger.py
keeps every count), workers.py runs the sender threads on its take loop, sending.py builds,
encodes and delivers each trace through delivery.py and a Destination and settles it once,
writeahead.py keeps the spool, results.py tells on_result, lifecycle.py shuts it down at
exit and resets it after fork, client.py is its synchronous API.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Final, Protocol

import msgspec

from . import lifecycle, signals, spill
from ._logsetup import setup_logging
from .admission import INBOX_BATCH, Admission, as_trace
from .client import ApiClient
from .credentials import settings_or_off
from .delivery import Deadline, Delivery
from .destination_infinium import InfiniumDestination
from .durability import captured_record, quietly, replay_spool
from .guard import EXPORTING
from .ledger import ExporterStats, Ledger, warn_dropped
from .model import ApiResponse, BatchResult, PromptContent, TaskData, utc_now_iso
from .official import send_task, wait_for_interpretation
from .queued import Item, PendingTrace, build_quietly
from .results import OnResult, Reporter
from .retry import RetryPolicy
from .sending import Sender
from .settings import Settings
from .spool import RecordRef
from .throttle import TokenBucket
from .transport import redacted
from .workers import Pacing, Workers
from .writeahead import WriteAhead

__all__ = ["Exporter", "OfficialTask"]

_log = logging.getLogger("infinium_logging.exporter")

#: Time allowed past a shutdown deadline for reporting its losses to ``on_result``.
_REPORT_GRACE: Final = 0.25
#: How long shutdown waits for idle sender threads to end (they are daemons: only tidiness).
_JOIN_GRACE: Final = 0.1


class OfficialTask(Protocol):
    """The official client's ``TaskData`` (or any dataclass of TaskData fields)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


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
        self._disabled = settings.disabled
        self._on_result = on_result
        self._policy = RetryPolicy.from_settings(settings)
        self._client = ApiClient(settings, lambda: self._delivery, self._is_finished)
        self._secret = settings.agent_secret
        if settings.enable_logging:
            setup_logging(settings.log_level)
        # The spool outlives a fork (the child writes segments of its own), so it is not
        # part of _init_state.
        spool_dir = None if settings.disabled else settings.spool_dir
        self._durable: WriteAhead | None = None
        if spool_dir is not None:
            self._durable = WriteAhead(settings, self._policy, lambda: self._closed, self._clean)
        #: Whether submit may take its shortest path (no spool to write first, not disabled).
        self._light = spool_dir is None and not settings.disabled
        self._init_state()
        lifecycle.track(self)
        if self._durable is not None and self._durable.start():
            self._start_workers()
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
        self._ledger = ledger = Ledger(self._lock)
        self._admission = Admission(ledger, settings.max_queue_size, settings.max_queue_bytes)
        # Read on every submit: plain attributes are cheaper than going through the others.
        self._inbox = self._admission.inbox
        self._queue = ledger.queue
        # Sender threads wait on _work for traces; flush/shutdown wait on the ledger's.
        self._work = threading.Condition(self._lock)
        #: The shutdown deadline, and the events that wake sleepers when it is set or met.
        self._until = Deadline()
        self._closed = False
        self._shutdown_begun = False
        self._idle = 0
        #: A sender was woken for admitted traces and has not run yet (see submit).
        self._waking = False
        self._reporter = Reporter(self._on_result)
        self._pacing = Pacing(self._work, self._queue)
        if self._durable is not None:
            self._durable.reset(self._admission, self._wake, self._reporter)
        self._bucket = TokenBucket(
            settings.requests_per_second,
            settings.burst_size,
            enabled=settings.enable_rate_limiting,
        )
        # A new pool too: the parent's connections are the parent's.
        self._delivery = Delivery(
            InfiniumDestination(settings), self._policy, self._bucket, self._until, settings.timeout
        )
        self._sender = Sender(
            settings,
            self._admission,
            self._delivery,
            pacing=self._pacing,
            reporter=self._reporter,
            durable=self._durable,
            closed=lambda: self._closed,
            clean=self._clean,
            owner=self,
        )
        self._workers: Workers[Item] = Workers(
            settings.workers, self._lock, self._take, self._sender.process, self._worker_exited
        )

    def _reset_after_fork(self) -> None:
        # The child owns none of the parent's traces (they are the parent's to deliver: no
        # duplicates), none of its threads, and no lock a parent thread may have held.
        was_closed = self._closed
        self._init_state()
        if was_closed:
            self._closed = self._shutdown_begun = True
            self._until.finished.set()
        if self._durable is not None:
            self._durable.after_fork()

    def _wake(self, count: int) -> None:
        """Wake up to ``count`` idle senders (lock held)."""
        if self._idle:
            self._work.notify(count)

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
            if not self._light:
                return self._submit_durably(task)
            if isinstance(task, PendingTrace):
                # What a handler or processor captured (it does not look at the answer):
                # into the inbox, without a lock.  Traces there are admitted (counted,
                # estimated, queued or refused as ``queue_full``) in batches: by the
                # caller every INBOX_BATCH traces, at once when a sender waits for work
                # or the exporter closes, else by the next sender looking for work.  A
                # lock and a queue entry per trace cost as much as capturing it.  Once
                # a sender has been woken, the traces that follow wait for it in the
                # inbox: it needs the GIL to run, which a thread logging in a loop
                # holds for up to sys.getswitchinterval(), and admitting and waking
                # again for each of them would cost more than capturing it.
                inbox = self._inbox
                inbox.append(task)
                if (
                    len(inbox) >= INBOX_BATCH
                    or (self._idle and not self._waking)
                    or self._closed
                    or not self._workers.started
                ):
                    return self._admit()
                return True
            task = as_trace(task)
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
        except Exception:  # the caller is logging: whatever happens here must not reach it
            return False

    def _submit_durably(self, task: object) -> bool:
        """``submit`` with a spool to write first (or disabled)."""
        if not isinstance(task, PendingTrace):
            task = as_trace(task)
        durable = self._durable
        ref: RecordRef | None = None
        body: bytes | None = None
        reason = ""
        if self._disabled:
            reason = "disabled"
            size = 0
        elif durable is not None and not self._closed:
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
                ref, body, size = durable.write(trace, record)
        else:  # with a spool, once closed: refused below
            size = self._admission.estimate(task)
            if size < 0:
                reason = "invalid"
        park = False
        ledger = self._ledger
        # ``with``, not acquire() then try: an exception raised by a signal handler
        # between the two (sys.exit on SIGTERM) would leave the lock held, and exit hung.
        with self._lock:
            ledger.submitted += 1
            if self._closed:
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
                held = task if body is None or self._on_result is not None else None
                ledger.enqueue_locked(
                    Item(held, 0, size, body, ref, ref is not None and body is None)
                )
                self._wake(1)
            started = self._workers.started
        if ref is not None and (reason or park):
            assert durable is not None
            kept = durable.refused(ref, park)
            if not kept or started:
                return kept
        elif reason:
            return False
        if not started:
            self._start_workers()
        return True

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
        ledger = self._ledger
        with self._lock:
            self._admit_locked()
            target = ledger.seq
            idle = not self._workers.started and bool(self._queue)
        if idle:  # traces left in the inbox by a submit that could not admit them (see _admit)
            self._start_workers()
        with self._lock:
            if EXPORTING.get():
                return ledger.settled_before_locked(target)
            patient = limit >= self._settings.shutdown_timeout
            return ledger.wait_flushed(target, deadline, limit if patient else None)

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
            return self._until.finished.is_set() and self._ledger.dropped["shutdown"] == 0
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
            return self._ledger.stuck_since_flush_locked()

    def stats(self) -> ExporterStats:
        """A consistent snapshot of the counters (the ``spool_*`` figures are the spool's own,
        read just before)."""
        spool = self._durable.spool if self._durable is not None else None
        # Read before taking our lock: the spool calls into the exporter with its own lock held.
        held = spool.stats() if spool is not None else None
        with self._lock:
            self._admit_locked()
            if held is None:
                return self._ledger.snapshot_locked()
            return self._ledger.snapshot_locked(
                held.pending_records, held.pending_bytes, held.corrupt
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
        """Admit the inbox's traces in order (lock held) and wake senders waiting for work;
        whether the last one was accepted."""
        if not self._inbox:
            return True
        accepted, added = self._admission.admit_locked(self._closed)
        if added and self._idle:
            self._work.notify(added)
            self._waking = True
        return accepted

    def _start_workers(self) -> None:
        if self._workers.start(lambda: self._closed):
            lifecycle.ensure_exit_hooks()

    # --- sender threads -----------------------------------------------------------------------

    def _worker_exited(self) -> None:
        # Called with the lock held.
        if self._ledger.waiters:
            self._ledger.settled_cond.notify_all()

    def _take(self) -> Item | None:
        """The next trace to send; spool chores (adoption, taking up the backlog) on the way."""
        durable = self._durable
        pacing = self._pacing
        while True:
            with self._lock:
                while True:
                    self._admit_locked()
                    now = time.monotonic()
                    chore = durable.chore(now, self._until.at) if durable is not None else ""
                    if chore:
                        break
                    if self._queue:
                        # Not paced after close: the shutdown deadline wants everything out.
                        if not self._closed and pacing.wait(now):
                            self._waking = False  # whoever was woken is running
                            continue
                        item = self._queue.popleft()
                        self._ledger.in_flight.add(item)
                        pacing.started(item, now)
                        return item
                    if self._closed and not (
                        durable is not None and durable.due_by(self._until.at or now)
                    ):
                        return None
                    self._idle += 1
                    try:
                        # A caller that saw no sender idle left its trace in the inbox for
                        # us: look once more now that we count as idle (callers check after
                        # adding to it), so that no trace waits there with every sender asleep.
                        if self._inbox:
                            continue
                        self._work.wait(durable.idle_wait(now) if durable is not None else None)
                    finally:
                        self._idle -= 1
                        self._waking = False
            assert durable is not None
            durable.do_chore(chore)

    def _clean(self, text: str) -> str:
        return redacted(text, (self._secret,))

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
        durable = self._durable
        spool = durable.spool if durable is not None else None
        ledger = self._ledger
        try:
            if not self._workers.alive and (self._queue or self._inbox):
                # No sender runs (none could start at exit, or none was needed): send what
                # waits from this thread, as a sender would, until the deadline.
                self._workers.run_here()
            with self._lock:
                self._admit_locked()  # added while the door closed: counted as closed
                self._wait_for_senders(deadline)
                if durable is not None:
                    durable.final = True
                stuck = bool(ledger.in_flight)
                for item in ledger.in_flight:
                    self._pacing.through(item, waking=False)
                lost, kept = ledger.tally_left_locked(spool is not None)
                self._work.notify_all()
            gone = durable.left(kept) if durable is not None else []
            lost = self._spill_lost(lost)
            with self._lock:
                news = self._sender.warner.news(ledger.dropped, force=True)
                spooled = ledger.spooled
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
                warn_dropped(news, ledger.last_error)
            spill.close(self._settings)
            if spooled and spool is not None:
                _log.info(
                    "infinium_logging left %d trace(s) in the spool (%s) for the next start",
                    spooled,
                    spool.root,
                )
            return ledger.dropped["shutdown"] == 0
        finally:
            EXPORTING.reset(token)

    def _spill_lost(self, lost: list[Item]) -> list[Item]:
        """At exit, keep on disk what shutdown counted as lost (see :mod:`.spill`); what could
        not be kept."""
        left = spill.keep(self._settings, lost, spill.record_of)
        self._ledger.spilled(len(lost) - len(left))
        return left

    def _wait_for_senders(self, deadline: float) -> None:
        """Wait (lock held) until nothing is queued or in flight, or the deadline."""
        ledger = self._ledger
        durable = self._durable
        backlog = durable.backlog if durable is not None else None
        ledger.waiters += 1
        try:
            while True:
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    break
                if ledger.queue or ledger.in_flight or (backlog is not None and backlog.refilling):
                    wait = remaining  # every settle and refill notifies
                elif (
                    backlog is not None
                    and durable is not None
                    and self._workers.alive
                    and durable.due_by(deadline)
                ):
                    # Spooled records a sender may still take up before the deadline.
                    wait = min(remaining, max(0.01, backlog.at - now))
                else:
                    break
                ledger.settled_cond.wait(wait)
        finally:
            ledger.waiters -= 1
