"""task(): steps, LLM usage, errors, timing, context (asyncio, threads), nesting, bounds, export."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import inspect
import logging
import os
import re
import sys
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest import mock

import pytest
from exporters import make_exporter
from freezegun import freeze_time
from sinks import ListSink

from infinium_logging import settings as settings_module
from infinium_logging._capture import capture_tasks
from infinium_logging.collector import LocalCollector
from infinium_logging.handler import InfiniumHandler
from infinium_logging.model import LlmCall, LlmUsage, TaskData, encode_task
from infinium_logging.task_state import _current, open_tasks
from infinium_logging.tasks import TaskHandle, current_task, task
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def sink() -> ListSink:
    """Where the test logger's handler sends traces."""
    return ListSink()


@pytest.fixture
def log(sink: ListSink) -> Iterator[logging.Logger]:
    """A logger of its own with an InfiniumHandler sending to ``sink``."""
    logger = logging.getLogger(f"tests.tasks.{uuid.uuid4().hex}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = InfiniumHandler(exporter=sink)
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)
    handler.close()


def _only(sink: ListSink) -> TaskData:
    assert len(sink.tasks) == 1, [t.name for t in sink.tasks]
    return sink.tasks[0]


# --- steps ----------------------------------------------------------------------------------------


def test_every_event_becomes_a_step_in_order(log: logging.Logger, sink: ListSink) -> None:
    """Steps are numbered in order, described by the message, with fields in metadata."""
    with task("Classify ticket", description="Route a ticket", input_summary="ticket 7"):
        log.debug("read the ticket", extra={"ticket": 7})
        log.info("asked for %s", "a label", extra={"action": "classify"})
        log.warning("low confidence", extra={"confidence": 0.41, "_private": 1})
    trace = _only(sink)
    assert (trace.name, trace.description, trace.input_summary) == (
        "Classify ticket",
        "Route a ticket",
        "ticket 7",
    )
    assert trace.steps is not None
    assert [(s.step_number, s.action, s.description, s.metadata) for s in trace.steps] == [
        (1, "log", "read the ticket", {"ticket": 7}),
        (2, "classify", "asked for a label", None),
        (3, "log", "low confidence", {"confidence": 0.41}),
    ]
    assert trace.environment is not None
    assert trace.environment.framework == "logging"
    assert trace.environment.custom_tags == {"logger": log.name}


def test_events_below_the_handler_level_are_not_steps(log: logging.Logger, sink: ListSink) -> None:
    """Only events the handler accepts (its level) become steps."""
    log.handlers[0].setLevel(logging.INFO)
    with task("t"):
        log.debug("too quiet")
        log.info("kept")
    assert [s.description for s in _only(sink).steps or ()] == ["kept"]


def test_untagged_events_outside_a_task_send_nothing(log: logging.Logger, sink: ListSink) -> None:
    """Without a tag or a task, the handler sends nothing."""
    log.info("just a log line", extra={"x": 1})
    assert sink.tasks == []


def test_an_int_too_long_for_text_does_not_cost_the_trace(
    log: logging.Logger, sink: ListSink
) -> None:
    """Python cannot write an int of over 4,300 digits as text: such a field stands as a marker
    in the step's metadata instead of making the whole trace impossible to encode."""
    with task("Count"):
        log.info("counted", extra={"n": 10**5000, "small": 3})
    body = encode_task(_only(sink))
    assert b'"n":"<int of about 5001 digits>"' in body
    assert b'"small":3' in body


def test_llm_calls_are_aggregated(log: logging.Logger, sink: ListSink) -> None:
    """LLM calls become step LlmCalls and sum up into llm_usage."""
    with task("Summarise"):
        log.info("draft", extra={"llm_call": {"model": "gpt-4o", "provider": "openai",
                 "prompt_tokens": 100, "completion_tokens": 20, "latency_ms": 800}})  # fmt: skip
        log.info("refine", extra={"llm_call": LlmCall(model="gpt-4o", provider="openai",
                 prompt_tokens=50, completion_tokens=10, latency_ms=400)})  # fmt: skip
        log.info("check", extra={"llm_call": {"model": "claude", "prompt_tokens": "5"}})
    trace = _only(sink)
    assert [s.action for s in trace.steps or ()] == ["llm_inference"] * 3
    usage = trace.llm_usage
    assert usage is not None
    assert (usage.model, usage.provider) == ("multiple", "openai")
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (155, 30, 185)
    assert (usage.api_calls_count, usage.total_latency_ms) == (3, 1200)
    assert usage.calls is not None
    assert [c.model for c in usage.calls] == ["gpt-4o", "gpt-4o", "claude"]


def test_user_llm_usage_wins(log: logging.Logger, sink: ListSink) -> None:
    """llm_usage set by the user is not replaced by the aggregate."""
    with task("t") as t:
        log.info("call", extra={"llm_call": {"model": "m", "prompt_tokens": 1}})
        t.update(llm_usage={"model": "mine", "total_tokens": 999})
    assert _only(sink).llm_usage == LlmUsage(model="mine", total_tokens=999)


def test_tool_calls(log: logging.Logger, sink: ListSink) -> None:
    """tool_call fields become ToolCalls; their extra keys land in metadata."""
    with task("t"):
        log.info("searched", extra={"tool_call": {"tool_name": "search", "http_status": 200,
                 "query": "printer"}, "duration_ms": 31})  # fmt: skip
    (step,) = _only(sink).steps or []
    assert step.action == "tool_use"
    assert step.tool_call is not None
    assert (step.tool_call.tool_name, step.tool_call.http_status) == ("search", 200)
    assert step.duration_ms == 31
    assert step.metadata == {"tool_call.query": "printer"}


def test_non_serializable_fields_become_text(log: logging.Logger, sink: ListSink) -> None:
    """Objects that JSON cannot carry become their repr; a failing repr is tolerated."""

    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("nope")

    loop: list[Any] = []
    loop.append(loop)
    with task("t"):
        log.info("odd", extra={"o": Opaque(), "b": Broken(), "l": loop, "n": float("nan")})
    (step,) = _only(sink).steps or []
    assert step.metadata == {
        "o": "<Opaque>",
        "b": "<unrepresentable Broken>",
        "l": ["<recursive>"],
    }


# --- errors ---------------------------------------------------------------------------------------


def test_logged_exception_is_recoverable_when_the_task_ends_well(
    log: logging.Logger, sink: ListSink
) -> None:
    """A logged exception gives the step an ErrorDetail; the task going on makes it recoverable."""
    with task("t"):
        try:
            raise TimeoutError("tool timed out")
        except TimeoutError:
            log.exception("tool failed")
        log.info("retried")
    trace = _only(sink)
    assert trace.errors is not None
    (error,) = trace.errors
    assert (error.error_type, error.message, error.recoverable) == (
        "TimeoutError",
        "tool timed out",
        True,
    )
    assert error.stack_trace is not None
    assert "raise TimeoutError" in error.stack_trace
    assert trace.steps is not None
    assert trace.steps[0].action == "error"
    assert trace.steps[0].error == error


def test_escaping_exception_is_recorded_and_reraised_untouched(
    log: logging.Logger, sink: ListSink
) -> None:
    """An exception leaving the block adds a non-recoverable error and propagates as it was."""
    boom = KeyError("missing")

    def run() -> None:
        with task("t"):
            log.info("before")
            raise boom

    with pytest.raises(KeyError) as caught:
        run()
    assert caught.value is boom
    trace = _only(sink)
    assert trace.errors is not None
    assert [(e.error_type, e.recoverable) for e in trace.errors] == [("KeyError", False)]


def test_logged_then_escaping_exception_is_one_error(log: logging.Logger, sink: ListSink) -> None:
    """Logging an exception and letting it escape records it once, as not recoverable."""

    def run() -> None:
        with task("t"):
            try:
                raise ValueError("bad")
            except ValueError:
                log.exception("failed")
                raise

    with pytest.raises(ValueError, match="bad"):
        run()
    trace = _only(sink)
    assert [(e.error_type, e.recoverable) for e in trace.errors or ()] == [("ValueError", False)]


def test_earlier_errors_stay_unrecoverable_when_the_task_fails(
    log: logging.Logger, sink: ListSink
) -> None:
    """Only a task that finishes normally marks its logged errors recoverable."""

    def run() -> None:
        with task("t"):
            try:
                raise TimeoutError("first")
            except TimeoutError:
                log.error("first failure", exc_info=True)
            raise RuntimeError("second")

    with pytest.raises(RuntimeError):
        run()
    errors = _only(sink).errors or []
    assert [(e.error_type, e.recoverable) for e in errors] == [
        ("TimeoutError", False),
        ("RuntimeError", False),
    ]


# --- timing, fields, export -----------------------------------------------------------------------


def test_duration_and_time_tracking_use_the_clock(sink: ListSink) -> None:
    """duration is monotonic time spent; current_datetime and time_tracking are the start/end."""
    with freeze_time("2026-03-01T10:00:00Z") as frozen:
        with task("t", exporter=sink):
            frozen.tick(2.25)
    trace = _only(sink)
    assert trace.duration == 2.25
    assert trace.current_datetime == "2026-03-01T10:00:00.000000Z"
    assert trace.time_tracking is not None
    assert trace.time_tracking.start_time == "2026-03-01T10:00:00.000000Z"
    assert trace.time_tracking.end_time == "2026-03-01T10:00:02.250000Z"


def test_update_and_given_fields_win(sink: ListSink) -> None:
    """Fields given to task() and update() are kept as given."""
    with task(
        "t",
        exporter=sink,
        expected_outcome={"task_objective": "route it"},
        duration=9.0,
        time_tracking={"start_time": "2026-01-01T00:00:00Z"},
    ) as t:
        t.update(output_summary="billing", customer={"customer_name": "Ada"})
    trace = _only(sink)
    assert trace.expected_outcome is not None
    assert trace.expected_outcome.task_objective == "route it"
    assert trace.duration == 9.0
    assert trace.output_summary == "billing"
    assert trace.customer is not None
    assert trace.customer.customer_name == "Ada"
    assert trace.time_tracking is not None
    assert trace.time_tracking.start_time == "2026-01-01T00:00:00Z"
    assert trace.time_tracking.end_time is not None


def test_unknown_fields_are_a_type_error() -> None:
    """A misspelt TaskData field is reported at once, like any bad keyword argument."""
    with pytest.raises(TypeError, match="output_sumary"):
        task("t", output_sumary="x")
    with capture_tasks(), task("t") as t, pytest.raises(TypeError, match="colour"):
        t.update(colour="red")


def test_a_name_that_is_not_text_is_refused_by_update_too(sink: ListSink) -> None:
    """``update(name=...)`` checks the name as ``task()`` does: the parent's subtask step and
    the task's own trace would otherwise disagree on it."""
    with task("outer", exporter=sink), task("inner", exporter=sink) as t:
        with pytest.raises(TypeError, match="name must be a string, got int 123"):
            t.update(name=123)
        t.update(name="renamed")
    inner, outer = sink.tasks
    assert inner.name == "renamed"
    assert [s.description for s in outer.steps or ()] == ["renamed"]
    with pytest.raises(TypeError, match="name must be a string, got int"):
        task(name=5)


def test_exported_exactly_once(log: logging.Logger, sink: ListSink) -> None:
    """A task is handed over once; events after its end are ignored."""
    manager = task("t")
    with manager as t:
        log.info("during")
        late = t.wrap(lambda: log.info("after the end"))
    late()
    manager.__exit__(None, None, None)  # a stray second exit does nothing
    assert [s.description for s in _only(sink).steps or ()] == ["during"]
    assert t.finished


def test_task_without_events_uses_its_exporter(sink: ListSink) -> None:
    """A task no handler saw goes to the exporter given to it."""
    with task("quiet", exporter=sink):
        pass
    assert _only(sink).name == "quiet"
    assert _only(sink).steps is None


def test_disabled_export_keeps_a_task_from_its_own_sink_too(
    monkeypatch: pytest.MonkeyPatch, log: logging.Logger, sink: ListSink
) -> None:
    """INFINIUM_DISABLED=true: the handler sending to a sink of the caller's own records
    nothing, and a task sending there is not sent either (it was, without its steps); a
    capture still gets it whole."""
    monkeypatch.setenv("INFINIUM_DISABLED", "true")
    quiet = logging.getLogger(f"tests.tasks.disabled.{uuid.uuid4().hex}")
    quiet.setLevel(logging.INFO)
    quiet.propagate = False
    handler = InfiniumHandler(exporter=sink)
    quiet.addHandler(handler)
    try:
        with task("Off", exporter=sink):
            quiet.info("a step")
        with task("Off too", exporter=sink):
            pass
        assert sink.tasks == []
        with capture_tasks() as captured, task("Captured", exporter=sink):
            quiet.info("a step")
    finally:
        quiet.removeHandler(handler)
        handler.close()
    assert [(t.name, len(t.steps or ())) for t in captured] == [("Captured", 1)]
    assert sink.tasks == []


def test_logging_into_a_task_from_code_run_under_its_lock(
    log: logging.Logger, sink: ListSink
) -> None:
    """A __del__ run by the garbage collector (or a signal handler) while this thread holds
    the task's lock may log an error into it: no deadlock, and the event is a step."""
    done = threading.Event()

    def run() -> None:
        with task("locked", exporter=sink) as t:
            with t._state.lock:
                log.error("logged under the lock")
            log.info("after")
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert done.wait(5), "logging under the task's lock blocked"
    assert [s.description for s in _only(sink).steps or ()] == ["logged under the lock", "after"]


def test_task_without_events_is_captured() -> None:
    """With no handler and no exporter, the default route (here a capture) gets the trace."""
    with capture_tasks() as tasks, task("quiet"):
        pass
    assert [t.name for t in tasks] == ["quiet"]


def test_task_exporter_wins_over_the_handlers(log: logging.Logger, sink: ListSink) -> None:
    """task(exporter=...) decides where the trace goes, whichever handler recorded steps."""
    own = ListSink()
    with task("t", exporter=own):
        log.info("step")
    assert sink.tasks == []
    assert [s.description for s in _only(own).steps or ()] == ["step"]


def test_reprs_say_what_a_task_is(sink: ListSink) -> None:
    """A Task and its handle say their name and state (for debugging and logs)."""
    block = task("Classify", exporter=sink)
    assert repr(block) == "<Task 'Classify', 0 running -> ListSink>"
    with block as handle:
        assert repr(block) == "<Task 'Classify', 1 running -> ListSink>"
        assert repr(handle) == "<TaskHandle 'Classify' running, 0 steps>"
    assert repr(handle) == "<TaskHandle 'Classify' finished, 0 steps>"


def test_current_task() -> None:
    """current_task() is the running task's handle, None outside."""
    assert current_task() is None
    with capture_tasks(), task("outer") as t:
        handle = current_task()
        assert isinstance(handle, TaskHandle)
        assert handle.name == t.name == "outer"
    assert current_task() is None


# --- decorator ------------------------------------------------------------------------------------


def test_decorator_on_sync_function(log: logging.Logger, sink: ListSink) -> None:
    """Each call of a decorated function is one trace; current_task() reaches it."""

    @task("Classify", description="route")
    def classify(text: str) -> str:
        log.info("classifying %s", text)
        handle = current_task()
        assert handle is not None
        handle.update(output_summary="billing")
        return "billing"

    assert classify("a") == "billing"
    assert classify("b") == "billing"
    assert [(t.name, t.output_summary) for t in sink.tasks] == [("Classify", "billing")] * 2
    assert [s.description for s in sink.tasks[1].steps or ()] == ["classifying b"]


def test_bare_decorator_names_the_task_after_the_function() -> None:
    """@task with no arguments uses the function's qualified name."""

    @task
    def summarise() -> int:
        return 3

    with capture_tasks() as tasks:
        assert summarise() == 3
    assert [t.name for t in tasks] == [
        "test_bare_decorator_names_the_task_after_the_function.<locals>.summarise"
    ]


def test_decorator_above_classmethod_and_staticmethod(log: logging.Logger, sink: ListSink) -> None:
    """``@task`` above ``@classmethod`` / ``@staticmethod`` decorates the function and keeps
    the descriptor: the arguments are the method's, the task is named after it."""

    class Agent:
        @task
        @classmethod
        def build(cls, n: int) -> tuple[type, int]:
            log.info("building %d", n)
            return cls, n

        @task("Add")
        @staticmethod
        def add(a: int, b: int) -> int:
            log.info("adding")
            return a + b

    assert Agent.build(1) == (Agent, 1)
    assert Agent().add(2, 3) == 5
    assert [t.name for t in sink.tasks] == [Agent.build.__qualname__, "Add"]
    assert [[s.description for s in t.steps or ()] for t in sink.tasks] == [
        ["building 1"],
        ["adding"],
    ]


def test_decorated_async_callables_that_inspect_does_not_see(
    log: logging.Logger, sink: ListSink
) -> None:
    """An object whose ``__call__`` is async, or a plain decorator around an ``async def``:
    the task runs while the coroutine is awaited and ends with it (its outcome included)."""

    class Tool:
        async def __call__(self, n: int) -> int:
            await asyncio.sleep(0)
            log.info("tool %d", n)
            return n

    def plain(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any) -> Any:
            return fn(*args)

        return call

    @task("Wrapped")
    @plain
    async def wrapped(fail: bool) -> None:
        await asyncio.sleep(0)
        log.info("wrapped")
        if fail:
            raise ValueError("no")

    tool = task("Tool")(Tool())

    async def main() -> None:
        assert await tool(7) == 7
        await wrapped(False)
        with pytest.raises(ValueError):
            await wrapped(True)

    asyncio.run(main())
    assert [(t.name, [s.description for s in t.steps or ()]) for t in sink.tasks] == [
        ("Tool", ["tool 7"]),
        ("Wrapped", ["wrapped"]),
        ("Wrapped", ["wrapped"]),
    ]
    assert sink.tasks[2].errors and sink.tasks[2].errors[0].error_type == "ValueError"


@pytest.mark.parametrize(
    ("arguments", "error", "says"),
    [
        ({"name": 123}, TypeError, "name must be a string, got int 123"),
        ({"name": b"x"}, TypeError, "name must be a string, got bytes"),
        ({"exporter": "nope"}, TypeError, "exporter must have a submit(task) method, got str"),
        ({"max_steps": 1.5}, TypeError, "max_steps must be a whole number, got float 1.5"),
        ({"max_steps": float("nan")}, TypeError, "max_steps must be a whole number"),
        ({"max_steps": "5"}, TypeError, "max_steps must be a whole number, got str '5'"),
        ({"max_steps": True}, TypeError, "max_steps must be a whole number"),
        ({"max_steps": 0}, ValueError, "max_steps must be at least 1, got 0"),
    ],
)
def test_bad_task_arguments_are_refused_where_they_are_given(
    arguments: dict[str, Any], error: type[Exception], says: str
) -> None:
    name = arguments.pop("name", "T")
    with pytest.raises(error, match=re.escape(says)):
        task(name, **arguments)


def test_sections_are_taken_as_to_task_takes_them(sink: ListSink) -> None:
    """``sections={...}`` (the wire's grouping) works in task() and update(), one section at a
    time: updating one leaves the others; a bad one is a TypeError where it is written."""
    with task("S", exporter=sink, sections={"support": {"call_id": "T2"}}) as t:
        t.update(sections={"customer": {"customer_name": "ACME"}})
    trace = _only(sink)
    assert trace.support is not None and trace.support.call_id == "T2"
    assert trace.customer is not None and trace.customer.customer_name == "ACME"
    with pytest.raises(TypeError, match="unknown section 'nope'"):
        task("x", sections={"nope": {}})
    with pytest.raises(TypeError, match="must be a mapping"):
        task("x", sections=["support"])
    with pytest.raises(TypeError, match="support given both"):
        task("x", sections={"support": {}}, support={"call_id": "1"})


def test_decorated_generator_is_a_task_from_its_first_step_to_its_end(
    log: logging.Logger, sink: ListSink
) -> None:
    """A generator's body runs a step at a time after the call returns: its task is active
    while a step runs (its events are steps), not between steps (the consumer's events are
    the consumer's: here, steps of the consumer's own task), and ends with the generator."""

    @task("Stream answer")
    def stream(question: str) -> Generator[str, str | None, str]:
        log.info("asked %s", question)
        reply = yield "chunk 1"
        log.info("got %s", reply)
        yield "chunk 2"
        log.info("done")
        return "finished"

    assert inspect.isgeneratorfunction(stream)
    with task("Consumer", exporter=sink):
        chunks = stream("why")
        first = next(chunks)
        log.info("consumer saw %s", first)
        second = chunks.send("ack")
        with pytest.raises(StopIteration) as end:
            next(chunks)
    assert (first, second, end.value.value) == ("chunk 1", "chunk 2", "finished")
    inner, outer = sink.tasks
    assert inner.name == "Stream answer"
    assert [s.description for s in inner.steps or []] == ["asked why", "got ack", "done"]
    assert [s.description for s in outer.steps or []][:1] == ["consumer saw chunk 1"]
    assert [s.action for s in outer.steps or []][1:] == ["subtask"]


def test_decorated_generator_records_its_failure_and_takes_what_is_thrown_in(
    log: logging.Logger, sink: ListSink
) -> None:
    """An exception thrown in reaches the generator (which may handle it); one escaping it is
    the task's non-recoverable error, re-raised to the consumer untouched."""

    @task("Retrying stream", exporter=sink)
    def stream() -> Generator[int, None, None]:
        try:
            yield 1
        except KeyError:
            log.warning("caller gave up on 1")
            yield 2
        raise ValueError("out of data")

    gen = stream()
    assert next(gen) == 1
    assert gen.throw(KeyError("x")) == 2
    with pytest.raises(ValueError, match="out of data"):
        next(gen)
    trace = _only(sink)
    assert [s.description for s in trace.steps or []] == ["caller gave up on 1"]
    assert [(e.error_type, e.recoverable) for e in trace.errors or []] == [("ValueError", False)]


def test_a_decorated_generator_left_early_is_sent_when_closed(
    log: logging.Logger, sink: ListSink
) -> None:
    """A consumer that stops early closes the generator: its trace is sent (at the next safe
    point, since a close may come from the garbage collector) with the steps it had."""

    @task("Endless", exporter=sink)
    def endless() -> Iterator[int]:
        number = 0
        while True:
            log.info("made %d", number)
            yield number
            number += 1

    for number in endless():
        if number == 2:
            break
    gc.collect()
    with task("next", exporter=sink):
        pass
    endless_trace = sink.tasks[0]
    assert [s.description for s in endless_trace.steps or []] == ["made 0", "made 1", "made 2"]
    assert [e.error_type for e in endless_trace.errors or []] == ["GeneratorExit"]


def test_decorated_async_generator_is_a_task_of_its_own_steps(
    log: logging.Logger, sink: ListSink
) -> None:
    """The same for an async generator: its events are its steps, the consumer's are not."""

    @task("Async stream", exporter=sink)
    async def stream() -> AsyncIterator[str]:
        log.info("first")
        yield "a"
        await asyncio.sleep(0)
        log.info("second")
        yield "b"

    async def consume() -> list[str]:
        got = []
        async for item in stream():
            log.info("consumer got %s", item)  # no task of its own: not a step anywhere
            got.append(item)
        return got

    assert inspect.isasyncgenfunction(stream)
    assert asyncio.run(consume()) == ["a", "b"]
    trace = _only(sink)
    assert [s.description for s in trace.steps or []] == ["first", "second"]
    assert not trace.errors


def test_an_async_generator_left_early_reads_as_closed_when_asyncio_closes_it(
    log: logging.Logger, sink: ListSink
) -> None:
    """Left suspended by a ``break``, the generator is closed by asyncio at loop shutdown,
    which throws ``CancelledError`` in between steps: the trace says closed early
    (``GeneratorExit``), as for ``aclose()``, and the body still sees what asyncio sent.  A
    cancellation during a step stays a ``CancelledError``."""
    seen: list[str] = []

    @task("Left", exporter=sink)
    async def left() -> AsyncIterator[int]:
        try:
            log.info("made 0")
            yield 0
            yield 1
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    async def consume() -> None:
        async for _ in left():
            break

    asyncio.run(consume())
    gc.collect()
    with task("next", exporter=sink):
        pass
    assert seen == ["CancelledError"]
    left_trace = sink.tasks[0]
    assert [s.description for s in left_trace.steps or []] == ["made 0"]
    assert [e.error_type for e in left_trace.errors or []] == ["GeneratorExit"]

    @task("Cancelled in a step", exporter=sink)
    async def slow() -> AsyncIterator[int]:
        await asyncio.sleep(10)
        yield 0

    async def cancel_it() -> None:
        consumer = asyncio.ensure_future(slow().__anext__())
        await asyncio.sleep(0)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer

    asyncio.run(cancel_it())
    assert [e.error_type for e in sink.tasks[-1].errors or []] == ["CancelledError"]


def test_decorator_on_async_function(log: logging.Logger, sink: ListSink) -> None:
    """Async functions are decorated as coroutines; the exception is recorded and re-raised."""

    @task("fetch")
    async def fetch(fail: bool) -> int:
        log.info("fetching")
        await asyncio.sleep(0)
        if fail:
            raise ConnectionError("down")
        return 1

    assert asyncio.run(fetch(False)) == 1
    with pytest.raises(ConnectionError):
        asyncio.run(fetch(True))
    assert [bool(t.errors) for t in sink.tasks] == [False, True]


def test_async_with(sink: ListSink) -> None:
    """``async with task(...)`` works as well."""

    async def main() -> None:
        async with task("async block", exporter=sink) as t:
            t.update(output_summary="ok")

    asyncio.run(main())
    assert _only(sink).output_summary == "ok"


# --- context ------------------------------------------------------------------------------------


def test_asyncio_concurrency_keeps_steps_apart(log: logging.Logger, sink: ListSink) -> None:
    """100 interleaved asyncio tasks: each trace gets exactly its own steps, in order."""

    async def worker(n: int) -> None:
        with task(f"job {n}"):
            for i in range(5):
                log.info("job %d step %d", n, i, extra={"job": n})
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(worker(n) for n in range(100)))

    asyncio.run(main())
    assert len(sink.tasks) == 100
    for trace in sink.tasks:
        n = int(trace.name.split()[1])
        assert [(s.step_number, s.description, s.metadata) for s in trace.steps or ()] == [
            (i + 1, f"job {n} step {i}", {"job": n}) for i in range(5)
        ]


def test_one_task_object_entered_concurrently_runs_apart(
    log: logging.Logger, sink: ListSink
) -> None:
    """A module-level ``task(...)`` entered by overlapping asyncio tasks and threads: each
    exit ends its own run (the first to finish does not end another's), with its own steps,
    fields and duration."""
    handle = task("handle", exporter=sink)

    async def request(n: int, delay: float) -> None:
        async with handle as t:
            log.info("start %d", n)
            await asyncio.sleep(delay)
            log.info("end %d", n)
            t.update(output_summary=f"request {n}")

    async def main() -> None:
        await asyncio.gather(request(1, 0.0), request(2, 0.02))

    asyncio.run(main())
    entered = threading.Barrier(2)

    def in_thread(n: int) -> None:
        with handle as t:
            entered.wait()  # both runs open at once
            log.info("thread %d", n)
            t.update(output_summary=f"thread {n}")

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in (3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_summary = {trace.output_summary: trace for trace in sink.tasks}
    assert sorted(by_summary, key=str) == ["request 1", "request 2", "thread 3", "thread 4"]
    for n in (1, 2):
        steps = by_summary[f"request {n}"].steps or ()
        assert [s.description for s in steps] == [f"start {n}", f"end {n}"]
    for n in (3, 4):
        assert [s.description for s in by_summary[f"thread {n}"].steps or ()] == [f"thread {n}"]
    assert by_summary["request 2"].duration >= 0.02 > by_summary["request 1"].duration
    assert "0 running" in repr(handle)


def test_exited_before_a_task_entered_inside_it(log: logging.Logger, sink: ListSink) -> None:
    """The outer task exited first (hand-called ``__exit__``): the inner one stays current
    and keeps its events until it exits; then no task is current."""
    outer, inner = task("outer", exporter=sink), task("inner", exporter=sink)
    outer.__enter__()
    inner.__enter__()
    log.info("both open")
    outer.__exit__(None, None, None)
    log.info("outer ended")
    assert current_task() is not None and current_task().name == "inner"  # type: ignore[union-attr]
    inner.__exit__(None, None, None)
    log.info("after both")
    assert current_task() is None
    assert _current.get() is None  # the finished outer is not the parent of the next task
    traces = {trace.name: trace for trace in sink.tasks}
    assert traces["outer"].steps is None
    assert [s.description for s in traces["inner"].steps or ()] == ["both open", "outer ended"]
    assert len(sink.tasks) == 2


def test_asyncio_children_inherit_the_task(log: logging.Logger, sink: ListSink) -> None:
    """asyncio tasks started inside a task log into it."""

    async def child(n: int) -> None:
        await asyncio.sleep(0)
        log.info("child %d", n)

    async def main() -> None:
        with task("parent"):
            await asyncio.gather(child(1), child(2))

    asyncio.run(main())
    assert sorted(s.description for s in _only(sink).steps or ()) == ["child 1", "child 2"]


def test_threads_with_wrap(log: logging.Logger, sink: ListSink) -> None:
    """Threads log into the task through t.wrap; a plain thread does not."""

    def work(n: int) -> int:
        log.info("thread work %d", n)
        return n

    with task("fan out") as t:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(t.wrap(work), range(8)))
        plain = threading.Thread(target=work, args=(99,))
        plain.start()
        plain.join()
    assert results == list(range(8))
    trace = _only(sink)
    assert sorted(s.description for s in trace.steps or ()) == [
        f"thread work {n}" for n in range(8)
    ]
    assert sorted(s.step_number for s in trace.steps or ()) == list(range(1, 9))


def test_wrap_keeps_the_callers_context_variables(log: logging.Logger, sink: ListSink) -> None:
    """Other context variables set where wrap() was called are visible in the thread."""
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    request_id.set("r-1")
    seen: list[str] = []
    with task("t") as t:

        def note() -> None:
            seen.append(request_id.get())

        thread = threading.Thread(target=t.wrap(note))
        thread.start()
        thread.join()
    assert seen == ["r-1"]


# --- nesting ------------------------------------------------------------------------------------


def test_nested_tasks_are_separate_traces(log: logging.Logger, sink: ListSink) -> None:
    """The inner task is its own trace; the outer gets one step for it."""
    with task("outer"):
        log.info("outer before")
        with task("inner"):
            log.info("inner work")
        log.info("outer after")
    inner, outer = sink.tasks
    assert [s.description for s in inner.steps or ()] == ["inner work"]
    steps = outer.steps or []
    assert [(s.action, s.description) for s in steps] == [
        ("log", "outer before"),
        ("subtask", "inner"),
        ("log", "outer after"),
    ]
    assert steps[1].metadata == {"task": "inner", "outcome": "success", "steps": 1}
    assert steps[1].duration_ms is not None


def test_failed_inner_task(sink: ListSink) -> None:
    """A failed inner task is an error step of the outer, recoverable if the outer ends well.

    The inner task, which has no exporter of its own, goes where the outer goes.
    """
    with task("outer", exporter=sink):
        try:
            with task("inner"):
                raise LookupError("no such user")
        except LookupError:
            pass
    inner, outer = sink.tasks
    assert [(e.error_type, e.recoverable) for e in inner.errors or ()] == [("LookupError", False)]
    (step,) = outer.steps or []
    assert step.metadata is not None
    assert step.metadata["outcome"] == "error"
    assert step.error is not None
    assert step.error.error_type == "LookupError"
    assert [(e.error_type, e.recoverable) for e in outer.errors or ()] == [("LookupError", True)]


def test_inner_task_failure_escaping_both_is_one_error_each(sink: ListSink) -> None:
    """The same exception escaping inner and outer is recorded once per trace."""
    with pytest.raises(LookupError):
        with task("outer", exporter=sink), task("inner", exporter=sink):
            raise LookupError("x")
    inner, outer = sink.tasks
    assert [e.recoverable for e in inner.errors or ()] == [False]
    assert [e.recoverable for e in outer.errors or ()] == [False]


# --- bounds and abandonment ----------------------------------------------------------------------


def test_max_steps_bounds_the_trace(log: logging.Logger, sink: ListSink) -> None:
    """At most max_steps steps; the last one says how many were left out."""
    with task("busy", max_steps=5):
        for i in range(12):
            log.info("event %d", i)
    steps = _only(sink).steps or []
    assert len(steps) == 5
    assert [s.description for s in steps[:4]] == [f"event {i}" for i in range(4)]
    assert (steps[4].step_number, steps[4].action) == (5, "truncated")
    assert steps[4].description == "8 more steps left out (max_steps=5)"
    assert steps[4].metadata == {"omitted_steps": 8}


def test_llm_calls_past_max_steps_still_count(log: logging.Logger, sink: ListSink) -> None:
    """Events left out past max_steps are not steps, but their LLM calls are in llm_usage."""
    with task("busy", max_steps=2):
        for i in range(5):
            log.info("call %d", i, extra={"llm_call": {"model": f"m{i % 2}", "prompt_tokens": 10}})
    trace = _only(sink)
    assert [(s.step_number, s.action) for s in trace.steps or ()] == [
        (1, "llm_inference"),
        (2, "truncated"),
    ]
    usage = trace.llm_usage
    assert usage is not None
    assert (usage.api_calls_count, usage.prompt_tokens, usage.model) == (5, 50, "multiple")
    assert [c.model for c in usage.calls or ()] == ["m0", "m1"]


def test_steps_past_max_steps_from_racing_threads_are_left_out(sink: ListSink) -> None:
    """Threads racing for the last places may record a step too many: the trace still keeps
    max_steps steps, and counts the rest as left out."""
    logger = logging.getLogger(f"tests.tasks.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = InfiniumHandler(exporter=sink)
    logger.addHandler(handler)
    try:
        with task("raced", max_steps=3) as t:
            for i in range(3):
                logger.info("event %d", i)
            # What a thread that passed the room check just before the others filled it adds.
            t._state.events.append(t._state.events[-1])
            logger.info("one more")
    finally:
        logger.removeHandler(handler)
    steps = _only(sink).steps or []
    assert [(s.step_number, s.action) for s in steps] == [(1, "log"), (2, "log"), (3, "truncated")]
    assert steps[2].metadata == {"omitted_steps": 3}


def test_a_logged_exception_keeps_no_frames_alive(log: logging.Logger, sink: ListSink) -> None:
    """The exception is rendered when logged: its traceback's frames are not kept by the task."""

    class Payload:
        pass

    def fail() -> weakref.ref[Payload]:
        payload = Payload()
        reference = weakref.ref(payload)
        try:
            raise ValueError(f"failed with {payload!r}")
        except ValueError:
            # Straight to the handler: no other handler (pytest's capture) keeps the record.
            record = log.makeRecord(
                log.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
            )
            log.handlers[0].handle(record)
        return reference

    with task("t"):
        reference = fail()
        gc.collect()
        assert reference() is None  # the frame (and its locals) is gone while the task runs
    (error,) = _only(sink).errors or []
    assert error.stack_trace is not None
    assert "in fail" in error.stack_trace


def test_max_steps_from_settings(sink: ListSink) -> None:
    """Without max_steps on the task, the handler's setting (INFINIUM_MAX_STEPS) applies."""
    logger = logging.getLogger(f"tests.tasks.{uuid.uuid4().hex}")
    logger.propagate = False
    handler = InfiniumHandler(exporter=sink, max_steps=3)
    logger.addHandler(handler)
    try:
        with task("t"):
            for i in range(3):
                logger.warning("event %d", i)
    finally:
        logger.removeHandler(handler)
    assert [s.action for s in _only(sink).steps or ()] == ["log", "log", "log"]
    with pytest.raises(ValueError, match="max_steps"):
        task("t", max_steps=0)


def test_abandoned_task_is_exported_when_collected(sink: ListSink) -> None:
    """A task entered and never exited is exported, marked abandoned, once it is collected."""

    def start_and_forget() -> None:
        task("forgotten", exporter=sink).__enter__()

    contextvars.copy_context().run(start_and_forget)
    gc.collect()
    with task("next", exporter=sink):  # a safe point: deferred tasks are exported here
        pass
    names = [t.name for t in sink.tasks]
    assert names == ["forgotten", "next"]
    (error,) = sink.tasks[0].errors or []
    assert (error.error_type, error.recoverable) == ("TaskAbandoned", False)
    assert error.message == "the task was garbage-collected without ending"


def test_abandoned_generator(log: logging.Logger, sink: ListSink) -> None:
    """A generator abandoned inside a task ends it when closed; nothing leaks into the caller."""

    def numbers() -> Iterator[int]:
        with task("generator"):
            log.info("first")
            yield 1
            yield 2

    gen = numbers()
    assert next(gen) == 1
    del gen
    gc.collect()
    assert current_task() is None
    with task("after", exporter=sink):
        log.info("next")
    generator, after = sink.tasks
    assert [s.description for s in generator.steps or ()] == ["first"]
    assert [e.error_type for e in generator.errors or ()] == ["GeneratorExit"]
    assert [s.description for s in after.steps or ()] == ["next"]


def test_every_way_a_task_ends_takes_it_off_the_open_set(
    log: logging.Logger, sink: ListSink
) -> None:
    """Untagged events skip the task lookup while no task is open: each way of ending one,
    (normally, by an exception, nested, abandoned and collected) must say it is no longer open,
    and an open one must be seen from a thread that has no task of its own."""
    assert not open_tasks
    with task("outer", exporter=sink):
        with task("inner", exporter=sink):
            assert len(open_tasks) == 2
        assert len(open_tasks) == 1
    assert not open_tasks

    with pytest.raises(KeyError), task("fails", exporter=sink):
        raise KeyError("x")
    assert not open_tasks

    contextvars.copy_context().run(lambda: task("forgotten", exporter=sink).__enter__())
    assert len(open_tasks) == 1
    gc.collect()
    with task("safe point", exporter=sink):
        pass
    assert not open_tasks

    with task("busy", exporter=sink) as busy:
        thread = threading.Thread(target=log.info, args=("from a thread without a task",))
        thread.start()
        thread.join()
        log.info("from the task's own thread")
        inside = busy.wrap(log.info)
        worker = threading.Thread(target=inside, args=("wrapped",))
        worker.start()
        worker.join()
    assert not open_tasks
    steps = [s.description for s in sink.tasks[-1].steps or ()]
    assert steps == ["from the task's own thread", "wrapped"]


def test_unexportable_task_never_breaks_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no credentials and no exporter, the block still runs and returns normally."""
    with task("nowhere") as t:
        t.update(output_summary="done")
    assert t.finished


def test_a_full_task_through_the_exporter_to_the_collector(
    infinium_collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps, LLM usage, a tool call, errors and a nested task pass the collector's strict checks."""
    monkeypatch.setenv("INFINIUM_BASE_URL", infinium_collector.base_url)
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    logger = logging.getLogger(f"tests.tasks.{uuid.uuid4().hex}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = InfiniumHandler()
    logger.addHandler(handler)
    try:
        with task("Resolve ticket", expected_outcome={"task_objective": "refund"}) as t:
            logger.info("planned", extra={"llm_call": {"model": "gpt-4o", "prompt_tokens": 90,
                        "completion_tokens": 12, "latency_ms": 700}})  # fmt: skip
            with task("Refund"):
                logger.info("called the API", extra={"tool_call": {"tool_name": "refund",
                            "http_status": 200}, "input_preview": "amount=19.99"})  # fmt: skip
            try:
                raise TimeoutError("mailer slow")
            except TimeoutError:
                logger.exception("mail failed once")
            t.update(output_summary="refunded")
        handler.flush()
        assert infinium_collector.wait_for(2, timeout=10)
    finally:
        logger.removeHandler(handler)
        handler.close()
    refund, resolve = (r.task for r in infinium_collector.traces())
    assert refund.name == "Refund"
    assert [s.action for s in resolve.steps or ()] == ["llm_inference", "subtask", "error"]
    assert resolve.llm_usage is not None
    assert resolve.llm_usage.total_tokens == 102
    assert [(e.error_type, e.recoverable) for e in resolve.errors or ()] == [("TimeoutError", True)]
    assert resolve.time_tracking is not None
    assert resolve.output_summary == "refunded"


# --- where a task that recorded nothing goes -------------------------------------------------------


def test_a_task_that_logged_nothing_goes_where_the_handlers_send(
    log: logging.Logger, sink: ListSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No event bound these tasks to a handler (only update(), a timeout or an exception
    before the first log): they go where the process's one handler sends, not to the default
    exporter, which here would have dropped them (no credentials)."""
    gc.collect()  # handlers and processors of earlier tests, left for the collector
    for name in list(os.environ):
        if name.startswith("INFINIUM_"):
            monkeypatch.delenv(name)
    with task("fields only") as handle:
        handle.update(output_summary="done")

    async def agent() -> None:
        async with task("timed out before its first log"):
            await asyncio.sleep(10)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):  # not yet TimeoutError on 3.10
            await asyncio.wait_for(agent(), 0.01)

    asyncio.run(main())
    with pytest.raises(KeyError), task("failed before its first log"):
        raise KeyError("x")
    assert [t.name for t in sink.tasks] == [
        "fields only",
        "timed out before its first log",
        "failed before its first log",
    ]
    assert sink.tasks[0].output_summary == "done"
    assert [e.error_type for e in sink.tasks[1].errors or ()] == ["CancelledError"]
    assert sink.tasks[0].environment is not None
    assert sink.tasks[0].environment.framework == "logging"


def test_a_task_that_logged_nothing_with_handlers_sending_apart_goes_to_the_default(
    log: logging.Logger, sink: ListSink
) -> None:
    """Handlers sending to two places: which one meant the task is unknowable, so it goes
    to the default exporter, as documented (here a capture, which takes everything)."""
    gc.collect()  # handlers and processors of earlier tests, left for the collector
    other = ListSink()
    handler = InfiniumHandler(exporter=other)
    try:
        with capture_tasks() as captured, task("nothing logged"):
            pass
        assert [t.name for t in captured] == ["nothing logged"]
        with task("nothing logged either"):
            pass
        assert sink.tasks == [] and other.tasks == []
    finally:
        handler.close()
    with task("after the other handler closed"):
        pass
    assert [t.name for t in sink.tasks] == ["after the other handler closed"]


@pytest.mark.parametrize(
    ("code", "failed"),
    [(0, False), (None, False), (False, False), (3, True), ("bye", True), (0.0, True)],
)
def test_sys_exit_in_a_task(
    log: logging.Logger, sink: ListSink, code: object, failed: bool
) -> None:
    """sys.exit(0) (or with no status) ends a task as successful; any other status is an
    error, as the process's exit status says."""

    def agent() -> None:
        with task("outer"), task("exits"):
            log.info("done")
            sys.exit(code)  # type: ignore[arg-type]

    with pytest.raises(SystemExit):
        agent()
    exits, outer = sink.tasks
    assert [e.error_type for e in exits.errors or ()] == (["SystemExit"] if failed else [])
    subtask = (outer.steps or [])[0]
    assert subtask.metadata is not None
    assert subtask.metadata["outcome"] == ("error" if failed else "success")


def test_exporter_flush_sends_the_trace_of_a_generator_closed_early(
    infinium_collector: LocalCollector,
) -> None:
    """A generator task closed while suspended ends where exporting is not safe, so its trace
    waits for a safe point: Exporter.flush() is one (the README's advice before os._exit)."""
    with make_exporter(infinium_collector) as exporter:

        @task("closed early", exporter=exporter)
        def numbers() -> Iterator[int]:
            yield from range(3)

        for _ in numbers():
            break
        assert exporter.flush(5)
        assert exporter.stats().sent == 1
    assert [t.task.name for t in infinium_collector.traces()] == ["closed early"]


def test_records_under_a_mocked_clock_are_not_taken_for_one(sink: ListSink) -> None:
    """time.time() mocked to one value hands every LogRecord the same ``created`` object:
    with two handlers on a record's way (each must know a record it saw twice), different
    records are still different steps and different traces."""
    logger = logging.getLogger(f"tests.tasks.{uuid.uuid4().hex}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handlers = [InfiniumHandler(exporter=sink), InfiniumHandler(exporter=sink)]
    for handler in handlers:
        logger.addHandler(handler)
    try:
        with (
            mock.patch("time.time", return_value=1_700_000_000.0),
            mock.patch("time.time_ns", return_value=1_700_000_000_000_000_000),
        ):
            with task("T"):
                for i in range(3):
                    logger.info("step %d", i)
            logger.info("tagged A", extra={"infinium": True})
            logger.info("tagged B", extra={"infinium": True})
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
    assert [t.name for t in sink.tasks] == ["T", "tagged A", "tagged B"]
    assert [s.description for s in sink.tasks[0].steps or ()] == ["step 0", "step 1", "step 2"]


def test_a_child_that_logged_nothing_leaves_its_parent_to_its_own_events(
    log: logging.Logger, sink: ListSink
) -> None:
    """The child goes where the handler sends without binding the parent: the parent's trace
    is described by its own first event (its logger among its tags)."""
    gc.collect()  # handlers and processors of earlier tests, left for the collector
    with task("outer"):
        with task("inner"):
            pass
        log.info("hello")
    inner, outer = sink.tasks
    assert (inner.name, outer.name) == ("inner", "outer")
    assert outer.environment is not None and outer.environment.custom_tags is not None
    assert outer.environment.custom_tags["logger"] == log.name


def test_disabled_keeps_a_task_from_its_own_sink_even_with_warnings_as_errors(
    sink: ListSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INFINIUM_DISABLED=true with another variable invalid: reading the settings warns (an
    error here, as under ``-W error``); the off switch still holds."""
    monkeypatch.setattr(settings_module, "_warned_left_out", set())
    monkeypatch.setenv("INFINIUM_DISABLED", "true")
    monkeypatch.setenv("INFINIUM_TIMEOUT", "abc")
    with task("t", exporter=sink):
        pass
    assert sink.tasks == []
