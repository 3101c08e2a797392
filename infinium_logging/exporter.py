"""The exporter: a bounded buffer drained by background sender threads, with deadlines and stats."""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import math
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Final

import msgspec

from ._logsetup import setup_logging
from .convert import Problem, fit_task, to_task
from .errors import BatchError, InfiniumError, ValidationError
from .model import MAX_BODY_BYTES, ApiResponse, BatchResult, PromptContent, TaskData, encode_task
from .retry import RetryPolicy, classify, retry_after_of
from .settings import Settings
from .throttle import TokenBucket
from .transport import Transport

__all__ = ["DROP_REASONS", "MAX_BATCH_SIZE", "Exporter", "ExporterStats", "in_export"]

_log = logging.getLogger("infinium_logging.exporter")

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
)
#: Reasons that mean a delivery was attempted and failed (the others are never sent at all).
_FAILURE_REASONS: Final = ("rejected", "auth", "retries_exhausted", "max_elapsed", "invalid")
#: ``send_batch`` takes at most this many traces (the platform's documented limit).
MAX_BATCH_SIZE: Final = 100

_WARN_INTERVAL: Final = 60.0
#: Fixed part of a trace's size estimate: the keys, the timestamp and the JSON punctuation.
_BASE_ESTIMATE: Final = 256
#: Distinct rejection messages remembered (each is logged once); a bound against odd servers.
_MAX_REMEMBERED: Final = 256
#: Time allowed past a shutdown deadline for reporting its losses to ``on_result``.
_REPORT_GRACE: Final = 0.25
#: How long shutdown waits for idle sender threads to end (they are daemons: only tidiness).
_JOIN_GRACE: Final = 0.1

OnResult = Callable[[Any, ApiResponse], object]


# --- the recursion guard ------------------------------------------------------------------------


class _Guard(threading.local):
    active = False


_GUARD: Final = _Guard()


def in_export() -> bool:
    """True on a thread that is exporting right now (a sender thread, or inside ``send``).

    Log handlers and processors must ignore events while this is true: whatever
    the exporter or urllib3 logs while delivering must not become a trace again.
    """
    return _GUARD.active


# --- stats ----------------------------------------------------------------------------------------


class ExporterStats(msgspec.Struct, frozen=True, kw_only=True):
    """What an exporter did, read at one instant (under one lock).

    Every submitted trace is exactly one of: sent, dropped (counted by reason
    in ``dropped``), queued, or in flight, so at every reading
    ``submitted == sent + dropped_total + queued + in_flight``.
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
    #: Bytes held: estimated for queued traces, exact once encoded (see ``max_queue_bytes``).
    buffered_bytes: int
    #: Body bytes of the traces the platform accepted.
    bytes_sent: int
    #: Fixes made while reading submitted dicts, by kind (``dropped``, ``truncated``, ...).
    coerced: dict[str, int]
    #: The last failure, as text (never containing the secret).
    last_error: str | None
    #: When the platform last accepted a trace (POSIX time), if it ever did.
    last_success_time: float | None

    @property
    def dropped_total(self) -> int:
        """All traces lost, whatever the reason."""
        return sum(self.dropped.values())

    @property
    def failed(self) -> int:
        """Traces whose delivery was attempted and failed for good."""
        return sum(self.dropped[reason] for reason in _FAILURE_REASONS)


# --- internals --------------------------------------------------------------------------------


class _Item:
    """One submitted trace on its way: queued, then in flight, then settled exactly once."""

    __slots__ = ("seq", "settled", "size", "task")

    def __init__(self, task: Any, seq: int, size: int) -> None:
        self.task = task
        self.seq = seq
        self.size = size
        self.settled = False

    def done(self) -> bool:
        """Whether it is settled; re-read after anything that can block (another thread may
        have settled it meanwhile, at the shutdown deadline)."""
        return self.settled


class _DropWarner:
    """Decides when to warn about drops: at most once per ``interval``, with the new counts."""

    def __init__(
        self, interval: float = _WARN_INTERVAL, clock: Callable[[], float] = time.monotonic
    ):
        self._interval = interval
        self._clock = clock
        self._last = -math.inf
        self._reported: dict[str, int] = {}

    def due(self) -> bool:
        """Whether a warning may be given now (cheap, without the counts)."""
        return self._clock() - self._last >= self._interval

    def news(self, dropped: Mapping[str, int], *, force: bool = False) -> dict[str, int] | None:
        """The drops since the last warning if one is due now (or ``force``), else None."""
        now = self._clock()
        if not force and now - self._last < self._interval:
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
        return new


def _describe_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason}={count}" for reason, count in counts.items())


_LIVE: Final[weakref.WeakSet[Exporter]] = weakref.WeakSet()
_hooks = {"atexit": False, "multiprocessing": False}


# --- the exporter ---------------------------------------------------------------------------------


class Exporter:
    """Delivers traces to Infinium in the background, one POST per trace.

    ``submit`` takes a trace from any thread in about a microsecond and never
    blocks, raises or touches the network; ``settings.workers`` daemon threads
    (started on the first submit) encode and send.  The buffer is bounded by
    ``max_queue_size`` traces and ``max_queue_bytes`` bytes; requests pass a
    token bucket shared by all threads; failures are retried with jittered
    backoff as the :class:`~infinium_logging.retry.RetryPolicy` says.
    ``flush`` and ``shutdown`` never wait past their deadline, and interpreter
    exit calls ``shutdown(settings.shutdown_timeout)``.

    ``settings=None`` reads the ``INFINIUM_*`` environment, with ``overrides``
    on top (``Exporter(workers=2)``); with settings given, ``overrides``
    replace some of them.  ``on_result(task, response)`` is called on a sender
    thread with the outcome of every trace it settles: on success
    ``response.data["traceId"]`` names the stored trace, on failure
    ``response.success`` is False and ``response.data["reason"]`` is the
    drop reason.  Traces refused by ``submit`` itself (it returned False) are
    not reported there.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        on_result: OnResult | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = Settings.from_env(**overrides)
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
        self._secret = settings.agent_secret
        self._scrub = re.compile(re.escape(self._secret)) if self._secret else None
        if settings.enable_logging:
            setup_logging(settings.log_level)
        self._init_state()
        _LIVE.add(self)

    def _init_state(self) -> None:
        """Fresh locks, an empty buffer and zero counts (at construction and in a forked child)."""
        settings = self._settings
        self._lock = threading.Lock()
        # Sender threads wait on _work for traces; flush/shutdown wait on _settled_cond.
        self._work = threading.Condition(self._lock)
        self._settled_cond = threading.Condition(self._lock)
        self._start_lock = threading.RLock()
        self._stopping = threading.Event()  # set when shutdown starts: wakes every sleeper
        self._finished = threading.Event()  # set when shutdown is over
        self._queue: collections.deque[_Item] = collections.deque()
        self._in_flight: set[_Item] = set()
        self._threads: list[threading.Thread] = []
        self._transport: Transport | None = None
        self._started = False
        self._closed = False
        self._shutdown_begun = False
        self._deadline: float | None = None
        self._idle = 0
        self._waiters = 0
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
        self._callback_error_logged = False
        self._warner = _DropWarner()
        self._step_bytes = 512.0
        self._bucket = TokenBucket(
            settings.requests_per_second,
            settings.burst_size,
            enabled=settings.enable_rate_limiting,
        )

    def _reset_after_fork(self) -> None:
        # The child owns none of the parent's traces (they are the parent's to deliver: no
        # duplicates), none of its threads, and no lock a parent thread may have held.
        was_closed = self._closed
        self._init_state()
        if was_closed:
            self._closed = self._shutdown_begun = True
            self._finished.set()

    def __repr__(self) -> str:
        if self._finished.is_set():
            state = "shut down"
        elif self._closed:
            state = "shutting down"
        elif self._started:
            state = "running"
        else:
            state = "idle"
        return (
            f"Exporter(base_url={self._settings.base_url!r}, agent_id={self._settings.agent_id!r}, "
            f"workers={self._settings.workers}, {state})"
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

    def submit(self, task: TaskData | Mapping[str, Any]) -> bool:
        """Queue a trace for delivery; True when accepted.

        Thread-safe, O(1), never blocks on I/O and never raises.  A dict is read
        leniently (``to_task(d, strict=False)``) on a sender thread.  False means
        the trace was not accepted; it is then counted in ``stats().dropped``
        as ``queue_full``, ``closed``, ``disabled`` or ``invalid`` (not a
        TaskData nor a dict).
        """
        try:
            if self._disabled:
                reason = "disabled"
                size = 0
            else:
                reason = ""
                try:
                    size = self._estimate(task)
                except Exception:
                    size = -1
                if size < 0:
                    reason = "invalid"
            with self._lock:
                self._submitted += 1
                if self._closed:
                    reason = "closed"
                if not reason and (
                    len(self._queue) >= self._max_items or self._held_bytes + size > self._max_bytes
                ):
                    reason = "queue_full"
                if reason:
                    self._dropped[reason] += 1
                    return False
                self._queue.append(_Item(task, self._seq, size))
                self._seq += 1
                self._held_bytes += size
                if self._idle:
                    self._work.notify()
                started = self._started
            if not started:
                self._start_workers()
            return True
        except Exception:  # the caller is logging: whatever happens here must not reach it
            return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every trace submitted before this call is settled; False on timeout.

        Settled means delivered, or dropped and counted.  Returns within
        ``timeout`` seconds (default ``settings.shutdown_timeout``) even if the
        server hangs.  On a sender thread (e.g. from ``on_result``) it does not
        wait: it only says whether that is already the case.
        """
        limit = self._settings.shutdown_timeout if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + limit
        with self._lock:
            target = self._seq
            if _GUARD.active:
                return self._settled_before(target)
            self._waiters += 1
            try:
                while not self._settled_before(target):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._settled_cond.wait(remaining)
                return True
            finally:
                self._waiters -= 1

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop accepting traces, deliver what can be delivered before a deadline, drop the rest.

        The one deadline (``timeout`` seconds from now, default
        ``settings.shutdown_timeout``) covers requests already in flight: no
        retry, throttle wait or request is allowed to outlast it, and what is
        still queued or in flight then is counted as ``shutdown`` loss.
        Idempotent and thread-safe; later submits are counted as ``closed``.
        Returns True when nothing was lost to the deadline.
        """
        limit = self._settings.shutdown_timeout if timeout is None else max(0.0, timeout)
        if not self._begin_shutdown(limit):
            # Someone else is shutting down: wait for them, within our own timeout.
            if not _GUARD.active:
                self._finished.wait(limit)
            return self._finished.is_set() and self._dropped["shutdown"] == 0
        if _GUARD.active:
            # Called from a sender thread (on_result): waiting here would wait for ourselves.
            return False
        return self._finish_shutdown()

    def close(self) -> None:
        """Same as :meth:`shutdown` with the default timeout."""
        self.shutdown()

    def stats(self) -> ExporterStats:
        """A consistent snapshot of the counters."""
        with self._lock:
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
            )

    def send(self, task: TaskData | Mapping[str, Any]) -> ApiResponse:
        """Send one trace now and return the platform's answer (``data["traceId"]``).

        Synchronous, on the caller's thread, through the same throttle and
        retry policy as the background delivery.  A dict is validated strictly.
        Raises :class:`~infinium_logging.errors.ValidationError` for an invalid
        trace, :class:`~infinium_logging.errors.AuthenticationError` for refused
        credentials, and the last error (``ServerError``, ``RateLimitError``,
        ``NetworkError``...) when the retries run out.  With
        ``INFINIUM_DISABLED`` on, nothing is sent and the answer says so.
        """
        if self._settings.disabled:
            return _disabled_response()
        trace = task if isinstance(task, TaskData) else to_task(task, strict=True)
        body = _encode(trace)
        transport = self._get_transport()
        return self._call(lambda timeout: transport.post_trace(body, timeout=timeout))

    def send_batch(self, tasks: Iterable[TaskData | Mapping[str, Any]]) -> BatchResult:
        """Send up to 100 traces now, concurrently over the pool; results in input order.

        One trace's failure never stops the others: each gets its own
        ApiResponse in ``results`` (``success=False`` and the error's text for a
        failure, also listed in ``errors``).  More than 100 traces is a
        ``ValueError``.  :class:`~infinium_logging.errors.BatchError` is raised
        only when nothing at all could be sent (for example refused credentials).
        """
        batch = list(tasks)
        if len(batch) > MAX_BATCH_SIZE:
            raise ValueError(f"send_batch takes at most {MAX_BATCH_SIZE} traces, got {len(batch)}")
        if not batch:
            return BatchResult(successful=0, failed=0, results=[], errors=[], total=0)
        if self._settings.disabled:
            results = [_disabled_response() for _ in batch]
            errors = [f"task {i}: {r.message}" for i, r in enumerate(results)]
            return BatchResult(0, len(batch), results, errors, total=len(batch))

        def one(index: int) -> ApiResponse:
            try:
                return self.send(batch[index])
            except Exception as exc:
                text = exc.message if isinstance(exc, InfiniumError) else str(exc)
                status = exc.status_code if isinstance(exc, InfiniumError) else None
                return ApiResponse(
                    success=False,
                    status_code=status,
                    message=self._clean(f"{type(exc).__name__}: {text}"),
                    data={"task_index": index, "error": type(exc).__name__},
                )

        concurrency = min(self._settings.workers, len(batch))
        if concurrency == 1:
            results = [one(i) for i in range(len(batch))]
        else:
            with ThreadPoolExecutor(concurrency, thread_name_prefix="infinium-batch") as pool:
                results = list(pool.map(one, range(len(batch))))
        errors = [
            f"task {i} ({_name_of(batch[i])}): {r.message}"
            for i, r in enumerate(results)
            if not r.success
        ]
        successful = len(batch) - len(errors)
        if successful == 0:
            raise BatchError(
                f"none of the {len(batch)} traces could be sent; first error: {results[0].message}",
                total_tasks=len(batch),
                failed_tasks=len(batch),
                errors=errors,
            )
        return BatchResult(successful, len(errors), results, errors, total=len(batch))

    def get_interpreted_result(self, trace_id: str) -> ApiResponse:
        """The platform's interpretation of a trace sent earlier.

        ``data["interpretedTraceResult"]`` is None until the platform graded it.
        Same throttle, retries and errors as :meth:`send`.
        """
        transport = self._get_transport()
        return self._call(lambda _timeout: transport.get_interpreted_result(trace_id))

    def get_prompt(
        self,
        prompt_id: str,
        prompt_key: str,
        version: int | str = "latest",
        variables: Mapping[str, str] | None = None,
    ) -> PromptContent:
        """A Prompt Studio prompt; ``variables`` fill its ``{{placeholders}}`` into
        ``rendered_content`` (unknown ones are left as they are)."""
        transport = self._get_transport()
        response = self._call(lambda _timeout: transport.get_prompt(prompt_id, prompt_key, version))
        data = response.data or {}
        content = data.get("content")
        text = content if isinstance(content, str) else ""
        rendered = None
        if variables is not None:
            rendered = re.sub(
                r"\{\{(\w+)\}\}", lambda m: str(variables.get(m.group(1), m.group(0))), text
            )
        version_number = data.get("version")
        return PromptContent(
            prompt_id=str(data.get("promptId", prompt_id)),
            name=str(data.get("name", "")),
            version=version_number if isinstance(version_number, int) else 0,
            content=text,
            created_at=str(data.get("createdAt", "")),
            rendered_content=rendered,
        )

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

    def _estimate(self, task: object) -> int:
        """A cheap guess of the encoded size (O(1): a few attribute reads), or -1 if not a trace.

        Encoding on the caller's thread would cost as much as the logging call
        itself, so the byte bound counts this estimate while the trace waits;
        a sender thread replaces it with the exact size once it has encoded
        the trace, and learns the average size of a step from what it encodes.
        """
        if isinstance(task, TaskData):
            size = _BASE_ESTIMATE + len(task.name) + len(task.description)
            if task.input_summary is not None:
                size += len(task.input_summary)
            if task.output_summary is not None:
                size += len(task.output_summary)
            if task.steps:
                size += len(task.steps) * int(self._step_bytes)
            return size
        if isinstance(task, Mapping):
            size = _BASE_ESTIMATE
            for key in ("name", "description", "input_summary", "output_summary"):
                value = task.get(key)
                if isinstance(value, str):
                    size += len(value)
            steps = task.get("steps")
            if isinstance(steps, (list, tuple)):
                size += len(steps) * int(self._step_bytes)
            return size
        return -1

    def _learn_step_size(self, task: TaskData, size: int) -> None:
        steps = task.steps
        if not steps:
            return
        fixed = _BASE_ESTIMATE + len(task.name) + len(task.description)
        fixed += len(task.input_summary or "") + len(task.output_summary or "")
        per_step = min(max((size - fixed) / len(steps), 32.0), float(MAX_BODY_BYTES))
        # A moving average: unlocked, since a lost update only makes one estimate a bit off.
        self._step_bytes = 0.9 * self._step_bytes + 0.1 * per_step

    def _start_workers(self) -> None:
        with self._start_lock:
            if self._started or self._closed:
                return
            self._get_transport()
            threads = []
            for number in range(1, self._settings.workers + 1):
                thread = threading.Thread(
                    target=self._run, name=f"infinium-exporter-{number}", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError:  # e.g. "can't create new thread at interpreter shutdown"
                    break
                threads.append(thread)
            if not threads:
                return
            self._threads = threads
            with self._lock:
                self._started = True
            _ensure_exit_hooks()

    def _get_transport(self) -> Transport:
        transport = self._transport
        if transport is None:
            previous = _GUARD.active
            _GUARD.active = True  # urllib3 logs while it builds the pool
            try:
                with self._start_lock:
                    if self._transport is None:
                        self._transport = Transport(self._settings)
                    transport = self._transport
            finally:
                _GUARD.active = previous
        return transport

    # --- sender threads -----------------------------------------------------------------------

    def _run(self) -> None:
        _GUARD.active = True
        while True:
            item = self._take()
            if item is None:
                return
            try:
                self._process(item)
            except Exception as exc:  # a bug must cost one trace, not the sender thread
                if self._settle(item, "invalid", f"internal error: {exc!r}"):
                    _log.exception("infinium_logging could not process a trace")
            self._warn_drops()

    def _take(self) -> _Item | None:
        with self._lock:
            while not self._queue:
                if self._closed:
                    return None
                self._idle += 1
                try:
                    self._work.wait()
                finally:
                    self._idle -= 1
            item = self._queue.popleft()
            self._in_flight.add(item)
            return item

    def _process(self, item: _Item) -> None:
        task = item.task
        if not isinstance(task, TaskData):
            problems: list[Problem] = []
            task = to_task(task, strict=False, problems=problems)
            if problems:
                with self._lock:
                    for problem in problems:
                        self._coerced[problem.action] += 1
                if any(p.path == "" and p.action == "replaced" for p in problems):
                    self._settle(item, "invalid", "could not be read as a trace")
                    return
            item.task = task
        try:
            body = _encode(task)
        except Exception as exc:
            self._settle(item, "invalid", f"could not be encoded: {exc}")
            return
        self._learn_step_size(task, len(body))
        with self._lock:
            if item.settled:
                return
            self._held_bytes += len(body) - item.size
            item.size = len(body)
        self._deliver(item, body)

    def _deliver(self, item: _Item, body: bytes) -> None:
        transport = self._get_transport()
        started = time.monotonic()
        retries = 0
        while True:
            if not self._wait_for_credentials(item) or not self._bucket.acquire(self._deadline_of):
                self._settle(item, "shutdown")
                return
            timeout = self._request_timeout()
            if item.settled:
                return
            if timeout is not None and timeout <= 0:
                self._settle(item, "shutdown")
                return
            try:
                response = transport.post_trace(body, timeout=timeout)
            except InfiniumError as error:
                if item.done():  # given up at the shutdown deadline while the request was out
                    return
                verdict = classify(error)
                if verdict == "auth":
                    self._auth_failed(item, error)
                    return
                if verdict == "reject":
                    self._rejected(item, error)
                    return
                retry_after = retry_after_of(error)
                decision = self._policy.decide(retries, time.monotonic() - started, retry_after)
                if error.status_code == 429:
                    pause = decision.delay if decision.retry else 0.0
                    if retry_after is not None:
                        pause = max(pause, self._policy.bound_retry_after(retry_after))
                    self._bucket.pause(pause)
                if not decision.retry:
                    self._settle(item, decision.reason, self._describe(error))
                    return
                retries += 1
                with self._lock:
                    if item.done():
                        return
                    self._retries += 1
                    self._last_error = self._describe(error)
                if not self._sleep_until(time.monotonic() + decision.delay, item):
                    self._settle(item, "shutdown")
                    return
                continue
            self._delivered(item, response, len(body))
            return

    def _wait_for_credentials(self, item: _Item) -> bool:
        until = self._auth_until
        return until <= time.monotonic() or self._sleep_until(until, item)

    def _sleep_until(self, until: float, item: _Item | None) -> bool:
        """Sleep until ``until``; False (at once) when the shutdown deadline would come first."""
        while True:
            if item is not None and item.settled:
                return False
            now = time.monotonic()
            if now >= until:
                return True
            deadline = self._deadline
            if deadline is not None and until > deadline:
                return False
            event = self._stopping if deadline is None else self._finished
            if event.is_set() and deadline is not None:
                return False
            event.wait(until - now)

    def _deadline_of(self) -> float | None:
        return self._deadline

    def _request_timeout(self) -> float | None:
        deadline = self._deadline
        if deadline is None:
            return None
        return min(self._settings.timeout, deadline - time.monotonic())

    def _auth_failed(self, item: _Item, error: InfiniumError) -> None:
        with self._lock:
            first = not self._auth_failing
            self._auth_failing = True
            self._auth_until = time.monotonic() + self._settings.auth_backoff
        self._settle(item, "auth", self._describe(error))
        if first and not self._closed:
            _log.error(
                "Infinium refused the agent credentials (HTTP %s): check INFINIUM_AGENT_ID and "
                "INFINIUM_AGENT_SECRET. Traces are dropped (counted as 'auth') and sending "
                "pauses for %g s before each new try.",
                error.status_code,
                self._settings.auth_backoff,
            )

    def _rejected(self, item: _Item, error: InfiniumError) -> None:
        said = str(error.details.get("server_message") or error.message)
        self._settle(item, "rejected", self._describe(error))
        key = f"{error.status_code}:{said}"
        with self._lock:
            new = key not in self._rejections_logged
            if new and len(self._rejections_logged) < _MAX_REMEMBERED:
                self._rejections_logged.add(key)
        if new and not self._closed:
            _log.warning(
                "Infinium rejected a trace (HTTP %s): %s. It is not retried; later "
                "rejections with the same message are only counted.",
                error.status_code,
                self._clean(said),
            )

    def _delivered(self, item: _Item, response: ApiResponse, size: int) -> None:
        with self._lock:
            if item.settled:  # given up at the shutdown deadline while the request was out
                return
            self._mark_settled(item)
            self._sent += 1
            self._bytes_sent += size
            self._last_success = time.time()
            recovered = self._auth_failing
            self._auth_failing = False
        if recovered and not self._closed:
            _log.info("Infinium accepted the agent credentials again; sending resumed")
        self._report(item, response)

    def _settle(self, item: _Item, reason: str, error: str | None = None) -> bool:
        """Count a trace as lost for ``reason`` unless it is settled already; tell on_result."""
        with self._lock:
            if item.settled:
                return False
            self._mark_settled(item)
            self._dropped[reason] += 1
            if error is not None:
                self._last_error = error
        self._report(item, _failure_response(reason, error))
        return True

    def _mark_settled(self, item: _Item) -> None:
        # Called with the lock held.
        item.settled = True
        self._in_flight.discard(item)
        self._held_bytes -= item.size
        if self._waiters:
            self._settled_cond.notify_all()

    def _report(self, item: _Item, response: ApiResponse) -> None:
        callback = self._on_result
        if callback is None:
            return
        previous = _GUARD.active
        _GUARD.active = True
        try:
            callback(item.task, response)
        except Exception:
            if not self._callback_error_logged:
                self._callback_error_logged = True
                _log.warning("the on_result callback raised (logged once)", exc_info=True)
        finally:
            _GUARD.active = previous

    def _warn_drops(self) -> None:
        if self._closed or not self._warner.due():
            # When closed, shutdown reports what is left: logging now could meet logging.shutdown().
            return
        with self._lock:
            news = self._warner.news(self._dropped)
        if news:
            _log.warning(
                "infinium_logging dropped %d trace(s) since the last report: %s",
                sum(news.values()),
                _describe_counts(news),
            )

    def _describe(self, error: InfiniumError) -> str:
        return self._clean(f"{type(error).__name__}: {error.message}")

    def _clean(self, text: str) -> str:
        return self._scrub.sub("***", text) if self._scrub is not None else text

    def _settled_before(self, target: int) -> bool:
        # Called with the lock held. Traces leave the queue in order, so the oldest unsettled
        # one is the queue's head or one of the (few) traces in flight.
        if self._queue and self._queue[0].seq < target:
            return False
        return all(item.seq >= target for item in self._in_flight)

    # --- synchronous sends ------------------------------------------------------------------------

    def _call(self, request: Callable[[float | None], ApiResponse]) -> ApiResponse:
        """One request with the throttle and retry policy, on the caller's thread."""
        if self._finished.is_set():
            raise InfiniumError("the exporter is shut down")
        previous = _GUARD.active
        _GUARD.active = True
        try:
            started = time.monotonic()
            retries = 0
            while True:
                if not self._bucket.acquire(self._deadline_of):
                    raise InfiniumError("the exporter is shutting down")
                timeout = self._request_timeout()
                if timeout is not None and timeout <= 0:
                    raise InfiniumError("the exporter is shutting down")
                try:
                    return request(timeout)
                except InfiniumError as error:
                    if classify(error) != "retry":
                        raise
                    retry_after = retry_after_of(error)
                    decision = self._policy.decide(retries, time.monotonic() - started, retry_after)
                    if error.status_code == 429 and retry_after is not None:
                        self._bucket.pause(self._policy.bound_retry_after(retry_after))
                    if not decision.retry:
                        raise
                    retries += 1
                    if not self._sleep_until(time.monotonic() + decision.delay, None):
                        raise
        finally:
            _GUARD.active = previous

    # --- shutdown ---------------------------------------------------------------------------------

    def _begin_shutdown(self, timeout: float) -> bool:
        """Close the door and set the deadline; False if a shutdown had already begun."""
        with self._lock:
            if self._shutdown_begun:
                return False
            self._shutdown_begun = True
            self._closed = True
            self._deadline = time.monotonic() + timeout
            self._work.notify_all()
        self._stopping.set()
        self._bucket.wake()
        return True

    def _finish_shutdown(self) -> bool:
        """Wait for the senders until the deadline, then count what is left as ``shutdown``."""
        deadline = self._deadline if self._deadline is not None else time.monotonic()
        previous = _GUARD.active
        _GUARD.active = True
        try:
            with self._lock:
                self._waiters += 1
                try:
                    while self._queue or self._in_flight:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._settled_cond.wait(remaining)
                finally:
                    self._waiters -= 1
                stuck = bool(self._in_flight)
                left = list(self._queue) + sorted(self._in_flight, key=lambda i: i.seq)
                self._queue.clear()
                for item in left:
                    self._mark_settled(item)
                    self._dropped["shutdown"] += 1
                news = self._warner.news(self._dropped, force=True)
            self._finished.set()
            self._bucket.wake()
            for item in left:
                if time.monotonic() > deadline + _REPORT_GRACE:
                    break
                self._report(item, _failure_response("shutdown", None))
            if not stuck:
                # Idle senders exit at once; a sender stuck in a request is a daemon thread
                # and is left behind (its late answer is ignored: the trace is settled).
                join_by = time.monotonic() + _JOIN_GRACE
                for thread in self._threads:
                    thread.join(max(0.0, join_by - time.monotonic()))
            transport = self._transport
            if transport is not None:
                transport.clear()
            if news:
                _log.warning(
                    "infinium_logging dropped %d trace(s) since the last report: %s",
                    sum(news.values()),
                    _describe_counts(news),
                )
            return self._dropped["shutdown"] == 0
        finally:
            _GUARD.active = previous


def _encode(task: TaskData) -> bytes:
    """The wire body of a trace, shrunk to the platform's limit when needed."""
    body = encode_task(task)
    if len(body) > MAX_BODY_BYTES:
        body = encode_task(fit_task(task))
        if len(body) > MAX_BODY_BYTES:
            raise ValidationError(f"the trace is {len(body)} bytes even after shrinking")
    return body


def _failure_response(reason: str, error: str | None) -> ApiResponse:
    message = f"not delivered ({reason})" + (f": {error}" if error else "")
    return ApiResponse(success=False, status_code=None, message=message, data={"reason": reason})


def _disabled_response() -> ApiResponse:
    return ApiResponse(
        success=False,
        message="export is disabled (INFINIUM_DISABLED); nothing was sent",
        data={"reason": "disabled"},
    )


def _name_of(task: object) -> str:
    name = task.name if isinstance(task, TaskData) else None
    if name is None and isinstance(task, Mapping):
        name = task.get("name")
    return repr(name[:80]) if isinstance(name, str) else "unnamed"


# --- process-wide hooks: exit and fork ---------------------------------------------------------


def _shutdown_all_at_exit() -> None:
    """Shut every running exporter down, each within its own ``shutdown_timeout``, in parallel."""
    exporters = [e for e in list(_LIVE) if e._started and not e._shutdown_begun]
    begun = [e for e in exporters if e._begin_shutdown(e.settings.shutdown_timeout)]
    for exporter in begun:
        try:
            exporter._finish_shutdown()
        except Exception:  # exit goes on, whatever happens to one exporter
            _log.debug("shutdown at exit failed", exc_info=True)


def _ensure_exit_hooks() -> None:
    """Register the exit hook once per process (and once per multiprocessing child)."""
    if not _hooks["atexit"]:
        _hooks["atexit"] = True
        atexit.register(_shutdown_all_at_exit)
    if not _hooks["multiprocessing"]:
        # multiprocessing children end with os._exit(), which skips atexit; they do run
        # multiprocessing's own finalizers first, so register there too.
        mp = sys.modules.get("multiprocessing")
        util = sys.modules.get("multiprocessing.util")
        if mp is not None and util is not None and mp.parent_process() is not None:
            _hooks["multiprocessing"] = True
            util.Finalize(None, _shutdown_all_at_exit, exitpriority=100)


def _after_fork_in_child() -> None:
    _hooks["multiprocessing"] = False
    for exporter in list(_LIVE):
        exporter._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
