"""The exporter: a bounded buffer drained by background sender threads, with deadlines and stats."""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextvars
import dataclasses
import logging
import math
import os
import random
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, ClassVar, Final, Protocol, TypeVar

import msgspec

from ._logsetup import setup_logging
from .convert import (
    Problem,
    _object_fields,
    decode_task,
    fit_task,
    json_safe,
    lenient_task,
    to_task,
)
from .errors import BatchError, ConfigurationError, InfiniumError, NotFoundError, ValidationError
from .mapping import PendingTrace, TaggedTrace
from .model import (
    MAX_BODY_BYTES,
    ApiResponse,
    BatchResult,
    PromptContent,
    TaskData,
    encode_task,
    utc_now_iso,
)
from .official import send_task, wait_for_interpretation
from .redact import Redactor, redacted_record, sink_redactor
from .retry import RetryPolicy, classify, retry_after_of
from .sampling import sampled_in
from .settings import Settings
from .spool import RecordRef, Spool, survey
from .throttle import TokenBucket
from .transport import Transport, redacted

__all__ = [
    "DROP_REASONS",
    "MAX_BATCH_SIZE",
    "Exporter",
    "ExporterStats",
    "ReplayReport",
    "exporting",
    "in_export",
    "replay_spool",
]

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
    "spool_full",  # evicted from the spool past spool_max_bytes before it could be delivered
)
#: Reasons counted in ``ExporterStats.failed``: lost for good other than by the buffer or shutdown.
_FAILURE_REASONS: Final = ("rejected", "auth", "retries_exhausted", "max_elapsed", "invalid")
#: ``send_batch`` takes at most this many traces (the platform's documented limit).
MAX_BATCH_SIZE: Final = 100

_WARN_INTERVAL: Final = 60.0
#: Fixed part of a trace's size estimate: its small fields, containers and the queue's item.
_BASE_ESTIMATE: Final = 512
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

#: No request starts closer than this to the shutdown deadline: it could hardly be answered in
#: time, yet the server might store it after the exporter gave up, and the trace (kept in the
#: spool) would then arrive twice.
_LAST_REQUEST_WINDOW: Final = 0.05
#: Spool record kinds: an encoded wire body, sent as is; a submitted dict, read leniently later,
#: as MessagePack or (when MessagePack cannot hold it as it is) as JSON of its JSON-safe copy.
_KIND_BODY: Final = 0
_KIND_DICT_JSON: Final = 1
_KIND_DICT: Final = 2
#: A tagged event as a handler or processor captured it, as MessagePack (built when read).
_KIND_CAPTURED: Final = 3
#: Records that hold what a trace is made of rather than its wire body (see _read_record).
_LOOSE_KINDS: Final = frozenset({_KIND_DICT_JSON, _KIND_DICT, _KIND_CAPTURED})
#: With a spool, a trace that fails for one of these reasons stays in the spool for a later
#: attempt instead of being dropped.
_KEEP_REASONS: Final = frozenset({"auth", "retries_exhausted", "max_elapsed", "shutdown"})
#: How often a running exporter looks for segments that dead processes left (seconds).
_ADOPT_INTERVAL: Final = 30.0
#: After the spool could not be opened, how long submits go memory-only before trying again.
_SPOOL_RETRY: Final = 30.0
#: Most records moved from the spool's backlog into the queue at once.
_REFILL_BATCH: Final = 256
#: A sender starts on a trace while another is still starting (taken, not yet through its
#: first request) only once that one has been at it this long: see Exporter._take.
_OVERLAP_AFTER: Final = 0.002

OnResult = Callable[[Any, ApiResponse], object]


# --- the recursion guard ------------------------------------------------------------------------


#: Set on sender threads and while the exporter sends on a caller's thread.  A ContextVar
#: rather than a thread-local: every event logged reads it, and ``ContextVar.get`` is the
#: cheapest per-thread read there is (as OpenTelemetry suppresses its own instrumentation).
#: Contexts copied from an exporting one (``copy_context`` inside ``on_result``) inherit it.
_EXPORTING: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar(
    "infinium_logging_exporting", default=False
)
#: :func:`in_export` without the function call (for the logging hot paths).
exporting: Final[Callable[[], bool]] = _EXPORTING.get


def submit_as_exporter(sink: Any, task: object) -> bool:
    """``sink.submit(task)`` for a sink of the application's own, with what it logs meanwhile
    ignored as the exporter's own logging is: a sink that logs a tagged event (or anything
    inside a task) through the handler that called it would otherwise recurse."""
    try:
        task = sink_redactor().task(task)
    except Exception:  # never handed over unredacted
        _log.debug("a trace could not be redacted for a sink", exc_info=True)
        return False
    token = _EXPORTING.set(True)
    try:
        return bool(sink.submit(task))
    finally:
        _EXPORTING.reset(token)


def in_export() -> bool:
    """True on a thread that is exporting right now (a sender thread, or inside ``send``).

    Log handlers and processors must ignore events while this is true: whatever
    the exporter or urllib3 logs while delivering must not become a trace again.
    """
    return _EXPORTING.get()


# --- stats ----------------------------------------------------------------------------------------


class OfficialTask(Protocol):
    """The official client's ``TaskData`` (or any dataclass of TaskData fields)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


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

    @property
    def dropped_total(self) -> int:
        """All traces lost, whatever the reason."""
        return sum(self.dropped.values())

    @property
    def failed(self) -> int:
        """Traces lost for good other than by the buffer or shutdown: refused by the platform
        (``rejected``, ``auth``), out of retries (``retries_exhausted``, ``max_elapsed``), or
        unreadable (``invalid``, which also counts what ``submit`` refused as no trace)."""
        return sum(self.dropped[reason] for reason in _FAILURE_REASONS)


# --- internals --------------------------------------------------------------------------------


class _Item:
    """One submitted trace on its way: queued, then in flight, then settled exactly once."""

    __slots__ = ("body", "loose", "ref", "seq", "settled", "size", "starting", "task")

    def __init__(  # noqa: PLR0917 - positional: an item is made on every submit
        self,
        task: Any,
        seq: int,
        size: int,
        body: bytes | None = None,
        ref: RecordRef | None = None,
        loose: bool = False,
    ) -> None:
        self.task = task
        self.seq = seq
        self.size = size
        #: The encoded wire body, once there is one.
        self.body = body
        #: Its record in the spool, if it has one.
        self.ref = ref
        #: Whether that record holds the submitted dict rather than the wire body.
        self.loose = loose
        self.settled = False
        #: Taken by a sender and not yet through its first request (see Exporter._take).
        self.starting = False

    def done(self) -> bool:
        """Whether it is settled; re-read after anything that can block (another thread may
        have settled it meanwhile, at the shutdown deadline)."""
        return self.settled


#: Captured traces a caller leaves in the inbox before admitting them itself (see submit).
_INBOX_BATCH: Final = 32

#: A trace as submit queues it: (task, seq, estimated size).
_Entry = tuple[Any, int, int]


def _seq_of(entry: _Item | _Entry) -> int:
    return entry.seq if isinstance(entry, _Item) else entry[1]


def _as_item(entry: _Item | _Entry) -> _Item:
    return entry if isinstance(entry, _Item) else _Item(entry[0], entry[1], entry[2])


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

_LIVE: Final[weakref.WeakSet[Exporter]] = weakref.WeakSet()
_hooks = {"atexit": False, "multiprocessing": False}

#: Called at exit before the exporters shut down, so that what they hand over is sent with
#: the rest (tasks.py adds one that ends the tasks still open).
before_exit: Final[list[Callable[[], None]]] = []
#: Run by flush() first (tasks.py: the traces of tasks ended where exporting was not safe,
#: generators closed early, are submitted then, so that a flush before os._exit covers them).
before_flush: Final[list[Callable[[], None]]] = []


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
            settings = Settings.from_env(**overrides)
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
        self._secret = settings.agent_secret
        self._redactor = Redactor.from_settings(settings)
        self._sample_rate = settings.sample_rate
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
        _LIVE.add(self)
        if self._spool_dir is not None:
            self._start_with_spool()

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
        self._stopping = threading.Event()  # set when shutdown starts: wakes every sleeper
        self._finished = threading.Event()  # set when shutdown is over
        #: Waiting traces, oldest first: an _Item, or what submit queues as (task, seq, size).
        self._queue: collections.deque[_Item | _Entry] = collections.deque()
        #: Traces submitted and not yet admitted to the queue (see submit): captured ones wait
        #: here for a batch; others pass through under the lock.
        self._inbox: collections.deque[object] = collections.deque()
        self._in_flight: set[_Item] = set()
        self._threads: list[threading.Thread] = []
        self._transport: Transport | None = None
        self._started = False
        self._closed = False
        self._shutdown_begun = False
        self._deadline: float | None = None
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
        self._callback_error_logged = False
        self._warner = _DropWarner()
        # Pacing (see _take): traces being started, when the last was taken, who waits.
        self._starting = 0
        self._last_start = 0.0
        self._pacing = 0
        self._step_bytes = _INITIAL_STEP_BYTES
        #: Memory counted per step of a queued trace (see _estimate).
        self._step_estimate = int(_INITIAL_STEP_BYTES * _MEMORY_PER_WIRE_BYTE)
        #: Memory counted for the rest of a captured trace (learnt like the steps' share).
        self._fixed_estimate = _BASE_ESTIMATE
        self._alive = 0  # sender threads running
        self._final = False  # shutdown has counted what is left: nothing more is queued
        # Spool state: records held only there, adoption, and the backoff of the backlog.
        self._spooled = 0
        self._adopted = 0
        self._spool_write_errors = 0
        self._sampled_out = 0
        self._spool_error_logged = False
        self._adopting = False
        self._next_adopt = 0.0
        self._refilling = False
        self._backlog_at = 0.0
        self._backlog_failures = 0
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
        spool = self._spool
        if spool is not None and not spool.closed:
            # The parent's records stay the parent's; the child writes segments of its own.
            spool.after_fork_in_child()
            self._next_adopt = time.monotonic() + _ADOPT_INTERVAL

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
                        or not self._started
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
                    started = self._started
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
                    record = _captured_record(task)
                    if record is None:
                        trace = _built(task)
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
                        _Item(held, self._seq, size, body, ref, ref is not None and body is None)
                    )
                    self._seq += 1
                    self._held_bytes += size
                    if self._idle:
                        self._work.notify()
                started = self._started
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
        if not _EXPORTING.get() and not self._lock_owned():
            for hook in before_flush:
                try:
                    hook()
                except Exception:  # a flush never raises; the trace it was for is lost, logged
                    _log.debug("flush hook failed", exc_info=True)
        with self._lock:
            self._admit_locked()
            target = self._seq
            idle = not self._started and bool(self._queue)
        if idle:  # traces left in the inbox by a submit that could not admit them (see _admit)
            self._start_workers()
        with self._lock:
            if _EXPORTING.get():
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
            if not _EXPORTING.get():
                self._finished.wait(limit)
            return self._finished.is_set() and self._dropped["shutdown"] == 0
        if _EXPORTING.get():
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
        if self._settings.disabled:
            return _disabled_response()
        if isinstance(task, PendingTrace):
            task = task.materialize()
        if isinstance(task, Mapping) and task.get("current_datetime") is None:
            task = {**task, "current_datetime": utc_now_iso()}  # as submit() fills it in
        trace = task if isinstance(task, TaskData) else to_task(task, strict=True)
        body = _encode(self._redactor.task(trace))
        transport = self._get_transport()
        return self._call(lambda timeout: transport.post_trace(body, timeout=timeout))

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
        batch = list(tasks)
        if len(batch) > MAX_BATCH_SIZE:
            raise ValueError(f"send_batch takes at most {MAX_BATCH_SIZE} traces, got {len(batch)}")
        if max_concurrent is not None and (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            raise ValueError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")
        if not batch:
            return BatchResult(successful=0, failed=0, results=[], errors=[], total=0)
        if self._settings.disabled:
            results = [_disabled_response() for _ in batch]
            errors = [f"task {i}: {r.message}" for i, r in enumerate(results)]
            return BatchResult(0, len(batch), results, errors, total=len(batch))

        stop = threading.Event()

        def one(index: int) -> ApiResponse:
            if stop.is_set():
                return ApiResponse(
                    success=False,
                    message="not sent: an earlier trace failed (fail_fast)",
                    data={"task_index": index, "error": "NotSent"},
                )
            try:
                return self.send(batch[index])
            except Exception as exc:
                if fail_fast:
                    stop.set()
                text = exc.message if isinstance(exc, InfiniumError) else str(exc)
                status = exc.status_code if isinstance(exc, InfiniumError) else None
                return ApiResponse(
                    success=False,
                    status_code=status,
                    message=self._clean(f"{type(exc).__name__}: {text}"),
                    data={"task_index": index, "error": type(exc).__name__},
                )

        limit = self._settings.workers if max_concurrent is None else max_concurrent
        concurrency = min(limit, len(batch))
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
        if fail_fast and errors:
            raise BatchError(
                f"batch stopped at the first failure; {errors[0]}",
                total_tasks=len(batch),
                failed_tasks=len(errors),
                errors=errors,
            )
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
        try:
            return self._call(lambda _timeout: transport.get_interpreted_result(trace_id))
        except NotFoundError as error:
            error.resource_type, error.resource_id = "trace", trace_id
            raise

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
        transport = self._get_transport()
        try:
            response = self._call(
                lambda _timeout: transport.get_prompt(prompt_id, prompt_key, version)
            )
        except NotFoundError as error:
            error.resource_type, error.resource_id = "prompt", prompt_id
            raise
        data = response.data or {}
        content = data.get("content")
        text = content if isinstance(content, str) else ""
        rendered = None
        if variables is not None:
            rendered = re.sub(
                r"\{\{(\w+)\}\}", lambda m: str(variables.get(m.group(1), m.group(0))), text
            )
        version_number = data.get("version")
        prompt = PromptContent(
            prompt_id=str(data.get("promptId", prompt_id)),
            name=str(data.get("name", "")),
            version=version_number if isinstance(version_number, int) else 0,
            content=text,
            created_at=str(data.get("createdAt", "")),
            rendered_content=rendered,
        )
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
            started = self._started
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
            # A tagged event's dict, nearly every trace that comes this way: what _estimate
            # reads of it, read here (a call per trace would cost as much as the rest of its
            # admission).  Anything else goes to _estimate.
            fields = task.basis if type(task) is TaggedTrace else None
            if type(fields) is dict:
                listed = fields.get("steps")
                size = fixed
                if type(listed) is list or type(listed) is tuple:
                    size += len(listed) * per_step
                text = fields.get("input_summary")
                if type(text) is str:
                    size += len(text)
                text = fields.get("output_summary")
                if type(text) is str:
                    size += len(text)
            else:
                size = estimate(task)
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
                queue.append((task, seq, size))
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
        # For a dict of fields (submitted, or the basis of a captured trace): what can grow
        # without bound (steps, summaries) is counted, the rest (name and description, capped
        # by lenient coercion, and small fields) taken to weigh what it did in the traces
        # built so far (see _learn_step_size).  One function, no helper: it runs for every
        # trace, under the lock.  try costs nothing until something raises (3.11+).
        # _admit_locked reads a tagged event's dict the same way, in place: keep the two in
        # step (test_a_tagged_event_counts_the_memory_its_dict_would compares them).
        fields: Any
        steps = 0
        held = 0
        try:
            if type(task) is dict:
                fields = task
            elif isinstance(task, PendingTrace):
                fields = task.basis
                steps = task.steps
                held = task.held
                if type(fields) is not dict:
                    size = steps * self._step_estimate + held
                    if isinstance(fields, TaskData):
                        return size + self._struct_estimate(fields)
                    return size + _BASE_ESTIMATE
            elif isinstance(task, TaskData):
                return self._struct_estimate(task)
            elif isinstance(task, Mapping):
                fields = task
            else:
                return -1
            listed = fields.get("steps")  # fields.get each time: no bound method to make
            if type(listed) is list or type(listed) is tuple:
                steps += len(listed)
            size = self._fixed_estimate + steps * self._step_estimate + held
            text = fields.get("input_summary")
            if type(text) is str:
                size += len(text)
            text = fields.get("output_summary")
            if type(text) is str:
                size += len(text)
        except Exception:  # a mapping whose get() fails, say: not a trace
            return -1
        return size

    def _struct_estimate(self, task: TaskData) -> int:
        size = _BASE_ESTIMATE + len(task.name) + len(task.description)
        if task.input_summary is not None:
            size += len(task.input_summary)
        if task.output_summary is not None:
            size += len(task.output_summary)
        if task.steps:
            size += len(task.steps) * self._step_estimate
        return size

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
                    )
                except Exception as exc:
                    self._spool_retry_at = time.monotonic() + _SPOOL_RETRY
                    self._spool_trouble(exc)
            return self._spool

    def _write_ahead(
        self, task: TaskData | Mapping[str, Any] | PendingTrace, captured: bytes | None = None
    ) -> tuple[RecordRef | None, bytes | None, int]:
        """Write a submitted trace to the spool: ``(record, encoded body or None, size)``.

        ``captured`` is the record of a captured trace (see :func:`_captured_record`).
        The size is exact for a TaskData and the record's size otherwise (a
        better guess than :meth:`_estimate`).  Never raises: a trace that
        cannot be written goes on in memory only.
        """
        body: bytes | None = None
        try:
            # Redacted before it touches the disk (a scan, nearly always all it costs).
            redactor = self._redactor
            if captured is not None:
                captured = redacted_record(redactor, captured, msgspec.msgpack.decode, _pack)
                payload, kind, size = captured, _KIND_CAPTURED, len(captured)
            elif isinstance(task, TaskData):
                raw = _encode(task)
                redacted = redactor.encoded(task, raw)
                body = raw if redacted is task else _encode(redacted)
                payload, kind, size = body, _KIND_BODY, len(body)
            else:
                # Lenient coercion stays on the sender thread; the record keeps the dict as
                # submitted, read back when the trace is taken up from the spool.
                kind, payload = _dict_record(task)
                payload = redacted_record(redactor, payload, *_RECORD_CODECS[kind])
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
                _quietly(spool.ack, ref)
            return False
        if spool is not None and _quietly(spool.release, ref):
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

    def _backlog_failed(self) -> None:
        """Back the spool's backlog off after a failed delivery (called with the lock held)."""
        self._backlog_failures += 1
        self._backlog_at = max(self._backlog_at, time.monotonic() + self._backlog_delay())

    def _backlog_delay(self) -> float:
        policy = self._policy
        ceiling = min(
            policy.backoff_max, policy.backoff_base * 2.0 ** min(self._backlog_failures, 64)
        )
        # Half fixed, half jitter: processes that failed together do not probe together,
        # and the wait still grows.
        return ceiling * (0.5 + 0.5 * random.random())

    def _spool_chore(self, now: float) -> str:
        """Spool work a sender thread should do now, outside the lock (lock held)."""
        if self._spool is None or self._final:
            return ""
        if not self._closed and not self._adopting and now >= self._next_adopt:
            self._adopting = True
            self._next_adopt = now + _ADOPT_INTERVAL
            return "adopt"
        if (
            self._spooled > 0
            and not self._refilling
            and now >= self._backlog_at
            and len(self._queue) <= self._max_items // 2
            and (self._deadline is None or now < self._deadline)
        ):
            self._refilling = True
            return "refill"
        return ""

    def _backlog_due_by(self, limit: float) -> bool:
        """Whether spooled records may be taken up before ``limit`` (lock held)."""
        return (
            self._spool is not None
            and not self._final
            and (self._refilling or (self._spooled > 0 and self._backlog_at < limit))
        )

    def _idle_wait(self, now: float) -> float | None:
        """How long an idle sender may sleep before spool work is due (lock held)."""
        if self._spool is None or self._final:
            return None
        due = []
        if not self._closed:
            due.append(self._next_adopt)
        if self._spooled > 0 and not self._refilling:
            due.append(self._backlog_at)
        if not due:
            return None
        return max(0.001, min(due) - now)

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
                    self._adopting = False
            return
        with self._lock:
            probing = self._backlog_failures > 0
            room = max(1, min(_REFILL_BATCH, self._max_items - len(self._queue)))
            byte_room = max(1, self._max_bytes - self._held_bytes)
        taken: list[tuple[RecordRef, int, bytes]] = []
        try:
            # While the endpoint keeps failing, one record probes it per backoff period.
            taken = spool.take_backlog(1 if probing else room, byte_room)
        except Exception:
            _log.debug("reading the spool's backlog failed", exc_info=True)
        items = [_backlog_item(ref, kind, payload) for ref, kind, payload in taken]
        with self._lock:
            self._refilling = False
            if self._final:
                return  # shutdown already counted these as left in the spool, where they are
            self._spooled -= len(items)
            for item in items:
                item.seq = self._seq
                self._seq += 1
                self._held_bytes += item.size
                self._queue.append(item)
            if probing or not items:
                self._backlog_at = time.monotonic() + self._backlog_delay()
            if self._idle:
                self._work.notify(max(1, len(items)))
            if self._waiters:
                self._settled_cond.notify_all()

    def _learn_step_size(self, task: TaskData, size: int) -> None:
        """Learn from a trace just encoded (``size`` bytes) what a step weighs, and what the
        part of a trace that submit does not count field by field weighs."""
        summaries = len(task.input_summary or "") + len(task.output_summary or "")
        rest = _BASE_ESTIMATE + len(task.name) + len(task.description)
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
                self._alive += len(threads)
            _ensure_exit_hooks()

    def _get_transport(self) -> Transport:
        transport = self._transport
        if transport is None:
            token = _EXPORTING.set(True)  # urllib3 logs while it builds the pool
            try:
                with self._start_lock:
                    if self._transport is None:
                        self._transport = Transport(self._settings)
                    transport = self._transport
            finally:
                _EXPORTING.reset(token)
        return transport

    # --- sender threads -----------------------------------------------------------------------

    def _run(self) -> None:
        _EXPORTING.set(True)  # for the whole of this thread
        try:
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
        finally:
            with self._lock:
                self._alive -= 1
                if self._waiters:
                    self._settled_cond.notify_all()

    def _take(self) -> _Item | None:
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
                        item = _as_item(self._queue.popleft())
                        self._in_flight.add(item)
                        item.starting = True
                        self._starting += 1
                        self._last_start = now
                        return item
                    if self._closed and not self._backlog_due_by(self._deadline or now):
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

    def _process(self, item: _Item) -> None:
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
                body = _encode(task)
            redacted = self._redactor.encoded(task, body)
            if redacted is not task:
                item.task = task = redacted
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
        if item.loose:
            item.body = body  # for _keep, should the trace stay in the spool
        self._deliver(item, body)

    def _deliver(self, item: _Item, body: bytes) -> None:
        if self._sample_rate < 1.0 and not sampled_in(body, self._sample_rate):
            self._sampled_away(item)
            return
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
                    # Waiting to retry: let another sender start a trace meanwhile.
                    self._started_request(item, waking=True)
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
        """The timeout of a request starting now: None before shutdown, <= 0 when too late."""
        deadline = self._deadline
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining < min(_LAST_REQUEST_WINDOW, self._settings.timeout):
            return 0.0
        return min(self._settings.timeout, remaining)

    def _auth_failed(self, item: _Item, error: InfiniumError) -> None:
        with self._lock:
            first = not self._auth_failing
            self._auth_failing = True
            self._auth_until = time.monotonic() + self._settings.auth_backoff
        self._settle(item, "auth", self._describe(error))
        if first and not self._closed:
            fate = (
                "kept in the spool for later"
                if self._spool is not None
                else "dropped (counted as 'auth')"
            )
            _log.error(
                "Infinium refused the agent credentials (HTTP %s): check INFINIUM_AGENT_ID and "
                "INFINIUM_AGENT_SECRET. Traces are %s and sending pauses for %g s before each "
                "new try.",
                error.status_code,
                fate,
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
            if self._backlog_failures:
                # The endpoint answers again: take the spool's backlog up at once.
                self._backlog_failures = 0
                self._backlog_at = 0.0
                if self._idle and self._spooled:
                    self._work.notify()
        if recovered and not self._closed:
            _log.info("Infinium accepted the agent credentials again; sending resumed")
        self._report(item, response)

    def _sampled_away(self, item: _Item) -> None:
        """Settle a trace ``sample_rate`` leaves out: counted apart from the losses."""
        self._ack(item)
        with self._lock:
            if item.settled:
                return
            self._mark_settled(item)
            self._sampled_out += 1
        self._report(item, _failure_response("sampled_out", None))

    def _settle(self, item: _Item, reason: str, error: str | None = None) -> bool:
        """Count a trace as lost for ``reason`` unless it is settled already; tell on_result.

        A trace with a spool record is kept there instead when ``reason`` is
        retryable later (:data:`_KEEP_REASONS`); one dropped for good is
        settled in the spool too.
        """
        ref = item.ref
        spool = self._spool
        if ref is not None and spool is not None and reason in _KEEP_REASONS:
            return self._keep(item, ref, spool, reason, error)
        self._ack(item)
        with self._lock:
            if item.settled:
                return False
            self._mark_settled(item)
            self._dropped[reason] += 1
            if error is not None:
                self._last_error = error
        self._report(item, _failure_response(reason, error))
        return True

    def _ack(self, item: _Item) -> None:
        """Settle a trace's spool record, before the trace counts as settled: whoever sees it
        settled (``flush()``, ``stats()``) must find its record settled too.  (Not under the
        lock: the spool calls its listener, which takes the lock, with its own lock held.)"""
        ref = item.ref
        spool = self._spool
        if ref is not None and spool is not None and not item.settled:
            _quietly(spool.ack, ref)

    def _keep(
        self, item: _Item, ref: RecordRef, spool: Spool, reason: str, error: str | None
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
                self._backlog_failed()
        if item.loose and item.body is not None:
            # Keep the exact wire body rather than the submitted dict: read back later, it is
            # sent as it is, without coercing (and counting the fixes) a second time.
            exact = _quietly(spool.append, item.body, _KIND_BODY)
            if exact is not None:
                _quietly(spool.ack, ref)
                ref = exact
        # At the shutdown deadline it is not handed back: this process will not try it again.
        kept = _quietly(spool.holds if reason == "shutdown" else spool.release, ref)
        if kept:
            return True
        with self._lock:
            self._spooled -= 1
            self._dropped["spool_full"] += 1
        self._report(item, _failure_response("spool_full", error))
        return True

    def _started_request(self, item: _Item, *, waking: bool) -> None:
        """``item`` is through its first request (or settled without one): another trace may
        be started (lock held).  ``waking`` when this sender will not take one itself soon."""
        if item.starting:
            item.starting = False
            self._starting -= 1
            if waking and self._pacing and self._queue:
                self._work.notify()

    def _mark_settled(self, item: _Item) -> None:
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

    def _report(self, item: _Item, response: ApiResponse) -> None:
        callback = self._on_result
        if callback is None:
            return
        token = _EXPORTING.set(True)
        # Called where a failure of ours is being handled: the callback's own exception would
        # be shown as raised while handling it, as if the library had failed first.
        handled = sys.exc_info()[1]
        try:
            task = item.task
            if isinstance(task, PendingTrace):  # settled before a sender built it
                task = _built(task)
            elif task is None and item.body is not None:  # a spooled wire body
                task = decode_task(item.body, strict=False)
            callback(task, response)
        except Exception as exc:
            if not self._callback_error_logged:
                self._callback_error_logged = True
                if handled is not None:
                    _unchain(exc, handled)
                _log.warning("the on_result callback raised (logged once)", exc_info=exc)
        finally:
            _EXPORTING.reset(token)

    def _report_lost(self, items: list[_Item], until: float) -> None:
        """Report the traces lost at shutdown to ``on_result`` until ``until`` at the latest.

        On a thread of their own, waited for until then: a callback that takes its time
        must not hold the shutdown (or the interpreter's exit) past its deadline.  Here, on
        this thread, when no thread can be started (at exit, Python 3.12+).
        """
        if self._on_result is None or not items:
            return

        def report() -> None:
            for item in items:
                if time.monotonic() > until:
                    break
                reason = "shutdown" if item.ref is None else "spool_full"
                self._report(item, _failure_response(reason, None))

        thread = threading.Thread(target=report, name="infinium-exporter-report", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            report()
            return
        thread.join(max(0.0, until - time.monotonic()))

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
        return redacted(text, (self._secret,))

    def _settled_before(self, target: int) -> bool:
        # Called with the lock held. Traces leave the queue in order, so the oldest unsettled
        # one is the queue's head or one of the (few) traces in flight.
        if self._queue and _seq_of(self._queue[0]) < target:
            return False
        return all(item.seq >= target for item in self._in_flight)

    # --- synchronous sends ------------------------------------------------------------------------

    def _call(self, request: Callable[[float | None], ApiResponse]) -> ApiResponse:
        """One request with the throttle and retry policy, on the caller's thread."""
        if self._finished.is_set():
            raise InfiniumError("the exporter is shut down")
        token = _EXPORTING.set(True)
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
            _EXPORTING.reset(token)

    def _replay_one(self, kind: int, payload: bytes) -> tuple[str, str | None]:
        """Send one spool record now: ``("sent" | "rejected" | "failed", error text)``."""
        try:
            if kind == _KIND_BODY:
                body = payload
            elif kind in _LOOSE_KINDS:
                problems: list[Problem] = []
                fields = _read_record(kind, payload)
                if isinstance(fields, PendingTrace):
                    fields = fields.materialize()
                task = to_task(fields, strict=False, problems=problems)
                if any(p.path == "" and p.action == "replaced" for p in problems):
                    return "rejected", "a spool record could not be read as a trace"
                body = _encode(self._redactor.task(task))
            else:
                return "rejected", f"a spool record of unknown kind {kind}"
        except Exception as exc:
            return "rejected", f"a spool record could not be read: {exc}"
        transport = self._get_transport()
        try:
            self._call(lambda timeout: transport.post_trace(body, timeout=timeout))
        except InfiniumError as error:
            verdict = "rejected" if classify(error) == "reject" else "failed"
            return verdict, self._describe(error)
        return "sent", None

    # --- shutdown ---------------------------------------------------------------------------------

    def _begin_shutdown(self, timeout: float) -> bool:
        """Close the door and set the deadline; False if a shutdown had already begun."""
        with self._lock:
            if self._shutdown_begun:
                return False
            self._shutdown_begun = True
            self._admit_locked()  # submitted before the door closed
            self._closed = True
            self._deadline = time.monotonic() + timeout
            self._work.notify_all()
        self._stopping.set()
        self._bucket.wake()
        return True

    def _send_here(self) -> None:
        """Send what waits from this thread, as a sender would, until the shutdown deadline.

        For when no sender thread runs at shutdown: none could be started (Python 3.12+
        refuses new threads once the interpreter is exiting, which is when a trace logged by
        an atexit handler or a task ended at exit arrives), or none was ever needed.
        """
        while (item := self._take()) is not None:
            try:
                self._process(item)
            except Exception as exc:  # as in _run: a bug costs one trace
                if self._settle(item, "invalid", f"internal error: {exc!r}"):
                    _log.exception("infinium_logging could not process a trace")

    def _finish_shutdown(self) -> bool:
        """Wait for the senders until the deadline, then count what is left as ``shutdown``
        (with a spool: leave it there for the next start)."""
        deadline = self._deadline if self._deadline is not None else time.monotonic()
        token = _EXPORTING.set(True)
        spool = self._spool
        try:
            if not self._alive and (self._queue or self._inbox):
                self._send_here()
            with self._lock:
                self._admit_locked()  # added while the door closed: counted as closed
                self._waiters += 1
                try:
                    while True:
                        now = time.monotonic()
                        remaining = deadline - now
                        if remaining <= 0:
                            break
                        if self._queue or self._in_flight or self._refilling:
                            wait = remaining  # every settle and refill notifies
                        elif self._alive and self._backlog_due_by(deadline):
                            # Spooled records a sender may still take up before the deadline.
                            wait = min(remaining, max(0.01, self._backlog_at - now))
                        else:
                            break
                        self._settled_cond.wait(wait)
                finally:
                    self._waiters -= 1
                self._final = True
                stuck = bool(self._in_flight)
                left = [_as_item(entry) for entry in self._queue]
                left += sorted(self._in_flight, key=lambda i: i.seq)
                self._queue.clear()
                lost: list[_Item] = []
                kept: list[_Item] = []
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
            gone = [item for item in kept if not _quietly(spool.holds, item.ref)] if spool else []
            with self._lock:
                if gone:
                    self._spooled -= len(gone)
                    self._dropped["spool_full"] += len(gone)
                news = self._warner.news(self._dropped, force=True)
                spooled = self._spooled
            self._finished.set()
            self._bucket.wake()
            self._report_lost(lost + gone, deadline + _REPORT_GRACE)
            if not stuck:
                # Idle senders exit at once; a sender stuck in a request is a daemon thread
                # and is left behind (its late answer is ignored: the trace is settled).
                join_by = time.monotonic() + _JOIN_GRACE
                for thread in self._threads:
                    thread.join(max(0.0, join_by - time.monotonic()))
            transport = self._transport
            if transport is not None:
                transport.clear()
            if spool is not None:
                # Unlocks the segments: the next start (or another process) adopts what is left.
                _quietly(spool.close)
            if news:
                _log.warning(
                    "infinium_logging dropped %d trace(s) since the last report: %s",
                    sum(news.values()),
                    _describe_counts(news),
                )
            if spooled and spool is not None:
                _log.info(
                    "infinium_logging left %d trace(s) in the spool (%s) for the next start",
                    spooled,
                    spool.root,
                )
            return self._dropped["shutdown"] == 0
        finally:
            _EXPORTING.reset(token)


def _built(task: PendingTrace) -> TaskData | dict[str, Any] | None:
    """A captured trace built now (off a sender thread), or None when it cannot be."""
    try:
        return task.materialize()
    except Exception:
        _log.debug("a captured trace could not be built", exc_info=True)
        return None


def _encode(task: TaskData) -> bytes:
    """The wire body of a trace, shrunk to the platform's limit when needed."""
    try:
        body = encode_task(task)
        if len(body) > MAX_BODY_BYTES:
            body = encode_task(fit_task(task))
    except ValueError as exc:  # nested too deeply, an int too long for text
        raise ValidationError(str(exc)) from None
    if len(body) > MAX_BODY_BYTES:
        raise ValidationError(f"the trace is {len(body)} bytes even after shrinking")
    return body


def _as_trace(task: Any) -> Any:
    """``task``, or the fields of the official client's TaskData (a dataclass) as a dict,
    read as a dict of TaskData fields is (its nested dataclasses included)."""
    if type(task) is dict or isinstance(task, (TaskData, Mapping)):
        return task
    if dataclasses.is_dataclass(task) and not isinstance(task, type):
        return _object_fields(task)
    return task


def _json_default(value: Any) -> Any:
    """What a type msgspec cannot encode becomes in a spool record: what json_safe makes of it."""
    return json_safe(value, max_string=MAX_BODY_BYTES)


_pack: Final = msgspec.msgpack.Encoder(enc_hook=_json_default).encode


def _dict_record(task: Any) -> tuple[int, bytes]:
    """The spool record of a submitted dict, ``(kind, payload)``: what lenient coercion will
    read in it, read back after a restart.

    msgspec encodes it on the caller's thread at C speed (json_safe's walk would cost several
    times more), as MessagePack: it costs little more than half of JSON here, and bytes, NaN
    and non-string keys come back as they were, so the trace read back is the one memory
    would have sent (a timezone-aware datetime comes back as the same instant in UTC).  What
    MessagePack cannot hold as it is (an int past 64 bits, a lone surrogate, a cycle) is
    written as JSON of its json_safe copy.  A record is rewritten with the exact wire body
    when a sender keeps it for later.
    """
    try:
        payload = _pack(task)
    except Exception:  # not encodable as it is: json_safe copes
        payload = None
    if payload is not None and len(payload) <= MAX_BODY_BYTES:
        return _KIND_DICT, payload
    # A string longer than the body limit could never be sent whole: none is kept longer.
    return _KIND_DICT_JSON, msgspec.json.encode(json_safe(task, max_string=MAX_BODY_BYTES))


#: How a record of each loose kind is read and written again once redacted.
_RECORD_CODECS: Final[dict[int, tuple[Callable[[bytes], Any], Callable[[Any], bytes]]]] = {
    _KIND_DICT: (msgspec.msgpack.decode, _pack),
    _KIND_DICT_JSON: (msgspec.json.decode, msgspec.json.encode),
}


def _captured_record(task: PendingTrace) -> bytes | None:
    """The spool record of a captured trace, kept as captured (``_KIND_CAPTURED``), or None
    when it has no such form or MessagePack cannot hold it: it is then built first.

    Building the trace on the caller's thread only to encode it would cost as much as the
    rest of the write; the sender thread builds it, as it does without a spool.
    """
    try:
        form = task.spool_form()
        if form is None:
            return None
        payload = _pack(form)
    except Exception:  # an int past 64 bits, a lone surrogate: the built trace copes
        return None
    return payload if len(payload) <= MAX_BODY_BYTES else None


def _read_record(kind: int, payload: bytes) -> Any:
    """What a record of one of the ``_LOOSE_KINDS`` holds: a submitted dict, or (for
    ``_KIND_CAPTURED``) a PendingTrace to build; ``msgspec.DecodeError`` when it is damaged."""
    if kind == _KIND_DICT:
        return msgspec.msgpack.decode(payload)
    if kind == _KIND_CAPTURED:
        try:
            return TaggedTrace.from_spool_form(msgspec.msgpack.decode(payload))
        except ValueError as exc:
            raise msgspec.DecodeError(str(exc)) from None
    return msgspec.json.decode(payload)


def _backlog_item(ref: RecordRef, kind: int, payload: bytes) -> _Item:
    """A trace taken up from the spool (its ``seq`` is set when it is queued)."""
    if kind == _KIND_BODY:
        return _Item(None, 0, len(payload), payload, ref)
    task: Any = None  # an unknown kind or an undecodable dict: the sender counts it as invalid
    if kind in _LOOSE_KINDS:
        try:
            task = _read_record(kind, payload)
        except msgspec.DecodeError:
            task = None
    return _Item(task, 0, len(payload), None, ref, True)


_T = TypeVar("_T")


def _quietly(function: Callable[..., _T], *args: Any) -> _T | None:
    """Call a spool method where a failure must cost at most durability, never the caller."""
    try:
        return function(*args)
    except Exception:
        _log.debug("spool operation %s failed", getattr(function, "__name__", "?"), exc_info=True)
        return None


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


# --- replaying a spool now ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReplayReport:
    """What :func:`replay_spool` did with an agent's pending spool records."""

    #: Records taken over from the spool (no live process held them).
    found: int
    #: Delivered: the platform accepted them (removed from the spool).
    sent: int
    #: Refused for good by the platform, or unreadable (removed from the spool).
    rejected: int
    #: Not delivered now (the endpoint kept failing, or refused the credentials): still in
    #: the spool for a later replay or the agent's next start.
    failed: int
    #: Records that live processes hold: left to them.
    busy: int
    #: The last failure, as text (never containing the secret).
    last_error: str | None = None


def replay_spool(
    settings: Settings, *, progress: Callable[[int, int], object] | None = None
) -> ReplayReport:
    """Adopt the spool records that no live process holds for ``settings.agent_id`` and send
    them now, ``settings.workers`` at a time, through the throttle and retry policy.

    ``progress(done, total)`` is called after each record.  Delivered and
    rejected records are removed from the spool; at the first record that
    still fails after its retries (an outage, refused credentials) the replay
    stops and leaves the rest where they are.  Raises
    :class:`~infinium_logging.errors.ConfigurationError` without a
    ``spool_dir`` and ``OSError`` when the directory cannot be used.
    """
    if settings.spool_dir is None:
        raise ConfigurationError(
            "no spool directory: set INFINIUM_SPOOL_DIR or pass spool_dir", variable="spool_dir"
        )
    busy = sum(
        found.live_records
        for found in survey(settings.spool_dir)
        if found.agent_id == settings.agent_id
    )
    spool = Spool(
        settings.spool_dir,
        settings.agent_id,
        max_bytes=settings.spool_max_bytes,
        fsync=settings.spool_fsync,
    )
    sender = Exporter(settings.replace(spool_dir=None))
    total = spool.backlog_size()
    lock = threading.Lock()
    counts = {"sent": 0, "rejected": 0, "failed": 0}
    errors: list[str] = []
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            taken = spool.take_backlog(1)
            if not taken:
                return
            ref, kind, payload = taken[0]
            outcome, error = sender._replay_one(kind, payload)
            if outcome == "failed":
                stop.set()  # the record stays in the spool, and so do the ones after it
            else:
                spool.ack(ref)
            with lock:
                counts[outcome] += 1
                if error is not None:
                    errors.append(error)
                if progress is not None:
                    progress(sum(counts.values()), total)

    try:
        threads = min(settings.workers, total)
        if threads <= 1:
            work()
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="infinium-replay") as pool:
                for future in [pool.submit(work) for _ in range(threads)]:
                    future.result()
    finally:
        sender.shutdown(0)
        spool.close()
    return ReplayReport(
        found=total,
        sent=counts["sent"],
        rejected=counts["rejected"],
        failed=total - counts["sent"] - counts["rejected"],
        busy=busy,
        last_error=errors[-1] if errors else None,
    )


# --- process-wide hooks: exit and fork ---------------------------------------------------------


def _unchain(error: BaseException, handled: BaseException) -> None:
    """Hide ``handled`` from the chain ``error`` is shown with (it was raised while ``handled``
    was being handled, by no fault of its own); its other links stay."""
    link: BaseException | None = error
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if link.__context__ is handled:
            link.__suppress_context__ = True
            return
        link = link.__cause__ if link.__cause__ is not None else link.__context__


def _shutdown_all_at_exit() -> None:
    """Shut every exporter down, each within its own ``shutdown_timeout``, in parallel."""
    for hook in list(before_exit):
        try:
            hook()
        except Exception:  # exit goes on, whatever happens to one hook
            _log.debug("exit hook failed", exc_info=True)
    # Not only started ones: a trace submitted during interpreter shutdown (an atexit handler
    # that logs) finds no sender thread, and none can be started any more (Python 3.12+).
    exporters = [
        e for e in list(_LIVE) if not e._shutdown_begun and (e._started or e._queue or e._inbox)
    ]
    begun = [
        e
        for e in exporters
        if e._begin_shutdown(0.0 if e._stuck_since_flush() else e.settings.shutdown_timeout)
    ]
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

# Registered now, not when the first exporter starts: atexit runs handlers last registered
# first, so an application's own handlers (registered after importing this) still log and
# submit before the exporters shut down; and one registered during exit would never run.
_ensure_exit_hooks()
