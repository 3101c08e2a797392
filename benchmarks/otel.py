"""Figure 12: what a GenAI span costs with InfiniumSpanProcessor beside a BatchSpanProcessor.

Both sides make the same span (a chat call's request and response attributes,
as the openai-v2 instrumentation sets them) on an SDK ``TracerProvider`` with a
``BatchSpanProcessor`` whose exporter discards; ours adds an
:class:`~infinium_logging.otel.InfiniumSpanProcessor` on a held exporter, and
its spans are steps of a running ``task()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from infinium_logging.otel import InfiniumSpanProcessor
from infinium_logging.tasks import task

from .caller import _DISCARD, _Held, _row
from .common import Plan
from .timing import Row, compare, loop

__all__ = ["figure_12"]

REQUEST = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.system": "openai",
    "gen_ai.request.temperature": 0.2,
}
RESPONSE = {
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.response.id": "chatcmpl-123",
    "gen_ai.usage.input_tokens": 812,
    "gen_ai.usage.output_tokens": 164,
}
SPAN = (
    'with tracer.start_as_current_span("chat gpt-4o-mini", attributes=REQUEST) as span:\n'
    "    span.set_attributes(RESPONSE)"
)


class _Discarding(SpanExporter):
    """The BatchSpanProcessor's exporter: takes every batch, keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _side(held: _Held | None) -> tuple[Callable[[int], float], TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discarding()))
    namespace: dict[str, Any] = {
        "tracer": provider.get_tracer("bench"),
        "REQUEST": REQUEST,
        "RESPONSE": RESPONSE,
    }
    run = loop(SPAN, namespace)
    if held is None:

        def baseline(n: int) -> float:
            with task("Benchmark task", exporter=_DISCARD, max_steps=100_000):
                return run(n)

        return baseline, provider
    # Few traces (one a chunk, of ``n`` steps): one held exporter takes them all.
    exporter, _ = held.take(1)
    provider.add_span_processor(InfiniumSpanProcessor(exporter))

    def ours(n: int) -> float:
        with task("Benchmark task", exporter=exporter, max_steps=100_000):
            return run(n)

    return ours, provider


def figure_12(plan: Plan, base_url: str) -> list[Row]:
    """A GenAI span in a task: with InfiniumSpanProcessor vs BatchSpanProcessor alone."""
    held = _Held(base_url)
    ours, ours_provider = _side(held)
    baseline, baseline_provider = _side(None)
    try:
        pair = compare(
            ours, baseline, n=plan.calls, rounds=plan.rounds, chunks=plan.chunks, warmup=plan.calls
        )
    finally:
        ours_provider.shutdown()
        baseline_provider.shutdown()
        held.close()
    return [
        _row(
            "12",
            "GenAI span in task(), InfiniumSpanProcessor added",
            pair,
            "BatchSpanProcessor alone",
            1.3,
            note="a chat span's openai-v2 attributes; ours also makes it a step",
        )
    ]
