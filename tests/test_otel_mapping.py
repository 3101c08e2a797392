"""What a span's attributes become: older GenAI names, OpenInference's, content limits, and
the bounds on traces waiting for their root span.  Spans made with the real SDK carrying
what those instrumentations set, captured with capture_tasks()."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode, Tracer

from infinium_logging import capture_tasks, task
from infinium_logging.model import TaskData
from infinium_logging.otel import InfiniumSpanProcessor
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET


class Sink:
    """Where the processor sends: the traces, as TaskData."""

    def __init__(self) -> None:
        self.traces: list[Any] = []

    def submit(self, trace: Any) -> bool:
        self.traces.append(trace)
        return True


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tracer(processor: InfiniumSpanProcessor) -> tuple[TracerProvider, Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider, provider.get_tracer("tests.otel.mapping")


@pytest.fixture
def captured() -> Iterator[tuple[list[TaskData], Tracer, InfiniumSpanProcessor]]:
    """A processor on a provider of its own, its traces captured."""
    processor = InfiniumSpanProcessor(Sink())
    provider, tracer = _tracer(processor)
    with capture_tasks() as traces:
        yield traces, tracer, processor
    provider.shutdown()


def test_older_gen_ai_names_and_span_events(
    captured: tuple[list[TaskData], Tracer, InfiniumSpanProcessor],
) -> None:
    """gen_ai.system, gen_ai.usage.prompt_tokens/completion_tokens and the prompt and
    completion span events of conventions before 1.28 make the same llm_call."""
    traces, tracer, _ = captured
    with task("older"), tracer.start_as_current_span("openai.chat") as span:
        span.set_attributes(
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4",
                "gen_ai.usage.prompt_tokens": 9,
                "gen_ai.usage.completion_tokens": 3,
                "infinium.purpose": "classify",
            }
        )
        span.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "What is 2+2?"})
        span.add_event("gen_ai.content.completion", {"gen_ai.completion": "4"})
    (trace,) = traces
    (step,) = trace.steps or []
    call = step.llm_call
    assert call is not None
    assert (call.model, call.provider, call.prompt_tokens, call.completion_tokens) == (
        "gpt-4",
        "openai",
        9,
        3,
    )
    assert call.purpose == "classify"
    assert (step.input_preview, step.output_preview) == ("What is 2+2?", "4")


def test_openinference_llm_and_tool_spans(
    captured: tuple[list[TaskData], Tracer, InfiniumSpanProcessor],
) -> None:
    """OpenInference's span kinds and llm.* attributes: an LLM step with its messages'
    previews and temperature, a TOOL step with its input and output, a CHAIN no step."""
    traces, tracer, _ = captured
    with task("openinference"), tracer.start_as_current_span("agent") as chain:
        chain.set_attribute("openinference.span.kind", "CHAIN")
        with tracer.start_as_current_span("ChatCompletion") as llm:
            llm.set_attributes(
                {
                    "openinference.span.kind": "LLM",
                    "llm.model_name": "claude-sonnet-4",
                    "llm.provider": "anthropic",
                    "llm.token_count.prompt": 120,
                    "llm.token_count.completion": 40,
                    "llm.invocation_parameters": json.dumps({"temperature": 0.7}),
                    "llm.input_messages.0.message.role": "system",
                    "llm.input_messages.0.message.content": "You are terse.",
                    "llm.input_messages.1.message.role": "user",
                    "llm.input_messages.1.message.content": "y" * 3000,
                    "llm.output_messages.0.message.role": "assistant",
                    "llm.output_messages.0.message.content": "Done.",
                    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "lookup",
                }
            )
        with tracer.start_as_current_span("lookup") as tool:
            tool.set_attributes(
                {
                    "openinference.span.kind": "TOOL",
                    "tool.name": "lookup",
                    "input.value": '{"order": 7}',
                    "output.value": "shipped",
                }
            )
            tool.set_status(Status(StatusCode.ERROR, "lookup timed out"))
    (trace,) = traces
    llm_step, tool_step = trace.steps or []
    call = llm_step.llm_call
    assert call is not None
    assert (call.model, call.provider, call.temperature) == ("claude-sonnet-4", "anthropic", 0.7)
    assert (call.prompt_tokens, call.completion_tokens) == (120, 40)
    assert llm_step.input_preview is not None
    assert llm_step.input_preview.startswith("[system] You are terse.\n[user] yyy")
    assert len(llm_step.input_preview) <= 500
    assert llm_step.output_preview == "Done."
    assert llm_step.metadata is not None and llm_step.metadata["tool_calls"] == ["lookup"]
    used = tool_step.tool_call
    assert used is not None
    assert (used.tool_name, used.input_summary, used.output_summary) == (
        "lookup",
        '{"order": 7}',
        "shipped",
    )
    assert tool_step.error is not None and tool_step.error.message == "lookup timed out"


def test_content_is_left_out_when_told(captured: tuple[list[TaskData], Tracer, Any]) -> None:
    """capture_content=False takes no preview even where the instrumentation captured one."""
    traces, _, _ = captured
    processor = InfiniumSpanProcessor(Sink(), capture_content=False)
    provider, tracer = _tracer(processor)
    with task("no content"), tracer.start_as_current_span("chat") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "m",
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "secret plan"}]}]
                ),
            }
        )
    provider.shutdown()
    (step,) = traces[0].steps or []
    assert step.input_preview is None and step.llm_call is not None


def test_open_traces_are_bounded_by_count_bytes_and_age() -> None:
    """Traces whose root has not ended: the oldest go past max_open_traces, past
    max_open_bytes (a step that alone does not fit goes too), and past max_trace_age, and
    every dropped step is counted."""
    clock = Clock()
    sink = Sink()
    processor = InfiniumSpanProcessor(
        sink, max_open_traces=2, max_open_bytes=9000, max_trace_age=60.0, clock=clock
    )
    provider, tracer = _tracer(processor)
    roots = [tracer.start_span(f"root {n}") for n in range(4)]

    def call(root: Any, text: str = "") -> None:
        from opentelemetry.trace import set_span_in_context  # noqa: PLC0415

        span = tracer.start_span("chat", context=set_span_in_context(root))
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
        if text:
            span.set_attribute("gen_ai.completion", text)
        span.end()

    call(roots[0])
    call(roots[1])
    call(roots[2])  # a third open trace: root 0's step goes
    assert processor.dropped["open_traces"] == 1 and processor.open_traces == 2
    call(roots[2], "z" * 3000)
    call(roots[2], "z" * 3000)
    call(roots[2], "z" * 3000)  # over 9000 bytes: root 1's trace goes, then this step
    assert processor.dropped["open_bytes"] == 2
    clock.now += 61
    call(roots[3])  # root 2's trace is older than a minute
    assert processor.dropped["open_age"] == 3
    for root in roots:
        root.end()
    assert [t["name"] if isinstance(t, dict) else t.name for t in sink.traces] == ["root 3"]
    provider.shutdown()


class Refusing:
    """A sink that raises, as a broken sink of one's own might."""

    def submit(self, trace: Any) -> bool:
        raise RuntimeError("sink broken")


def test_span_processing_never_raises_into_the_code_that_ends_the_span() -> None:
    """A sink that raises and attributes of the wrong types: the span still ends quietly,
    and the failure is reported on the library's logger, not raised."""
    processor = InfiniumSpanProcessor(Refusing())
    provider, tracer = _tracer(processor)
    with tracer.start_as_current_span("chat") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": "many",
                "gen_ai.input.messages": "{not json",
                "gen_ai.response.finish_reasons": ["stop"],
            }
        )
    with task("in a task", exporter=Sink()), tracer.start_as_current_span("tool") as tool:
        tool.set_attribute("gen_ai.operation.name", "execute_tool")
    provider.shutdown()
    assert processor.open_traces == 0


def test_content_from_the_instrumentations_log_events() -> None:
    """Messages and choices emitted as GenAI log events inside the span (as the openai-v2
    instrumentation emits them with content capture on) become its previews and tools."""
    from opentelemetry._logs import LogRecord  # noqa: PLC0415
    from opentelemetry.sdk._logs import LoggerProvider  # noqa: PLC0415

    processor = InfiniumSpanProcessor(Sink())
    provider, tracer = _tracer(processor)
    logs = LoggerProvider()
    logs.add_log_record_processor(processor.log_processor)
    logger = logs.get_logger("tests.otel.events")
    choice: Any = {
        "index": 0,
        "finish_reason": "tool_calls",
        "message": {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup"}}],
        },
    }
    with capture_tasks() as traces:
        with task("events"), tracer.start_as_current_span("chat m") as span:
            span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
            logger.emit(LogRecord(event_name="gen_ai.user.message", body={"content": "Order 7?"}))
            logger.emit(LogRecord(event_name="gen_ai.choice", body=choice))
        with task("details"), tracer.start_as_current_span("chat m") as span:
            span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
            answer = [{"role": "assistant", "parts": [{"type": "text", "content": "Shipped."}]}]
            details = {"gen_ai.output.messages": json.dumps(answer)}
            logger.emit(
                LogRecord(
                    event_name="gen_ai.client.inference.operation.details", attributes=details
                )
            )
    provider.shutdown()
    (step,) = traces[0].steps or []
    assert (step.input_preview, step.output_preview) == ("[user] Order 7?", "Checking.")
    assert step.metadata is not None and step.metadata["tool_calls"] == ["lookup"]
    (detailed,) = traces[1].steps or []
    assert detailed.output_preview == "Shipped."
