"""GenAI log events: what some instrumentations record as OpenTelemetry log events, not on
the span (the openai-v2 instrumentation's messages and choices: the tool calls an answer
asks for, and with content capture the prompt and the answer; the current conventions'
``gen_ai.client.inference.operation.details``), kept for the span they belong to until it
ends."""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.sdk._logs import LogRecordProcessor

from infinium_logging import _default

__all__ = ["GenAIEvents", "with_logged"]

#: Spans whose events are kept at once (a span that never ends must not hold them forever).
_MAX_SPANS: Final = 4_096
#: Events kept per span (a conversation's messages, its answers).
_MAX_EVENTS: Final = 64

#: The current conventions' one event per call: its attributes carry the messages.
_DETAILS: Final = "gen_ai.client.inference.operation.details"
_DETAILED: Final = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")

_INPUT_ROLES: Final = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.developer.message": "developer",
}


class GenAIEvents(LogRecordProcessor):
    """A log record processor that keeps the ``gen_ai.*`` events of each span, by span id,
    for :class:`~infinium_logging.otel.InfiniumSpanProcessor` to read when the span ends."""

    def __init__(self) -> None:
        self._by_span: collections.OrderedDict[int, list[tuple[str, Any]]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def on_emit(self, log_record: Any) -> None:
        """Keep a GenAI event emitted inside a span."""
        try:
            record = getattr(log_record, "log_record", log_record)
            attributes = getattr(record, "attributes", None) or {}
            name = getattr(record, "event_name", None) or attributes.get("event.name")
            span_id = getattr(record, "span_id", None)
            if not isinstance(name, str) or not name.startswith("gen_ai.") or not span_id:
                return
            with self._lock:
                events = self._by_span.get(span_id)
                if events is None:
                    if len(self._by_span) >= _MAX_SPANS:
                        self._by_span.popitem(last=False)
                    events = self._by_span[span_id] = []
                if len(events) < _MAX_EVENTS:
                    body = getattr(record, "body", None)
                    events.append((name, dict(attributes) if name == _DETAILS else body))
        except Exception as error:  # never into the instrumented call
            _default.warn_once("otel-event", "infinium_logging.otel: on_emit failed: %r", error)

    def take(self, span_id: int) -> list[tuple[str, Any]] | None:
        """The events of a span that ended, forgotten here."""
        if not self._by_span:
            return None
        with self._lock:
            return self._by_span.pop(span_id, None)

    def shutdown(self) -> None:
        """Forget what is kept."""
        with self._lock:
            self._by_span.clear()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing to flush: events are read when their span ends."""
        return True


def _tool_parts(calls: object) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str):
            parts.append({"type": "tool_call", "name": name})
    return parts


def with_logged(attributes: dict[str, Any], logged: list[tuple[str, Any]]) -> dict[str, Any]:
    """``attributes`` with the messages of the span's log events, in the current
    conventions' form, where the span itself has none."""
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for name, given in logged:
        body = given if isinstance(given, Mapping) else {}
        role = _INPUT_ROLES.get(name)
        if role is not None:
            content = body.get("content")
            if isinstance(content, str):
                inputs.append({"role": role, "parts": [{"type": "text", "content": content}]})
        elif name == "gen_ai.choice":
            message = body.get("message")
            message = message if isinstance(message, Mapping) else {}
            parts = _tool_parts(message.get("tool_calls"))
            content = message.get("content")
            if isinstance(content, str):
                parts.insert(0, {"type": "text", "content": content})
            outputs.append({"role": "assistant", "parts": parts})
    merged = dict(attributes)
    for name, body in logged:
        if name == _DETAILS and isinstance(body, Mapping):
            for key in _DETAILED:
                if key not in merged and body.get(key) is not None:
                    merged[key] = body[key]
    if inputs and "gen_ai.input.messages" not in attributes:
        merged["gen_ai.input.messages"] = inputs
    if outputs and "gen_ai.output.messages" not in attributes:
        merged["gen_ai.output.messages"] = outputs
    return merged
