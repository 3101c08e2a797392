"""Task state: what one running task has collected, and how its steps and usage become one trace.

The active task lives in a ``ContextVar`` (``_current``); ``open_tasks`` holds the tasks of
this process that have not finished (weakly: an abandoned one can still be collected and
is then exported at the next safe point, see ``drain_deferred``).
"""

from __future__ import annotations

import collections
import contextvars
import threading
import time
import weakref
from typing import Any, Final

from . import _default, lifecycle
from ._default import Options, TaskSink
from .convert import MAX_DESCRIPTION_LENGTH
from .errorinfo import ErrorInfo, error_from_exc_info
from .fields import RawEvent
from .sanitise import truncate
from .settings import disabled_in_environment
from .steps import event_step
from .task_trace import TaskTrace, fallback_options
from .usage import Usage

__all__ = [
    "Recorder",
    "active_state",
    "add_recorder_source",
    "drain_deferred",
    "open_tasks",
    "remove_recorder_source",
]

#: The task that events of the current context belong to.
_current: Final[contextvars.ContextVar[_TaskState | None]] = contextvars.ContextVar(
    "infinium_logging_task", default=None
)

#: The tasks of this process that have not finished, by id.  While it is empty no context
#: can have a running task, so an untagged event needs no look at ``_current``: the handler
#: and processor test it first (a dict's truth is cheaper than a context variable's
#: ``get()``, and every untagged event pays for one of the two).  Added to and removed from
#: in single calls, so no lock; weak references, so that an abandoned task can still be
#: collected (see ``_TaskState.__del__``) and one still open at exit can be ended then.
open_tasks: Final[dict[int, weakref.ref[_TaskState]]] = {}


#: The InfiniumHandlers and InfiniumProcessors alive, by id (held weakly), each with a
#: ``_task_recorder()``: a task that no event bound to one of them is sent where they all send,
#: when that is one place (see _TaskState._resolve_sink).  A dict of weak references, as
#: open_tasks: its values are copied in one step that another thread cannot interleave with
#: (iterating a WeakSet fails when another thread adds to it meanwhile).
recorder_sources: Final[dict[int, weakref.ref[Any]]] = {}


def add_recorder_source(source: object) -> None:
    """Count ``source`` (a handler or processor) among recorder_sources while it lives."""
    key = id(source)
    recorder_sources[key] = weakref.ref(source, lambda _: recorder_sources.pop(key, None))


def remove_recorder_source(source: object) -> None:
    """No longer count ``source`` (a handler closed)."""
    recorder_sources.pop(id(source), None)


def _sole_recorder() -> Recorder | None:
    """The recorder of the handlers and processors alive when they all send to one place."""
    found: Recorder | None = None
    for ref in list(recorder_sources.values()):
        source = ref()
        if source is None:
            continue
        recorder = source._task_recorder()
        if recorder is None:
            continue
        if found is not None and recorder.sink is not found.sink:
            return None
        found = recorder
    return found


class Recorder:
    """Who records a task's steps: where its trace then goes and how it is described.

    The first recorder of a task binds it (its sink, options, framework); a
    handler or processor keeps one per options object it uses.
    """

    __slots__ = ("framework", "framework_version", "options", "sink")

    def __init__(
        self,
        sink: TaskSink | None,
        options: Options,
        framework: str,
        framework_version: str | None = None,
    ) -> None:
        self.sink = sink
        self.options = options
        self.framework = framework
        self.framework_version = framework_version


def _now() -> float:
    return time.time()


def _monotonic() -> float:
    return time.monotonic()


class _TaskState:
    """Everything one running task has collected; guarded by its own lock (threads may share it)."""

    __slots__ = (
        "__weakref__",
        "bound",
        "error_keys",
        "errors",
        "events",
        "explicit",
        "fields",
        "finished",
        "framework",
        "framework_version",
        "last_event",
        "limit",
        "lock",
        "logger_name",
        "max_steps",
        "omitted",
        "options",
        "parent",
        "sink",
        "start_mono",
        "start_wall",
        "usage",
    )

    def __init__(
        self,
        fields: dict[str, Any],
        exporter: TaskSink | None,
        max_steps: int | None,
        parent: _TaskState | None,
    ) -> None:
        self.fields = fields
        self.explicit = exporter
        self.max_steps = max_steps
        #: max_steps once known (binding fixes it); 0 until then sends every step through add().
        self.limit = max_steps or 0
        self.parent = parent
        # Reentrant, as logging's handler locks are: a __del__ run by the garbage collector
        # or a signal handler may log into the task while this thread holds it.
        self.lock = threading.RLock()
        #: The steps, as captured: raw events, or steps already built (a nested task's).
        self.events: list[RawEvent | dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.error_keys: dict[tuple[int, str, str], dict[str, Any]] = {}
        self.omitted = 0
        #: LLM calls of the events left out past max_steps (they still count in llm_usage).
        self.usage: Usage | None = None
        self.finished = False
        self.bound = False
        self.sink: TaskSink | None = None
        self.options: Options | None = None
        self.framework: str | None = None
        self.framework_version: str | None = None
        self.logger_name: str | None = None
        self.last_event: object = None
        self.start_wall = _now()
        self.start_mono = _monotonic()
        open_tasks[id(self)] = weakref.ref(self)

    # --- recording ---------------------------------------------------------------------------

    def _bind(
        self,
        sink: TaskSink | None,
        options: Options,
        framework: str | None,
        framework_version: str | None,
        logger_name: str | None,
    ) -> None:
        self.sink = sink
        self.options = options
        self.framework = framework
        self.framework_version = framework_version
        self.logger_name = logger_name
        if self.max_steps is None:
            self.max_steps = options.max_steps
        self.limit = self.max_steps
        self.bound = True  # last: record() reads the rest without the lock once this is set

    def _limit(self) -> int:
        if self.max_steps is None:
            options = self.options or fallback_options(self.explicit or self.sink)
            self.max_steps = options.max_steps
            self.limit = self.max_steps
        return self.max_steps

    def add(self, event: RawEvent | dict[str, Any], error: ErrorInfo | None) -> None:
        """Add one step (the caller holds the lock and has bound the task)."""
        limit = self._limit()
        if error is not None and len(self.errors) < limit:
            self.errors.append(error.detail)
            if error.key is not None:
                self.error_keys[error.key] = error.detail
        if len(self.events) < limit:
            self.events.append(event)
            return
        self.omitted += 1
        # Left out, but its LLM call still counts: built now (past max_steps only), so
        # that what is kept of it stays bounded.
        if isinstance(event, dict):
            step = event
        elif "llm_call" in event[2]:
            step = event_step(event)
        else:
            return
        call = step.get("llm_call")
        if call is not None:
            usage = self.usage
            if usage is None:
                usage = self.usage = Usage()
            usage.add(call, step.get("metadata"), len(usage.calls) < limit)

    def record(
        self,
        event: RawEvent,
        error: ErrorInfo | None,
        recorder: Recorder,
        logger_name: str | None,
        ident: object = None,
    ) -> bool:
        """Add the step of one event; ``False`` when it was not added (task over, or a duplicate).

        ``ident`` identifies the LogRecord the step comes from (equal only for
        the same record): two handlers that see the same record add it once.
        """
        # The common case (bound, no error, room left) takes no lock: list.append is atomic,
        # so at worst an event logged by another thread while the task ends joins the trace
        # (it was logged as it ended), or threads racing for the last free places add a step
        # or two past max_steps, which the trace counts as left out when it is built.  The
        # rest (binding, errors, overflow) is serialised by the lock.
        if error is None and self.bound and not self.finished:
            events = self.events
            if len(events) < self.limit:
                if ident is not None:
                    if ident == self.last_event:
                        return False
                    self.last_event = ident
                events.append(event)
                return True
        # ``with``, not acquire() then try: an exception raised by a signal handler between
        # the two (sys.exit on SIGTERM) would leave the lock held, and the task's exit hung.
        with self.lock:
            if self.finished:
                return False
            if ident is not None:
                if ident == self.last_event:
                    return False
                self.last_event = ident
            if not self.bound:
                self._bind(
                    recorder.sink,
                    recorder.options,
                    recorder.framework,
                    recorder.framework_version,
                    logger_name,
                )
            events = self.events
            if error is None and len(events) < self.limit:
                events.append(event)  # the common case, inline
            else:
                self.add(event, error)
        return True

    # --- finishing ---------------------------------------------------------------------------

    def finish(
        self,
        exc: BaseException | None,
        *,
        abandoned: str = "",
        end_mono: float | None = None,
    ) -> None:
        """End the task: build its trace, hand it over once, and report it to the parent task.

        ``abandoned`` says why a task that was never exited ends (its TaskAbandoned error).
        """
        if end_mono is None:
            end_mono = _monotonic()
        if isinstance(exc, SystemExit) and (
            exc.code is None or (type(exc.code) in (int, bool) and exc.code == 0)
        ):
            exc = None  # sys.exit(0) in the task: the program ends as it should, no failure
        with self.lock:
            if self.finished:
                return
            self.finished = True
        open_tasks.pop(id(self), None)
        elapsed = max(0.0, end_mono - self.start_mono)
        failure: dict[str, Any] | None = None
        failure_key: tuple[int, str, str] | None = None
        if exc is not None:
            info = error_from_exc_info(exc)
            if info is not None:
                failure_key = info.key
                failure = self.error_keys.get(failure_key) if failure_key is not None else None
                if failure is None:
                    failure = info.detail
                    self.errors.append(failure)
                failure["recoverable"] = False
        elif abandoned:
            failure = {
                "error_type": "TaskAbandoned",
                "message": abandoned,
                "recoverable": False,
            }
            self.errors.append(failure)
        else:
            for detail in self.errors:
                detail["recoverable"] = True
        try:
            sink = self._resolve_sink()  # first: it may bind the task, which the trace reads
        except Exception:  # a task's end must not fail the code it wraps
            sink = None
        trace = TaskTrace(self, elapsed)
        try:
            if sink is None or not self._disabled_for(sink):
                _default.deliver(sink, trace)
        except Exception as error:
            _default.warn_once(
                "task-export", "infinium_logging: a task's trace could not be exported: %r", error
            )
        parent = self.parent
        if parent is not None:
            outcome = "abandoned" if abandoned else ("error" if failure is not None else "success")
            self._report_to(parent, elapsed, outcome, failure, failure_key)

    def _disabled_for(self, sink: TaskSink) -> bool:
        """Whether ``INFINIUM_DISABLED`` keeps this trace from a sink of the caller's own, as
        it keeps a handler or processor sending there from recording (an Exporter says so
        itself, from its own settings; a capture takes everything)."""
        if _default._capture is not None or type(sink) in _default._PENDING_SINKS:
            return False
        options = self.options  # bound, or described by the sole recorder (_resolve_sink)
        if options is None:
            try:
                options = _default.options_for(sink, {})
            except Exception:  # bad settings are reported where they are configured; the
                return disabled_in_environment()  # off switch still holds (-W error, say)
        return options.disabled

    def _resolve_sink(self) -> TaskSink | None:
        """Where the trace goes: the task's own exporter, else where its first event was
        recorded, else its parent's; else (nothing logged in it: cancelled or failed before
        its first event, or only update()) where the process's handlers and processors all
        send, when that is one place; else the default exporter (None)."""
        state: _TaskState | None = self
        while state is not None:
            if state.explicit is not None:
                return state.explicit
            if state.bound:
                return state.sink
            state = state.parent
        recorder = _sole_recorder()
        if recorder is None:
            return None
        # Described as that recorder would, not bound to it: binding would bind the parent
        # (see _report_to), which takes its framework and logger from its own first event.
        with self.lock:
            if not self.bound:
                self.options = recorder.options
                self.framework = recorder.framework
                self.framework_version = recorder.framework_version
        return recorder.sink

    def _report_to(
        self,
        parent: _TaskState,
        elapsed: float,
        outcome: str,
        failure: dict[str, Any] | None,
        failure_key: tuple[int, str, str] | None,
    ) -> None:
        name = str(self.fields.get("name") or "unnamed task")
        step: dict[str, Any] = {
            "action": "subtask",
            "description": truncate(name, MAX_DESCRIPTION_LENGTH),
            "duration_ms": round(elapsed * 1000),
            "metadata": {"task": name, "outcome": outcome, "steps": len(self.events)},
        }
        error: ErrorInfo | None = None
        if failure is not None:
            detail = {key: value for key, value in failure.items() if key != "stack_trace"}
            step["error"] = detail
            error = ErrorInfo(detail, failure_key)
        with parent.lock:
            if parent.finished:
                return
            if not parent.bound and self.bound and self.options is not None:
                parent._bind(
                    self.sink,
                    self.options,
                    self.framework,
                    self.framework_version,
                    self.logger_name,
                )
            parent.add(step, error)

    def __del__(self) -> None:
        # Entered and never exited (an abandoned context manager): export what it
        # has rather than lose it.  Not from here, though: a finalizer runs
        # wherever the garbage collector happens to run, possibly while this very
        # thread holds a lock the export needs.  Queue it for the next safe point.
        try:
            if not self.finished:
                _deferred.append((self, None, _monotonic()))
        except Exception:  # noqa: S110 - at interpreter exit module globals may be gone already
            pass


#: Tasks whose end arrived where exporting could deadlock (a finalizer, a generator
#: being closed): ``(state, exception, end time)``, exported at the next safe point.
_deferred: Final[collections.deque[tuple[_TaskState, BaseException | None, float]]] = (
    collections.deque()
)


def drain_deferred() -> None:
    """Export tasks that ended where exporting was not safe (called at safe points)."""
    while _deferred:
        try:
            state, exc, end = _deferred.popleft()
        except IndexError:  # another thread took the last one
            return
        try:
            reason = "" if exc is not None else "the task was garbage-collected without ending"
            state.finish(exc, abandoned=reason, end_mono=end)
        except Exception as error:
            _default.warn_once("task-finish", "infinium_logging: task failed to finish: %r", error)


def _end_open_tasks_at_exit() -> None:
    """End every task still open at exit (entered and never exited) as abandoned, innermost
    first, so that its trace is among what the exporters send before the process ends."""
    drain_deferred()
    for ref in reversed(list(open_tasks.values())):
        state = ref()
        if state is not None and not state.finished:
            state.finish(None, abandoned="the task was still open when the process exited")


lifecycle.on_exit(_end_open_tasks_at_exit)
lifecycle.on_flush(drain_deferred)


def _after_fork_in_child() -> None:
    # The tasks open at fork() are the parent's, which ends and sends them: in the child they
    # are over (what it logs inside one is not a step of it, and its exit must not send a
    # copy of it as abandoned), as are the traces waiting in _deferred, the parent's to send.
    # Their locks are new: one held by another thread at fork() would stay held forever here.
    _deferred.clear()
    for ref in list(open_tasks.values()):
        state = ref()
        if state is not None:
            state.lock = threading.RLock()
            state.finished = True
    open_tasks.clear()


lifecycle.on_fork(_after_fork_in_child)


def active_state() -> _TaskState | None:
    """The running task of this context (internal: the handler and processor record into it)."""
    state = _current.get()
    while state is not None and state.finished:
        state = state.parent
    return state
