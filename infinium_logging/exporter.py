"""The Exporter: the façade that wires admission, the ledger, the workers and delivery.

It calls one way: admission.py takes submitted traces into the ledger's queue (ledger.py
keeps every count), dispatch.py hands them to the threads of workers.py, sending.py builds,
encodes and delivers each through delivery.py and a Destination and settles it once,
writeahead.py keeps the spool, closing.py ends a shutdown, results.py tells on_result,
lifecycle.py shuts it down at exit and resets it after fork, client.py is its synchronous API.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from . import lifecycle, signals, spill
from ._logsetup import setup_logging
from .admission import INBOX_BATCH, Admission, as_trace
from .client import ApiCalls, ApiClient, OfficialTask
from .closing import ShutsDown
from .credentials import settings_or_off
from .delivery import Deadline
from .destination import Destination
from .destination_infinium import InfiniumDestination
from .dispatch import Dispatch
from .durability import replay_spool
from .guard import EXPORTING
from .lanes import lanes_of, tags_of, wire, with_every_secret
from .ledger import ExporterStats, Ledger
from .model import TaskData
from .queued import PendingTrace
from .redact import Redactor
from .results import OnResult, Reporter
from .retry import RetryPolicy
from .settings import Settings
from .throttle import TokenBucket
from .transport import redacted
from .writeahead import WriteAhead

__all__ = ["Exporter", "OfficialTask"]


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


def _settings_of(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """An exporter's settings: ``settings`` with ``overrides``, or the environment's."""
    if settings is None:
        return settings_or_off(**overrides)
    if not isinstance(settings, Settings):
        # Exporter(agent_id, ...) as the official client is made: say how it is done here.
        raise TypeError(
            f"Exporter() takes a Settings or keyword arguments (agent_id=..., "
            f"agent_secret=..., ...), not a {type(settings).__name__} as its first argument"
        )
    return settings.replace(**overrides) if overrides else settings


# --- the exporter ---------------------------------------------------------------------------------


class Exporter(ApiCalls, ShutsDown):
    """Delivers traces to Infinium in the background, one POST per trace.

    ``submit`` takes a trace from any thread in about a microsecond (tens of
    microseconds with a spool) and never blocks, raises or touches the
    network; ``settings.workers`` daemon threads (started on the first
    submit) build, encode and send.  The buffer is bounded by
    ``max_queue_size`` traces and ``max_queue_bytes`` bytes of memory (as
    estimated while a trace waits; its encoded size once a sender has it);
    requests pass a token bucket shared by all threads; failures are retried
    with jittered backoff as the :class:`~infinium_logging.retry.RetryPolicy`
    says; senders take turns against a fast server (see :class:`.workers.Pacing`).
    ``flush`` and ``shutdown`` never wait past their deadline, and interpreter
    exit calls ``shutdown(settings.shutdown_timeout)``.

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

    ``destinations`` (default: Infinium's, in ``settings``): batched where they take many
    records per request (:mod:`.batching`); of several endpoints, each gets a lane of its
    own, and the top-level counts and ``on_result`` follow the first (:mod:`.lanes`).

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
        destinations: Sequence[Destination] | None = None,
        redactor: Redactor | None = None,
        **overrides: Any,
    ) -> None:
        settings = _settings_of(settings, overrides)
        if on_result is not None and not callable(on_result):
            raise TypeError("on_result must be callable")
        self._settings = settings
        self._given = tuple(destinations or ())
        #: The destinations by endpoint (see :mod:`.lanes`); empty: Infinium's alone.
        self._groups = lanes_of(settings, self._given)
        self._disabled = settings.disabled
        self._on_result = on_result
        self._policy = RetryPolicy.from_settings(settings)
        #: Every trace is redacted before it is spooled or sent: the disk never holds a secret.
        self._redactor = redactor = with_every_secret(
            redactor or Redactor.from_settings(settings), self._groups
        )
        # Lambdas: a forked child gets a new delivery and deadline.
        finished = lambda: self._until.finished.is_set()  # noqa: E731, PLW0108
        self._client = ApiClient(settings, lambda: self._senders.first, finished, redactor=redactor)
        #: Any text the exporter logs passes here: the secret never appears in it.
        self._clean = functools.partial(redacted, secrets=(settings.agent_secret,))
        if settings.enable_logging:
            setup_logging(settings.log_level)
        # The spool outlives a fork (the child writes segments of its own), so it is not
        # part of _init_state.
        self._durable = (
            None
            if settings.disabled or settings.spool_dir is None
            else WriteAhead(settings, self._policy, lambda: self._closed, self._clean, redactor)
        )
        if self._durable is not None and len(self._groups) > 1:
            self._durable.set_lanes(*tags_of(self._groups))
        #: Whether submit may take its shortest path (no spool to write first, not disabled).
        self._light = self._durable is None and not settings.disabled
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
        #: The shutdown deadline, and the events that wake sleepers when it is set or met.
        self._until = Deadline()
        self._closed = False
        self._shutdown_begun = False
        self._reporter = Reporter(self._on_result)
        self._dispatch = dispatch = Dispatch(
            self._admission, self._durable, self._until, lambda: self._closed
        )
        self._admit_locked = dispatch.admit_locked
        if self._durable is not None:
            self._durable.reset(self._admission, dispatch.wake, self._reporter)
        self._bucket = TokenBucket.from_settings(settings)
        # A new pool too: the parent's connections are the parent's.
        groups = self._groups or [(settings, [InfiniumDestination(settings)])]
        self._senders, self._lanes, self._closing = wire(
            settings,
            dispatch,
            groups,
            bucket=self._bucket,
            reporter=self._reporter,
            redactor=self._redactor,
            owner=self,
            durable=self._durable,
        )
        self._workers = self._senders.workers

    def _reset_after_fork(self) -> None:
        # The child owns none of the parent's traces (they are the parent's to deliver: no
        # duplicates), none of its threads, and no lock a parent thread may have held.
        was_closed = self._closed
        for destination in self._given:
            destination.close()
        self._init_state()
        if was_closed:
            self._closed = self._shutdown_begun = True
            self._until.finished.set()
        if self._durable is not None:
            self._durable.after_fork()

    def __repr__(self) -> str:
        state = "running" if self._workers.started else "idle"
        if self._closed:
            state = "shut down" if self._until.finished.is_set() else "shutting down"
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
                # into the inbox, without a lock, admitted in batches (see INBOX_BATCH).
                inbox = self._inbox
                inbox.append(task)
                dispatch = self._dispatch
                if (
                    len(inbox) >= INBOX_BATCH
                    or (dispatch.idle and not dispatch.waking)
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
        """``submit`` with a spool to write first, or disabled."""
        if not isinstance(task, PendingTrace):
            task = as_trace(task)
        durable = self._durable
        if durable is None:  # disabled
            return self._ledger.refused("closed" if self._closed else "disabled")
        accepted = durable.submit(task, keep_task=self._on_result is not None)
        if accepted and not self._workers.started:
            self._start_workers()
        return accepted

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
            self._dispatch.work.notify_all()  # a batch waiting to fill goes now
        if idle:  # traces left in the inbox by a submit that could not admit them (see _admit)
            self._start_workers()
        here = EXPORTING.get()
        with self._lock:
            if here:
                done = ledger.settled_before_locked(target)
            else:
                patient = limit >= self._settings.shutdown_timeout
                done = ledger.wait_flushed(target, deadline, limit if patient else None)
        if self._lanes is not None:  # the traces waited for above were handed to them
            done = self._lanes.flush(deadline, here) and done
        return done

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
        limit = self._limit(timeout)
        if not self._begin_shutdown(limit):
            # Someone else is shutting down: wait for them, within our own timeout.
            if not EXPORTING.get():
                self._until.finished.wait(limit)
            return self._until.finished.is_set() and self._ledger.dropped["shutdown"] == 0
        if EXPORTING.get():
            # Called from a sender thread (on_result): waiting here would wait for ourselves.
            return False
        return self._finish_shutdown()

    def _stuck_since_flush(self) -> bool:
        """See :meth:`~infinium_logging.ledger.Ledger.stuck_since_flush_locked`."""
        with self._lock:
            self._admit_locked()
            return self._ledger.stuck_since_flush_locked()

    def _limit(self, timeout: float | None) -> float:
        """A shutdown's time: ``timeout``, else ``shutdown_timeout`` (none after a stuck flush)."""
        if timeout is not None:
            return max(0.0, timeout)
        return 0.0 if self._stuck_since_flush() else self._settings.shutdown_timeout

    def stats(self) -> ExporterStats:
        """A consistent snapshot of the counters (the ``spool_*`` figures are the spool's own,
        read just before)."""
        spool = self._durable.spool if self._durable is not None else None
        # Read before taking our lock: the spool calls into the exporter with its own lock held.
        held = spool.stats() if spool is not None else None
        lanes = self._lanes
        # Lanes first, under their own locks: their counts are a moment older.
        others = lanes.stats() if lanes is not None else {}
        with self._lock:
            self._admit_locked()
            each = {**self._senders.stats_locked(), **others}
            snapshot = self._ledger.snapshot_locked(held, self._redactor.counts(), each)
        return lanes.amend(snapshot) if lanes is not None else snapshot

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

    def _start_workers(self) -> None:
        if self._workers.start(lambda: self._closed):
            lifecycle.ensure_exit_hooks()

    # --- shutdown ---------------------------------------------------------------------------------

    def _exit_pending(self) -> bool:
        """Whether exit must shut this down (see :mod:`~infinium_logging.lifecycle`)."""
        return not self._shutdown_begun and bool(
            self._workers.started or self._queue or self._inbox
        )

    def _begin_exit(self) -> bool:
        """Begin the shutdown at exit, within ``shutdown_timeout`` (none after a stuck flush)."""
        return self._begin_shutdown(self._limit(None))

    def _begin_shutdown(self, timeout: float) -> bool:
        """Close the door and set the deadline; False if a shutdown had already begun."""
        with self._lock:
            if self._shutdown_begun:
                return False
            self._shutdown_begun = True
            self._admit_locked()  # submitted before the door closed
            self._closed = True
            self._until.at = at = time.monotonic() + timeout
            self._dispatch.work.notify_all()
        self._until.stopping.set()
        self._bucket.wake()
        if self._lanes is not None:
            self._lanes.begin_shutdown(at)
        return True

    def _finish_shutdown(self) -> bool:
        """Wait for the senders until the deadline, then count what is left as ``shutdown``
        (with a spool: leave it there for the next start)."""
        return self._closing.finish()
