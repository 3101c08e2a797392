"""``instrument()``, the one line: the span processor on the global provider, instrumentors on."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
from typing import Any, Final

from opentelemetry import _logs, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import TracerProvider

from infinium_logging._default import TaskSink

from ._processor import InfiniumSpanProcessor

__all__ = ["INSTRUMENTORS", "instrument"]

_log = logging.getLogger("infinium_logging.otel")

#: The GenAI instrumentations looked for, by what they instrument: for each, the first one
#: installed is activated, never two (two would make two spans, two steps, of one call).
INSTRUMENTORS: Final[tuple[tuple[str, tuple[tuple[str, str], ...]], ...]] = (
    (
        "openai",
        (
            ("opentelemetry.instrumentation.openai_v2", "OpenAIInstrumentor"),
            ("opentelemetry.instrumentation.openai", "OpenAIInstrumentor"),
            ("openinference.instrumentation.openai", "OpenAIInstrumentor"),
        ),
    ),
    (
        "anthropic",
        (
            ("opentelemetry.instrumentation.anthropic", "AnthropicInstrumentor"),
            ("openinference.instrumentation.anthropic", "AnthropicInstrumentor"),
        ),
    ),
    (
        "google-genai",
        (
            ("opentelemetry.instrumentation.google_genai", "GoogleGenAiSdkInstrumentor"),
            ("openinference.instrumentation.google_genai", "GoogleGenAIInstrumentor"),
        ),
    ),
    ("vertexai", (("opentelemetry.instrumentation.vertexai", "VertexAIInstrumentor"),)),
    (
        "bedrock",
        (
            ("opentelemetry.instrumentation.bedrock", "BedrockInstrumentor"),
            ("openinference.instrumentation.bedrock", "BedrockInstrumentor"),
        ),
    ),
    (
        "mistralai",
        (
            ("opentelemetry.instrumentation.mistralai", "MistralAiInstrumentor"),
            ("openinference.instrumentation.mistralai", "MistralAIInstrumentor"),
        ),
    ),
    ("cohere", (("opentelemetry.instrumentation.cohere", "CohereInstrumentor"),)),
    ("groq", (("openinference.instrumentation.groq", "GroqInstrumentor"),)),
    ("litellm", (("openinference.instrumentation.litellm", "LiteLLMInstrumentor"),)),
    (
        "langchain",
        (
            ("openinference.instrumentation.langchain", "LangChainInstrumentor"),
            ("opentelemetry.instrumentation.langchain", "LangchainInstrumentor"),
        ),
    ),
    ("llama-index", (("openinference.instrumentation.llama_index", "LlamaIndexInstrumentor"),)),
    (
        "openai-agents",
        (("openinference.instrumentation.openai_agents", "OpenAIAgentsInstrumentor"),),
    ),
    ("crewai", (("openinference.instrumentation.crewai", "CrewAIInstrumentor"),)),
    ("dspy", (("openinference.instrumentation.dspy", "DSPyInstrumentor"),)),
)

_lock: Final = threading.Lock()
#: The processor instrument() added, and to which provider.
_installed: dict[str, Any] = {}
#: The instrumentor modules activated by instrument(), in order.
_activated: list[str] = []


def _content_environment() -> None:
    """Ask the OpenTelemetry GenAI instrumentations to record content on their spans (only
    where the environment does not say otherwise)."""
    os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    opt_in = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    if "gen_ai" not in opt_in:
        joined = ",".join(filter(None, (opt_in, "gen_ai_latest_experimental")))
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = joined


def _provider(given: Any) -> Any:
    """The provider to add the processor to: ``given``, else the global one, else a new SDK
    provider made the global one."""
    if given is not None:
        return given
    current = trace.get_tracer_provider()
    if callable(getattr(current, "add_span_processor", None)):
        return current
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    found = trace.get_tracer_provider()  # another thread may have set one first
    return found if callable(getattr(found, "add_span_processor", None)) else provider


def _logger_provider() -> Any:
    """The global LoggerProvider, an SDK one made the global one when there is none: the
    instrumentations that record tool calls and content as log events emit them there."""
    current = _logs.get_logger_provider()
    if callable(getattr(current, "add_log_record_processor", None)):
        return current
    provider = LoggerProvider()
    _logs.set_logger_provider(provider)
    found = _logs.get_logger_provider()
    return found if callable(getattr(found, "add_log_record_processor", None)) else provider


def _activate(provider: Any, only: frozenset[str] | None) -> list[str]:
    activated: list[str] = []
    for library, candidates in INSTRUMENTORS:
        if only is not None and library not in only:
            continue
        for module_name, class_name in candidates:
            try:
                if importlib.util.find_spec(module_name) is None:
                    continue
            except (ImportError, ValueError):  # a parent package missing
                continue
            try:
                instrumentor = getattr(importlib.import_module(module_name), class_name)()
                if not instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.instrument(tracer_provider=provider)
                if instrumentor.is_instrumented_by_opentelemetry:
                    activated.append(module_name)
                    break  # one per library
            except Exception as error:  # a broken instrumentation must not stop the others
                _log.warning("infinium_logging.otel: %s not activated: %r", module_name, error)
    return activated


def instrument(
    exporter: TaskSink | None = None,
    *,
    tracer_provider: Any = None,
    capture_content: bool = False,
    libraries: tuple[str, ...] | None = None,
) -> list[str]:
    """Record every LLM and tool call as an Infinium step: the one line.

    Adds an :class:`InfiniumSpanProcessor` (sending to ``exporter``, by default
    the process-wide default exporter) to ``tracer_provider``, by default the
    global one (an SDK ``TracerProvider`` is made and set as the global one when
    there is none), its ``log_processor`` to the global ``LoggerProvider`` (made
    likewise), for the instrumentations that record tool calls and content as log
    events, and activates the GenAI instrumentations that are installed
    (:data:`INSTRUMENTORS`; ``libraries`` names the ones to look for, e.g.
    ``("openai",)``).  ``capture_content=True`` asks the OpenTelemetry GenAI
    instrumentations to record prompts and answers on their spans (where the
    environment does not say otherwise), which become the steps' previews.

    Idempotent: a second call adds no second processor and activates what was
    installed since.  Returns (and logs at INFO on ``infinium_logging.otel``)
    the instrumentation modules active, e.g.
    ``["opentelemetry.instrumentation.openai_v2"]``.
    """
    with _lock:
        if capture_content:
            _content_environment()
        provider = _provider(tracer_provider)
        if _installed.get("provider") is not provider:
            processor = InfiniumSpanProcessor(exporter)
            provider.add_span_processor(processor)
            _installed.update(provider=provider, processor=processor)
            _logger_provider().add_log_record_processor(processor.log_processor)
        only = None if libraries is None else frozenset(libraries)
        for name in _activate(provider, only):
            if name not in _activated:
                _activated.append(name)
        result = list(_activated)
    if result:
        _log.info("infinium_logging.otel: recording GenAI spans from %s", ", ".join(result))
    else:
        _log.info(
            "infinium_logging.otel: no GenAI instrumentation installed; spans that other "
            "code makes on this provider are recorded"
        )
    return result
