"""``task()``: many log events, one trace: the active task, its steps, LLM usage, nesting, export.

How a task finds its events: the active task lives in a ``ContextVar``, so code
called inside ``with task(...)`` (and asyncio tasks started there) sees it;
threads see it when they run in a copied context (:meth:`TaskHandle.wrap`).
Every event that an :class:`~infinium_logging.InfiniumHandler` or
:class:`~infinium_logging.InfiniumProcessor` accepts while a task is active
becomes one of its steps.

Where a task's trace goes: to the exporter given as ``task(exporter=...)``;
else to the exporter of the first handler or processor that recorded a step in
it (or of its first nested task that had one); else to the process-wide
default exporter.  It is handed over exactly once, when the block ends.

What an event costs the code that logs: the task keeps the event as it was
captured (a shallow copy of its fields, its message, level and exception
details) and counts it against ``max_steps``; steps, LLM usage and JSON-safe
metadata are built from these when the trace is (see
:class:`~infinium_logging.mapping.PendingTrace`: by the exporter, on its sender
thread).  Objects logged inside a task are therefore read after the task ends:
do not mutate them after logging them.

Memory: there is no registry of tasks.  A task's state is referenced only by
the contexts it is active in and by its handle, and holds at most
``max_steps`` steps and errors, so a task that never ends costs a bounded
amount of memory for as long as something still references it, and nothing
once it is unreachable.  A task that ends where exporting could deadlock (its
state garbage-collected without an exit, say an entered and forgotten context
manager, or a generator closed by the garbage collector while suspended inside
the block) is queued and exported at the next safe point: the start or end of
another task, or ``InfiniumHandler.flush()``.  Its trace carries a
``TaskAbandoned`` (or ``GeneratorExit``) error.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import inspect
import logging
import sys
import threading
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Mapping,
)
from types import CodeType, FrameType, TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast, overload

from . import _default, lifecycle
from ._default import Options, TaskSink
from .convert import MAX_DESCRIPTION_LENGTH
from .mapping import (
    TASK_FIELDS,
    ErrorInfo,
    RawEvent,
    Usage,
    environment,
    error_from_exc_info,
    event_step,
    held_by_events,
    iso_timestamp,
    merge_environment,
)
from .model import SECTION_NAMES
from .official import call_summary, docstring_description, result_summary
from .queued import PendingTrace
from .sanitise import truncate
from .settings import disabled_in_environment

__all__ = ["Recorder", "Task", "TaskHandle", "TaskTrace", "current_task", "task"]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

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


class _Bridge(threading.local):
    """Per-thread note from the structlog processor to the stdlib handler (see processor.py).

    When the processor has turned an event into a step or a trace and the
    event is about to be passed on to a stdlib logger, it leaves
    ``(logger name, level number, event dict)`` here; the handler drops the
    record that carries that event (see :func:`marked`), so bridged setups get
    one step or one trace per event, not two.
    """

    mark: tuple[str, int, object] | None = None


class _BridgeInUse:
    """Set (process-wide) once a processor has left a mark: until then the handler skips
    reading the thread-local (a plain attribute is read in half the time)."""

    in_use: bool = False
    #: The code of structlog's call into the wrapped logger (``_proxy_to_logger``), set by
    #: processor.py: this module does not import structlog.
    calls: frozenset[CodeType] = frozenset()
    #: Set once an InfiniumProcessor exists: in a ``ProcessorFormatter`` it sees the
    #: LogRecords an InfiniumHandler sees too, so both tell records apart from then on
    #: (see :func:`record_identity`), as two handlers do.
    processor: bool = False
    #: The last tagged record sent, and where to: two handlers sharing one destination (say
    #: one on the root logger and one on a child), or a handler and a processor in a
    #: formatter, send a record once.  One for the process, not per thread: a race between
    #: threads can only miss a duplicate.
    last_tagged: tuple[object, object] = (None, None)


bridge: Final = _Bridge()
bridge_in_use: Final = _BridgeInUse()

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


#: How far up from the handler structlog's call into the logger is looked for (it is about
#: ten frames up: the stdlib's handler and logger calls in between).
_BRIDGE_DEPTH: Final = 40


class _SameRecord:
    """A LogRecord's identity: equal only for the record itself and its copies (which
    ``ProcessorFormatter``, ``QueueHandler`` and ``makeLogRecord`` make, sharing its
    attributes), without keeping the record alive."""

    __slots__ = ("created", "levelno", "name", "relative")

    def __init__(self, created: object, relative: object, name: object, levelno: object) -> None:
        self.created = created
        self.relative = relative
        self.name = name
        self.levelno = levelno

    def __eq__(self, other: object) -> bool:
        # The creation times as objects, not their values: each record computes its own
        # floats, which copies share; records made within one tick of a coarse clock (or
        # under freezegun) have equal times, and a freed record's id() is reused at once.
        # Both: a mocked time.time() hands every record the same `created` object, but
        # `relativeCreated` is computed from it for each record.
        return (
            type(other) is _SameRecord
            and other.relative is self.relative
            and other.created is self.created
            and other.name == self.name
            and other.levelno == self.levelno
        )

    __hash__ = None  # type: ignore[assignment]


def record_identity(record: logging.LogRecord) -> object:
    """What tells a LogRecord (and its copies) from every other record (see _SameRecord)."""
    attributes = record.__dict__
    created = attributes.get("created")
    relative = attributes.get("relativeCreated")
    if created is None or relative is None:  # a record class of its own: duplicates unnoticed
        return object()
    return _SameRecord(created, relative, attributes.get("name"), attributes.get("levelno"))


def marked(mark: tuple[str, int, object], name: str, levelno: int, msg: object) -> bool:
    """Whether a record from logger ``name`` is the event ``mark`` names (the handler
    has taken the mark off first: it is good for one record).

    The record that structlog makes of the event carries it as its message
    (``wrap_for_formatter``), or rendered (a renderer, ``render_to_log_kwargs``),
    which is then recognised as made during a structlog call into the logger:
    not by its text (a renderer escapes and reorders it), and not merely as the
    next record from that logger (the event may never reach the handler: a
    later processor's ``DropEvent``, a handler level or filter, and a direct
    stdlib call that followed would be taken for it).
    """
    if mark[0] != name or mark[1] != levelno:
        return False
    if msg is mark[2]:
        return True
    calls = bridge_in_use.calls
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_BRIDGE_DEPTH):
        if frame is None:
            return False
        if frame.f_code in calls:
            return True
        frame = frame.f_back
    return False


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
            self.max_steps = (self.options or _fallback_options()).max_steps
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


class TaskTrace(PendingTrace):
    """A finished task's trace, built from what the task captured by :meth:`materialize`.

    Made when the task ends, on the thread that ends it: it takes the task's
    fields as they are then, and its events, which no longer change.
    """

    __slots__ = (
        "basis",
        "elapsed",
        "errors",
        "events",
        "fields",
        "framework",
        "framework_version",
        "held",
        "limit",
        "logger_name",
        "omitted",
        "start_wall",
        "steps",
        "tags",
        "usage",
    )

    def __init__(self, state: _TaskState, elapsed: float) -> None:
        fields = dict(state.fields)
        events = state.events
        self.basis = fields
        self.steps = len(events) + (1 if state.omitted else 0)
        self.held = held_by_events(events)
        self.fields = fields
        self.events = events
        self.errors = state.errors
        self.omitted = state.omitted
        self.usage = state.usage
        self.limit = state._limit()
        self.elapsed = elapsed
        self.start_wall = state.start_wall
        self.framework = state.framework
        self.framework_version = state.framework_version
        self.logger_name = state.logger_name
        self.tags = (state.options or _fallback_options()).tags

    def materialize(self) -> dict[str, Any]:
        """The trace as a dict of TaskData fields: steps, errors, LLM usage, time, environment."""
        trace = dict(self.fields)
        name = trace.get("name")
        if not isinstance(name, str) or not name:
            name = trace["name"] = "unnamed task"
        if trace.get("description") is None:
            trace["description"] = name
        elapsed = self.elapsed
        start = iso_timestamp(self.start_wall)
        if trace.get("current_datetime") is None:
            trace["current_datetime"] = start
        if trace.get("duration") is None:
            trace["duration"] = round(elapsed, 6)
        span = {"start_time": start, "end_time": iso_timestamp(self.start_wall + elapsed)}
        trace["time_tracking"] = merge_environment(trace.get("time_tracking"), span)
        limit = self.limit
        steps: list[dict[str, Any]] = []
        usage: Usage | None = None
        late = Usage()  # the LLM calls of steps past max_steps (threads racing for the last)
        omitted = self.omitted
        for event in self.events:
            step = event if type(event) is dict else event_step(cast(RawEvent, event))
            call = step.get("llm_call")
            if len(steps) >= limit:
                omitted += 1
                if call is not None:
                    late.add(call, step.get("metadata"), len(late.calls) < limit)
                continue
            step["step_number"] = len(steps) + 1
            if call is not None:
                if usage is None:
                    usage = Usage()
                usage.add(call, step.get("metadata"), len(usage.calls) < limit)
            steps.append(step)
        for later in (late, self.usage):
            if later is not None and later.count:
                if usage is None:
                    usage = Usage()
                usage.merge(later, limit)
        if omitted:
            if len(steps) >= limit and steps:
                steps.pop()  # make room for the marker: never more than max_steps steps
                omitted += 1
            steps.append(
                {
                    "step_number": len(steps) + 1,
                    "action": "truncated",
                    "description": f"{omitted} more steps left out (max_steps={limit})",
                    "metadata": {"omitted_steps": omitted},
                }
            )
        given_steps = trace.get("steps")
        if isinstance(given_steps, list) and given_steps:
            offset = len(given_steps)
            for step in steps:
                step["step_number"] += offset
            trace["steps"] = [*given_steps, *steps]
        elif steps:
            trace["steps"] = steps
        given_errors = trace.get("errors")
        if isinstance(given_errors, list) and given_errors:
            trace["errors"] = [*given_errors, *self.errors]
        elif self.errors:
            trace["errors"] = list(self.errors)
        if trace.get("llm_usage") is None and usage is not None:
            trace["llm_usage"] = usage.as_dict()
        trace["environment"] = merge_environment(
            trace.get("environment"),
            environment(self.framework, self.logger_name, self.tags, self.framework_version),
        )
        return trace


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


def _fallback_options() -> Options:
    try:
        return _default.default_options()
    except Exception:
        return Options()


# --- the public API ------------------------------------------------------------------------------


class TaskHandle:
    """The running task, as returned by ``with task(...) as t`` and :func:`current_task`."""

    __slots__ = ("_state",)

    def __init__(self, state: _TaskState) -> None:
        self._state = state

    def __repr__(self) -> str:
        state = self._state
        status = "finished" if state.finished else "running"
        return f"<TaskHandle {state.fields.get('name')!r} {status}, {len(state.events)} steps>"

    @property
    def name(self) -> str:
        """The trace's name."""
        return str(self._state.fields.get("name"))

    @property
    def finished(self) -> bool:
        """True once the task has ended and its trace was handed over."""
        return self._state.finished

    def update(self, **fields: Any) -> None:
        """Set trace fields while the task runs (``output_summary=...``, ``customer=...``).

        Keys are TaskData field names (an unknown name is a ``TypeError``, as
        for any keyword argument); values are coerced leniently when the trace
        is sent.  Values set here win over what the library would fill in.
        """
        fields = _checked_fields(fields)
        state = self._state
        with state.lock:
            state.fields.update(fields)

    def wrap(self, fn: Callable[P, R]) -> Callable[P, R]:
        """``fn`` made to run inside this task from any thread (``executor.submit(t.wrap(work))``).

        Each call runs in a copy of the context ``wrap`` was called in, with
        this task active, so events logged by ``fn`` become this task's steps.
        Events logged after the task has ended go to the nearest enclosing task
        still running, if any (as for any event logged in an ended task's context).
        """
        state = self._state
        context = contextvars.copy_context()

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            def call() -> R:
                _current.set(state)
                return fn(*args, **kwargs)

            return context.copy().run(call)

        return run


def _checked_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` (TaskData field names) with ``sections`` (the wire's grouping of the domain
    sections, which to_task also takes) lifted to top level, so that a later ``update`` of one
    section leaves the others alone; a name that is neither is a ``TypeError``."""
    sections = fields.pop("sections", None)
    name = fields.get("name")
    if name is not None and not isinstance(name, str):
        # The name also names the parent's subtask step: coerced leniently when sent, a
        # number would read "123" there and "unnamed task" in its own trace.
        raise TypeError(f"a task's name must be a string, got {type(name).__name__} {name!r}")
    unknown = sorted(set(fields) - TASK_FIELDS)
    if unknown:
        raise TypeError(
            f"unknown TaskData field(s) {', '.join(unknown)}; "
            f"known fields: {', '.join(sorted(TASK_FIELDS | {'sections'}))}"
        )
    if sections is None:
        return fields
    if not isinstance(sections, Mapping):
        raise TypeError(
            f"sections must be a mapping of section names, got {type(sections).__name__}"
        )
    for name, value in sections.items():
        if name not in SECTION_NAMES:
            raise TypeError(f"unknown section {name!r}; known: {', '.join(SECTION_NAMES)}")
        if name in fields:
            raise TypeError(f"{name} given both as an argument and under sections")
        fields[name] = value
    return fields


class Task:
    """A task as a context manager (sync and async) and as a decorator; made by :func:`task`."""

    __slots__ = ("_active", "_capture_io", "_exporter", "_fields", "_max_steps")

    def __init__(
        self,
        fields: dict[str, Any],
        exporter: TaskSink | None,
        max_steps: int | None,
        capture_io: bool = False,
    ) -> None:
        self._fields = fields
        self._exporter = exporter
        self._max_steps = max_steps
        self._capture_io = capture_io
        self._active: list[tuple[_TaskState, contextvars.Token[_TaskState | None]]] = []

    def __enter__(self) -> TaskHandle:
        state = self._start()
        token = _current.set(state)
        self._active.append((state, token))
        return TaskHandle(state)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        active = self._active
        if not active:
            return
        # One Task object may be entered by several threads or asyncio tasks at once (a
        # module-level ``task(...)`` used with ``with``): each exit ends the run its own
        # context entered, found as the context's current task.
        current = _current.get()
        for index in range(len(active) - 1, -1, -1):
            if active[index][0] is current:
                state, token = active.pop(index)
                break
        else:  # exited out of order, or in another context than it was entered in
            state, token = active.pop()
        if current is not state and _inside(current, state):
            # Exited before a task entered inside it (``ExitStack`` misuse, hand-called
            # ``__exit__``): that one stays current until it exits; its events must not
            # go to the outer task, whose trace is on its way.
            _end(state, exc)
            return
        try:
            _current.reset(token)
        except ValueError:
            # Exited in another context than it was entered in (a generator resumed
            # elsewhere): make sure this context no longer points at the task.
            if _current.get() is state:
                _current.set(state.parent)
        restored = _current.get()
        if restored is not None and restored.finished:
            # An outer task that exited first (above), or the task of the context this one
            # was started in, over by now: none of it is current any more, and a task
            # started here later is none of its children.
            _current.set(active_state())
        _end(state, exc)

    def _start(self) -> _TaskState:
        """A new running task of this one's fields, child of the context's current task."""
        if _deferred:
            drain_deferred()
        return _TaskState(dict(self._fields), self._exporter, self._max_steps, _current.get())

    def __repr__(self) -> str:
        name = self._fields.get("name")
        where = "" if self._exporter is None else f" -> {type(self._exporter).__name__}"
        return f"<Task {name!r}, {len(self._active)} running{where}>"

    async def __aenter__(self) -> TaskHandle:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        """Decorate a function, coroutine function or (async) generator function: each call
        runs in a new task (a generator's: from its first step to its end)."""
        if isinstance(fn, (classmethod, staticmethod)):  # @task above @classmethod
            return cast(F, type(fn)(self(fn.__func__)))
        fields = dict(self._fields)
        if fields.get("name") is None:
            fields["name"] = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "task")
        capture_io = self._capture_io
        if capture_io and fields.get("description") is None:
            fields["description"] = docstring_description(fn)
        exporter, max_steps = self._exporter, self._max_steps
        if inspect.isgeneratorfunction(fn):
            return cast(F, _generator_wrapper(fn, Task(fields, exporter, max_steps)))
        if inspect.isasyncgenfunction(fn):
            return cast(F, _async_generator_wrapper(fn, Task(fields, exporter, max_steps)))
        if inspect.iscoroutinefunction(fn):
            coroutine_fn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with Task(fields, exporter, max_steps) as handle:
                    if capture_io:
                        _capture_call(handle._state, args, kwargs)
                    result = await coroutine_fn(*args, **kwargs)
                    if capture_io:
                        _capture_result(handle._state, result)
                    return result

            return cast(F, async_wrapper)

        runs = Task(fields, exporter, max_steps)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            state = runs._start()
            if capture_io:
                _capture_call(state, args, kwargs)
            token = _current.set(state)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                _current.reset(token)
                _end(state, exc)
                raise
            _current.reset(token)
            if inspect.iscoroutine(result):
                # An async callable that inspect does not recognise as one (an object whose
                # __call__ is async, a plain decorator around an async def): its work runs
                # when the coroutine is awaited, so that is when the task is active and ends.
                return _awaited(state, result, capture_io)
            if capture_io:
                _capture_result(state, result)
            _end(state, None)
            return result

        return cast(F, wrapper)


def _capture_call(state: _TaskState, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``capture_io``: the call's arguments as input_summary, unless the task set one."""
    if state.fields.get("input_summary") is None:
        state.fields["input_summary"] = call_summary(args, kwargs)


def _capture_result(state: _TaskState, result: object) -> None:
    """``capture_io``: the result as output_summary (none for ``None``), unless one was set."""
    if result is not None:
        with state.lock:
            if state.fields.get("output_summary") is None:
                state.fields["output_summary"] = result_summary(result)


async def _awaited(
    state: _TaskState, coroutine: Coroutine[Any, Any, Any], capture_io: bool = False
) -> Any:
    """Await ``coroutine`` as the running task ``state``, then end it."""
    token = _current.set(state)
    try:
        value = await coroutine
    except BaseException as exc:
        _current.reset(token)
        _end(state, exc)
        raise
    _current.reset(token)
    if capture_io:
        _capture_result(state, value)
    _end(state, None)
    return value


def _inside(state: _TaskState | None, ancestor: _TaskState) -> bool:
    """Whether ``state`` runs (directly or not) inside ``ancestor``."""
    while state is not None:
        state = state.parent
        if state is ancestor:
            return True
    return False


def _end(state: _TaskState, exc: BaseException | None) -> None:
    """End a running task with the exception that ended its block or generator, if any."""
    if isinstance(exc, GeneratorExit):
        # A generator being closed, most likely by the garbage collector:
        # not a safe place to export from (see _TaskState.__del__).
        _deferred.append((state, exc, _monotonic()))
        return
    try:
        state.finish(exc)
    except Exception as error:  # the block's own outcome must never change
        _default.warn_once("task-finish", "infinium_logging: task failed to finish: %r", error)
    if _deferred:
        drain_deferred()


# A generator's body runs a step at a time, in its consumer's context, after the call has
# returned: a task around the call would end empty at once.  Its task is active only while a
# step runs (between steps the consumer logs as its own), from the first step to the end.


def _generator_wrapper(fn: Callable[..., Generator[Any, Any, Any]], task: Task) -> Any:
    @functools.wraps(fn)
    def generator_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        state = task._start()
        sent: Any = None
        thrown: BaseException | None = None
        try:
            steps = fn(*args, **kwargs)
            while True:
                into, thrown = thrown, None
                token = _current.set(state)
                try:
                    value = steps.send(sent) if into is None else steps.throw(into)
                finally:
                    _current.reset(token)
                try:
                    sent = yield value
                except GeneratorExit:
                    token = _current.set(state)
                    try:
                        steps.close()
                    finally:
                        _current.reset(token)
                    raise
                except BaseException as exc:  # thrown in by the consumer: on to the generator
                    sent, thrown = None, exc
        except StopIteration as stop:
            _end(state, None)
            return stop.value
        except BaseException as exc:
            _end(state, exc)
            raise

    return generator_wrapper


def _cancelled_error() -> type[BaseException] | tuple[()]:
    """asyncio's ``CancelledError``, if asyncio is in use (not imported for it)."""
    asyncio = sys.modules.get("asyncio")
    error = getattr(asyncio, "CancelledError", None)
    return error if isinstance(error, type) and issubclass(error, BaseException) else ()


def _async_generator_wrapper(fn: Callable[..., AsyncGenerator[Any, Any]], task: Task) -> Any:
    @functools.wraps(fn)
    async def async_generator_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        state = task._start()
        sent: Any = None
        thrown: BaseException | None = None
        closing: BaseException | None = None
        try:
            steps = fn(*args, **kwargs)
            while True:
                into, thrown = thrown, None
                token = _current.set(state)
                try:
                    value = await (steps.asend(sent) if into is None else steps.athrow(into))
                finally:
                    _current.reset(token)
                try:
                    sent = yield value
                except GeneratorExit:
                    token = _current.set(state)
                    try:
                        await steps.aclose()
                    finally:
                        _current.reset(token)
                    raise
                except BaseException as exc:  # thrown in by the consumer: on to the generator
                    sent, thrown = None, exc
                    if isinstance(exc, _cancelled_error()):
                        # Between steps nothing awaits the generator: this is asyncio closing
                        # it at loop shutdown (its aclose() task cancelled before it ran).
                        closing = exc
        except StopAsyncIteration:
            _end(state, None)
        except BaseException as exc:
            _end(state, GeneratorExit() if exc is closing else exc)
            raise

    return async_generator_wrapper


@overload
def task(name: F, /) -> F: ...


@overload
def task(
    name: str | None = None,
    /,
    *,
    exporter: TaskSink | None = None,
    max_steps: int | None = None,
    capture_io: bool = False,
    **fields: Any,
) -> Task: ...


def task(
    name: str | Callable[..., Any] | None = None,
    /,
    *,
    exporter: TaskSink | None = None,
    max_steps: int | None = None,
    capture_io: bool = False,
    **fields: Any,
) -> Task | Callable[..., Any]:
    """One trace made of every event logged while it runs.

    ``with task("Classify ticket", description=..., expected_outcome=...) as t:``,
    ``async with task(...)``, ``@task("Classify ticket")`` on a sync or async
    function, or bare ``@task`` (the name is the function's qualified name).

    ``fields`` are TaskData fields (``description``, ``input_summary``,
    ``expected_outcome``, ``customer``, ...); ``t.update(...)`` sets more while
    it runs.  ``exporter`` overrides where the trace goes; ``max_steps``
    overrides ``INFINIUM_MAX_STEPS`` (500).  ``capture_io=True`` on a decorated
    function or coroutine function records what the official ``@trace_agent``
    does: the call's arguments as ``input_summary`` (at most 3,000 characters),
    its result as ``output_summary`` (8,000) and its docstring as
    ``description``, each unless given.  Off by default: arguments can hold
    what should not leave the process.

    On exit the trace gets ``duration`` (monotonic clock), ``time_tracking``,
    ``current_datetime`` (the start), its steps and errors, and ``llm_usage``
    summed from the steps' LLM calls unless set; an exception escaping the
    block is recorded as a non-recoverable error and re-raised untouched.
    """
    if exporter is not None and not callable(getattr(exporter, "submit", None)):
        raise TypeError(f"exporter must have a submit(task) method, got {type(exporter).__name__}")
    if max_steps is not None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int):
            raise TypeError(
                f"max_steps must be a whole number, got {type(max_steps).__name__} {max_steps!r}"
            )
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps!r}")
    if callable(name) or isinstance(name, (classmethod, staticmethod)):
        return Task({}, exporter, max_steps)(name)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"a task's name must be a string, got {type(name).__name__} {name!r}")
    fields = _checked_fields(fields)
    fields = {"name": name, **fields} if name is not None else fields
    return Task(fields, exporter, max_steps, bool(capture_io))


def current_task() -> TaskHandle | None:
    """The task active in this context, or ``None``."""
    state = _current.get()
    if state is None or state.finished:
        return None
    return TaskHandle(state)


def link_prompt(use: dict[str, Any]) -> None:
    """Add a Prompt Studio fetch to the running task's ``prompt_studio`` section, as the
    official client links the prompts fetched inside a trace; no task, nothing to link."""
    state = active_state()
    if state is None:
        return
    with state.lock:
        section = state.fields.get("prompt_studio")
        if not isinstance(section, dict) or not isinstance(section.get("prompts_used"), list):
            section = state.fields["prompt_studio"] = {"prompts_used": []}
        section["prompts_used"].append(use)


def active_state() -> _TaskState | None:
    """The running task of this context (internal: the handler and processor record into it)."""
    state = _current.get()
    while state is not None and state.finished:
        state = state.parent
    return state
