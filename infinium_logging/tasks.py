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
:class:`~infinium_logging.queued.PendingTrace`: by the exporter, on its sender
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

import contextvars
import functools
import inspect
import sys
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Mapping,
)
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from . import _default
from ._default import TaskSink
from .fields import TASK_FIELDS
from .model import SECTION_NAMES
from .official import call_summary, docstring_description, result_summary
from .task_state import (
    _current,
    _deferred,
    _monotonic,
    _TaskState,
    active_state,
    drain_deferred,
)

__all__ = ["Task", "TaskHandle", "current_task", "task"]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


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
