"""OpenTelemetry GenAI spans become steps: the real openai SDK, instrumented by the real
openai-v2 instrumentation, against a fake provider on 127.0.0.1, delivering to the local
collector through the real Exporter."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from exporters import make_exporter, wait_until
from fake_provider import ANSWER, ANTHROPIC_USAGE, STREAM_USAGE, USAGE, FakeProvider
from openinference.instrumentation.anthropic import AnthropicInstrumentor
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, Tracer
from opentelemetry.util.genai.handler import TelemetryHandler

from infinium_logging import InfiniumHandler, task
from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.model import TaskData
from infinium_logging.otel import InfiniumSpanProcessor
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET
from infinium_logging.timestamps import iso_timestamp

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ASK: list[Any] = [{"role": "user", "content": "Where is my refund?"}]


class World:
    """What the tests of this module share: one provider (an instrumentor is instrumented
    once per process), one collector, one exporter, one fake provider."""

    def __init__(
        self,
        collector: LocalCollector,
        exporter: Exporter,
        processor: InfiniumSpanProcessor,
        provider: TracerProvider,
        client: openai.OpenAI,
        claude: anthropic.Anthropic,
    ) -> None:
        self.collector = collector
        self.exporter = exporter
        self.processor = processor
        self.provider = provider
        self.client = client
        self.claude = claude
        self.tracer: Tracer = provider.get_tracer("tests.otel")

    def trace_named(self, name: str) -> TaskData:
        """The one trace of that name the collector received (after a flush)."""
        assert self.exporter.flush(timeout=10)
        found: list[TaskData] = []

        def arrived() -> bool:
            found[:] = [t.task for t in self.collector.traces() if t.task.name == name]
            return bool(found)

        assert wait_until(arrived, timeout=10), name
        assert len(found) == 1, found
        return found[0]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The instrumented SDK, an InfiniumSpanProcessor beside a BatchSpanProcessor, a collector."""
    with (
        LocalCollector(agent_id=TEST_AGENT_ID, agent_secret=TEST_AGENT_SECRET) as collector,
        FakeProvider() as fake,
    ):
        exporter = make_exporter(collector)
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
        processor = InfiniumSpanProcessor(exporter)
        provider.add_span_processor(processor)
        logger_provider = LoggerProvider()
        logger_provider.add_log_record_processor(processor.log_processor)
        instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
        instrumentor.instrument(tracer_provider=provider, logger_provider=logger_provider)
        openinference = AnthropicInstrumentor()
        openinference.instrument(tracer_provider=provider)
        client = openai.OpenAI(
            base_url=fake.base_url, api_key="sk-test-not-a-secret", max_retries=0
        )
        claude = anthropic.Anthropic(base_url=fake.root, api_key="sk-ant-test", max_retries=0)
        try:
            yield World(collector, exporter, processor, provider, client, claude)
        finally:
            instrumentor.uninstrument()
            openinference.uninstrument()
            client.close()
            claude.close()
            provider.shutdown()
            exporter.shutdown(5)


def test_importing_the_package_never_imports_opentelemetry() -> None:
    """``import infinium_logging`` (and its handler and processor) leaves OpenTelemetry out."""
    code = (
        "import sys, infinium_logging\n"
        "infinium_logging.InfiniumHandler, infinium_logging.InfiniumProcessor\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_calls_in_a_task_are_its_steps_with_usage(world: World) -> None:
    """A plain answer, a tool-call answer, a stream with include_usage and an error answer,
    made inside task(): four llm_call steps with model, provider and tokens, the tool the
    answer asks for, the error on its step, and llm_usage summed as for logged calls."""
    client = world.client
    with task("Answer ticket T-1"):
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK, temperature=0.2)
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS)
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=ASK,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="missing-model", messages=ASK)
    trace = world.trace_named("Answer ticket T-1")
    steps = trace.steps or []
    assert [s.action for s in steps] == ["llm_call"] * 4
    calls = [s.llm_call for s in steps]
    assert all(call is not None and call.provider == "openai" for call in calls)
    first, _tool, streamed, failed = (c for c in calls if c is not None)
    assert first.model == "gpt-4o-mini-2024-07-18"
    assert (first.prompt_tokens, first.completion_tokens) == (31, 12)
    assert first.temperature == 0.2
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (17, 5)
    assert failed.model == "missing-model" and failed.prompt_tokens is None
    assert steps[1].metadata is not None and steps[1].metadata["finish_reasons"] == ["tool_calls"]
    # The tool the answer asks for, from the instrumentation's gen_ai.choice log event.
    assert steps[1].metadata["tool_calls"] == ["get_weather"]
    error = steps[3].error
    assert error is not None and error.error_type == "NotFoundError"
    assert "missing-model" in error.message
    assert trace.errors is not None and trace.errors[0].error_type == "NotFoundError"
    usage = trace.llm_usage
    assert usage is not None
    assert usage.api_calls_count == 4
    assert usage.prompt_tokens == 2 * USAGE["prompt_tokens"] + STREAM_USAGE["prompt_tokens"]
    assert usage.completion_tokens == 2 * USAGE["completion_tokens"] + 5
    assert usage.provider == "openai"
    assert all(s.input_preview is None and s.output_preview is None for s in steps)


def test_anthropic_through_openinference(world: World) -> None:
    """The real anthropic SDK instrumented by OpenInference: llm_call steps with model,
    provider and tokens, the answer's text and the tool a tool_use answer asks for."""
    ask: Any = [{"role": "user", "content": "Weather in Paris?"}]
    tool: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    with task("Claude answers"):
        world.claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=ask)
        world.claude.messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=ask, tools=tool
        )
    trace = world.trace_named("Claude answers")
    plain, tool_use = trace.steps or []
    for step in (plain, tool_use):
        call = step.llm_call
        assert call is not None
        assert (call.model, call.provider) == ("claude-sonnet-4-5", "anthropic")
        assert call.prompt_tokens == ANTHROPIC_USAGE["input_tokens"]
        assert call.completion_tokens == ANTHROPIC_USAGE["output_tokens"]
        assert step.input_preview == "[user] Weather in Paris?"
    assert plain.output_preview == ANSWER
    assert tool_use.metadata is not None and tool_use.metadata["tool_calls"] == ["get_weather"]
    assert tool_use.metadata["finish_reasons"] == ["tool_use"]
    assert trace.llm_usage is not None and trace.llm_usage.total_tokens == 2 * 33


def test_embeddings_are_llm_calls(world: World) -> None:
    """An embeddings call is an llm_call step too, its prompt tokens counted."""
    with task("Embed the ticket"):
        world.client.embeddings.create(model="text-embedding-3-small", input="refund")
    (step,) = world.trace_named("Embed the ticket").steps or []
    assert step.description == "embeddings openai/text-embedding-3-small"
    assert step.llm_call is not None and step.llm_call.prompt_tokens == 4


def test_a_stream_consumed_on_another_thread_is_a_step_of_its_task(world: World) -> None:
    """The span starts in the task and ends where the stream is read: still the task's step."""
    with task("Stream elsewhere"):
        stream = world.client.chat.completions.create(
            model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
        reader = threading.Thread(target=lambda: list(stream))
        reader.start()
        reader.join(timeout=10)
    trace = world.trace_named("Stream elsewhere")
    assert len(trace.steps or []) == 1
    assert trace.llm_usage is not None and trace.llm_usage.total_tokens == 22


def test_outside_a_task_the_otel_trace_is_one_trace(world: World) -> None:
    """An agent's root span with two calls and a tool span under it: one trace when the
    root ends, named and timed by the root, steps in start order, the tool a tool_call."""
    handler = TelemetryHandler(tracer_provider=world.provider)
    with world.tracer.start_as_current_span("support-agent run") as root:
        world.client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS)
        with handler.tool("get_weather", tool_call_id="call_weather_1"):
            pass
        world.client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        assert world.processor.open_traces == 1
        root.set_status(Status(StatusCode.ERROR, "the customer hung up"))
    trace = world.trace_named("support-agent run")
    assert world.processor.open_traces == 0
    steps = trace.steps or []
    assert [s.action for s in steps] == ["llm_call", "tool_call", "llm_call"]
    assert steps[1].tool_call is not None and steps[1].tool_call.tool_name == "get_weather"
    assert steps[1].metadata is not None and steps[1].metadata["tool_call_id"] == "call_weather_1"
    assert trace.llm_usage is not None and trace.llm_usage.api_calls_count == 2
    assert trace.llm_usage.total_tokens == 2 * USAGE["total_tokens"]
    assert trace.errors is not None and trace.errors[0].message == "the customer hung up"
    assert trace.environment is not None and trace.environment.framework == "opentelemetry"
    assert isinstance(root, ReadableSpan)
    start, end = root.start_time, root.end_time
    assert start is not None and end is not None
    assert trace.current_datetime == iso_timestamp(start / 1e9)
    assert trace.time_tracking is not None
    # The end is the start plus the elapsed time, each a float: equal to the microsecond give
    # or take one rounding.
    assert trace.time_tracking.end_time is not None
    ended = _dt.datetime.fromisoformat(trace.time_tracking.end_time.replace("Z", "+00:00"))
    assert abs(ended.timestamp() - end / 1e9) <= 2e-6
    assert trace.duration == pytest.approx((end - start) / 1e9, abs=1e-5)


def test_a_lone_call_outside_any_span_is_a_trace_of_its_own(world: World) -> None:
    """A call with no parent span: its span is the root, its trace has its one step."""
    world.client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    trace = world.trace_named("chat gpt-4o-mini")
    assert [s.action for s in trace.steps or []] == ["llm_call"]


def test_the_sdks_own_log_lines_are_not_steps(world: World) -> None:
    """With a handler on the root logger at DEBUG, openai's and httpx's lines add no step
    beside the call's; the application's own line is one."""
    root = logging.getLogger()
    handler = InfiniumHandler(exporter=world.exporter)
    levels = {name: logging.getLogger(name).level for name in ("openai", "httpx", "httpcore")}
    root.addHandler(handler)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        with task("No double counting"):
            logging.getLogger("tests.app").warning("asking the model")
            world.client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    trace = world.trace_named("No double counting")
    assert [s.action for s in trace.steps or []] == ["log", "llm_call"]


def test_instrument_is_the_one_line(infinium_collector: LocalCollector, tmp_path: Path) -> None:
    """In a fresh process: instrument() sets a global SDK provider, activates the installed
    openai instrumentation once (a second call adds nothing), and with capture_content the
    previews and the tool an answer asks for arrive, cut to the preview limit."""
    script = tmp_path / "one_line.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import openai
            from fake_provider import FakeProvider
            from infinium_logging import get_default_exporter, task
            from infinium_logging.otel import instrument

            import logging
            logging.basicConfig(level=logging.INFO)
            print(instrument(capture_content=True))
            print(instrument(capture_content=True))
            with FakeProvider() as fake:
                client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
                with task("Content"):
                    client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[
                            {{"role": "system", "content": "Be brief."}},
                            {{"role": "user", "content": "x" * 2000}},
                        ],
                    )
                    client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{{"role": "user", "content": "Weather?"}}],
                        tools={TOOLS!r},
                    )
            assert get_default_exporter().flush(timeout=10)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFINIUM_", "OTEL_"))}
    env.update(
        INFINIUM_BASE_URL=infinium_collector.base_url,
        INFINIUM_AGENT_ID=TEST_AGENT_ID,
        INFINIUM_AGENT_SECRET=TEST_AGENT_SECRET,
    )
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    active = (
        "['opentelemetry.instrumentation.openai_v2', 'openinference.instrumentation.anthropic']"
    )
    assert lines[0] == lines[1] == active
    assert infinium_collector.wait_for(1, timeout=10)
    (trace,) = [t.task for t in infinium_collector.traces()]
    plain, tool = trace.steps or []
    assert plain.input_preview is not None and plain.input_preview.startswith("[system] Be brief.")
    assert len(plain.input_preview) <= 500
    assert plain.output_preview == ANSWER
    assert tool.metadata is not None and tool.metadata["tool_calls"] == ["get_weather"]
    assert tool.llm_call is not None and tool.llm_call.prompt_tokens == USAGE["prompt_tokens"]
