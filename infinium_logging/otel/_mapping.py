"""Span -> step: what a GenAI span's attributes say, as the fields of a logged event.

A span becomes the same fields a user would log (``llm_call``, ``tool_call``,
``duration_ms``, previews, metadata), so that its step and the trace's
``llm_usage`` are built by the code that builds them for logged events
(:func:`~infinium_logging.steps.build_step`, ``Usage``).  Three vocabularies are
read: the OpenTelemetry GenAI semantic conventions, current names first and
then the older ones (``gen_ai.system``, ``gen_ai.usage.prompt_tokens``,
``gen_ai.prompt``/``gen_ai.completion`` span events, OpenLLMetry's indexed
``gen_ai.prompt.N.content``), and OpenInference's (``openinference.span.kind``,
``llm.*``, ``input.value``).  No OpenTelemetry import: spans are read through
their attributes, a mapping.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from infinium_logging.convert import MAX_NAME_LENGTH
from infinium_logging.errorinfo import MAX_ERROR_MESSAGE, MAX_STACK_TRACE, ErrorInfo
from infinium_logging.fields import preview
from infinium_logging.sanitise import truncate

__all__ = ["LLM", "TOOL", "describe", "error_of", "kind_of", "llm_fields", "tool_fields"]

LLM: Final = 1
TOOL: Final = 2

#: ``gen_ai.operation.name`` values of a model call (current and older conventions).
_LLM_OPERATIONS: Final = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "completion", "embedding"}
)
_TOOL_OPERATIONS: Final = frozenset({"execute_tool"})
_OPENINFERENCE_LLM: Final = frozenset({"LLM", "EMBEDDING"})

_Attributes = Mapping[str, Any]


def kind_of(attributes: _Attributes) -> int:
    """``LLM``, ``TOOL``, or 0 for a span that is neither (an agent, a chain, HTTP)."""
    get = attributes.get
    operation = get("gen_ai.operation.name")
    if operation is not None:
        if operation in _LLM_OPERATIONS:
            return LLM
        if operation in _TOOL_OPERATIONS:
            return TOOL
        return 0
    kind = get("openinference.span.kind")
    if kind is not None:
        kind = str(kind).upper()
        if kind in _OPENINFERENCE_LLM:
            return LLM
        return TOOL if kind == "TOOL" else 0
    if get("llm.request.type") is not None:  # OpenLLMetry
        return LLM
    if get("traceloop.span.kind") == "tool":
        return TOOL
    if get("gen_ai.tool.name") is not None:
        return TOOL
    if get("gen_ai.system") is not None and get("gen_ai.request.model") is not None:
        return LLM  # conventions older than gen_ai.operation.name
    return 0


def _first(attributes: _Attributes, *names: str) -> Any:
    get = attributes.get
    for name in names:
        value = get(name)
        if value is not None:
            return value
    return None


def _int(value: object) -> int | None:
    if type(value) is int:
        return value
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError, OverflowError):
        return None


def _json(value: object) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


# --- content -------------------------------------------------------------------------------------


def _part_text(part: object) -> str:
    """The text of one message part (current conventions) or of a content value."""
    if isinstance(part, str):
        return part
    if isinstance(part, Mapping):
        kind = part.get("type")
        if kind in (None, "text", "reasoning"):
            text = part.get("content", part.get("text"))
            return text if isinstance(text, str) else ""
    return ""


def _message_text(message: Mapping[str, Any]) -> str:
    parts = message.get("parts")
    if isinstance(parts, list):
        return "".join(_part_text(part) for part in parts)
    content = message.get("content")
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content)
    return content if isinstance(content, str) else ""


def _messages(value: object) -> list[Mapping[str, Any]]:
    found = _json(value)
    if isinstance(found, Mapping):
        found = found.get("messages", [found])
    if isinstance(found, list):
        return [item for item in found if isinstance(item, Mapping)]
    return []


def _indexed(
    attributes: _Attributes, prefix: str, role: str, content: str
) -> list[Mapping[str, Any]]:
    """Messages flattened into indexed attributes (``llm.input_messages.0.message.content``,
    ``gen_ai.prompt.0.content``), in order; OpenInference's multi-part messages
    (``message.contents.N.message_content.text``) joined."""
    found: list[Mapping[str, Any]] = []
    for index in range(64):
        text = attributes.get(f"{prefix}.{index}.{content}")
        who = attributes.get(f"{prefix}.{index}.{role}")
        if text is None and who is None:
            break
        if text is None:
            parts = []
            for part in range(16):
                piece = attributes.get(f"{prefix}.{index}.{content}s.{part}.message_content.text")
                if piece is None:
                    if f"{prefix}.{index}.{content}s.{part}.message_content.type" in attributes:
                        continue
                    break
                parts.append(str(piece))
            text = "".join(parts)
        found.append({"role": who, "content": text if isinstance(text, str) else ""})
    return found


def _event_value(events: Iterable[tuple[str, _Attributes]], names: Sequence[str]) -> Any:
    for name, attributes in events:
        if name in names:
            for key in ("gen_ai.prompt", "gen_ai.completion", "content", "body"):
                value = attributes.get(key)
                if value is not None:
                    return value
    return None


def _conversation(
    attributes: _Attributes, events: Iterable[tuple[str, _Attributes]], side: str, older: str
) -> list[Mapping[str, Any]] | str:
    """The ``side`` (``input``/``output``) messages of a span, in whichever convention it
    uses: current GenAI, OpenInference, the older indexed or event forms (``older``:
    ``prompt``/``completion``); a plain older text as it is."""
    messages = _messages(attributes.get(f"gen_ai.{side}.messages"))
    if not messages:
        messages = _indexed(attributes, f"llm.{side}_messages", "message.role", "message.content")
    if not messages:
        messages = _indexed(attributes, f"gen_ai.{older}", "role", "content")
    if not messages:
        value = attributes.get(f"gen_ai.{older}")
        if value is None:
            value = _event_value(events, (f"gen_ai.content.{older}",))
        messages = _messages(value)
        if not messages and isinstance(value, str):
            return value
    return messages


def _input_preview(attributes: _Attributes, events: Iterable[tuple[str, _Attributes]]) -> Any:
    """As the official client's ``watch()``: the last two system or user messages, each
    ``[role] text``; else the captured input as it is."""
    messages = _conversation(attributes, events, "input", "prompt")
    if isinstance(messages, str):
        return messages
    instructions = attributes.get("gen_ai.system_instructions")
    lines = []
    if instructions is not None:
        text = "".join(_part_text(part) for part in _messages(instructions)) or str(instructions)
        lines.append(f"[system] {text}")
    for message in messages:
        role = message.get("role")
        if role in ("system", "user", "developer", "human"):
            lines.append(f"[{role}] {_message_text(message)}")
    if lines:
        return "\n".join(lines[-2:])
    return _first(attributes, "input.value", "traceloop.entity.input")


def _output(attributes: _Attributes, events: Iterable[tuple[str, _Attributes]]) -> Any:
    """The first answer's text, and the tools it asks for."""
    messages = _conversation(attributes, events, "output", "completion")
    if isinstance(messages, str):
        return messages
    if messages:
        return _message_text(messages[0]) or None
    return _first(attributes, "output.value", "traceloop.entity.output")


def requested_tools(attributes: _Attributes) -> list[str]:
    """The names of the tools an answer asks to call, where the answer was captured."""
    names: list[str] = []
    for message in _messages(attributes.get("gen_ai.output.messages")):
        parts = message.get("parts")
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, Mapping) and part.get("type") == "tool_call":
                name = part.get("name")
                if isinstance(name, str):
                    names.append(name)
    for index in range(16):  # OpenInference, then OpenLLMetry
        name = _first(
            attributes,
            f"llm.output_messages.0.message.tool_calls.{index}.tool_call.function.name",
            f"gen_ai.completion.0.tool_calls.{index}.name",
        )
        if name is None:
            break
        names.append(str(name))
    return names


# --- fields --------------------------------------------------------------------------------------


def _temperature(attributes: _Attributes) -> Any:
    value = attributes.get("gen_ai.request.temperature")
    if value is None:
        parameters = _json(attributes.get("llm.invocation_parameters"))
        if isinstance(parameters, Mapping):
            value = parameters.get("temperature")
    return value


def _model_and_provider(attributes: _Attributes) -> tuple[str, Any]:
    model = _first(
        attributes,
        "gen_ai.response.model",
        "gen_ai.request.model",
        "llm.response.model_name",
        "llm.model_name",
        "embedding.model_name",
    )
    provider = _first(
        attributes, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"
    )
    return ("unknown" if model is None else str(model)), provider


def _tool_name(attributes: _Attributes, span_name: str) -> str:
    name = _first(attributes, "gen_ai.tool.name", "tool.name", "traceloop.entity.name")
    if name is None:
        name = span_name.removeprefix("execute_tool ").strip() or "tool"
    return truncate(str(name), MAX_NAME_LENGTH)


def describe(attributes: _Attributes, kind: int, span_name: str) -> str:
    """The step's description: ``provider/model`` (as the official client's ``watch()``
    writes it; ``embeddings provider/model`` for embeddings), or the tool's name."""
    if kind != LLM:
        return _tool_name(attributes, span_name)
    model, provider = _model_and_provider(attributes)
    name = model if provider is None else f"{provider}/{model}"
    if attributes.get("gen_ai.operation.name", attributes.get("llm.request.type")) in (
        "embeddings",
        "embedding",
    ):
        name = f"embeddings {name}"
    return name


def llm_fields(
    attributes: _Attributes,
    events: Iterable[tuple[str, _Attributes]],
    duration_ms: int,
    content: bool,
) -> dict[str, Any]:
    """The fields of an LLM span's step, as a user would log them."""
    model, provider = _model_and_provider(attributes)
    call: dict[str, Any] = {"model": model}
    if provider is not None:
        call["provider"] = str(provider)
    prompt = _int(
        _first(
            attributes,
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
        )
    )
    if prompt is not None:
        call["prompt_tokens"] = prompt
    completion = _int(
        _first(
            attributes,
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
        )
    )
    if completion is not None:
        call["completion_tokens"] = completion
    call["latency_ms"] = duration_ms
    temperature = _temperature(attributes)
    if temperature is not None:
        call["temperature"] = temperature
    purpose = attributes.get("infinium.purpose")
    if purpose is not None:
        call["purpose"] = str(purpose)
    fields: dict[str, Any] = {"action": "llm_call", "llm_call": call, "duration_ms": duration_ms}
    operation = _first(attributes, "gen_ai.operation.name", "llm.request.type")
    if operation is not None:
        fields["operation"] = str(operation)
    reasons = attributes.get("gen_ai.response.finish_reasons")
    if reasons is not None:
        fields["finish_reasons"] = [str(reason) for reason in reasons]
    elif attributes.get("llm.finish_reason") is not None:  # OpenInference
        fields["finish_reasons"] = [str(attributes["llm.finish_reason"])]
    response_id = attributes.get("gen_ai.response.id")
    if response_id is not None:
        fields["response_id"] = str(response_id)
    tools = requested_tools(attributes)
    if tools:
        fields["tool_calls"] = tools
    if content:
        given = _input_preview(attributes, events)
        if given:
            fields["input_preview"] = preview(given)
        answer = _output(attributes, events)
        if answer:
            fields["output_preview"] = preview(answer)
    return fields


def tool_fields(
    attributes: _Attributes, span_name: str, duration_ms: int, content: bool
) -> dict[str, Any]:
    """The fields of a tool span's step."""
    tool_name = _tool_name(attributes, span_name)
    call: dict[str, Any] = {"tool_name": tool_name, "duration_ms": duration_ms}
    if content:
        arguments = _first(
            attributes, "gen_ai.tool.call.arguments", "input.value", "traceloop.entity.input"
        )
        if arguments is not None:
            call["input_summary"] = preview(arguments)
        result = _first(
            attributes, "gen_ai.tool.call.result", "output.value", "traceloop.entity.output"
        )
        if result is not None:
            call["output_summary"] = preview(result)
    fields: dict[str, Any] = {"action": "tool_call", "tool_call": call, "duration_ms": duration_ms}
    call_id = attributes.get("gen_ai.tool.call.id")
    if call_id is not None:
        fields["tool_call_id"] = str(call_id)
    return fields


def error_of(
    attributes: _Attributes,
    description: str | None,
    events: Iterable[tuple[str, _Attributes]],
) -> ErrorInfo:
    """The ErrorDetail of a span whose status is ERROR: the recorded exception's type,
    message and stack trace where there is one, else ``error.type`` and the status text."""
    error_type: Any = attributes.get("error.type")
    message: Any = description
    stack: Any = None
    for name, event in events:
        if name == "exception":
            error_type = event.get("exception.type", error_type)
            message = event.get("exception.message", message)
            stack = event.get("exception.stacktrace")
            break
    detail: dict[str, Any] = {
        "error_type": truncate(str(error_type or "SpanError"), MAX_NAME_LENGTH),
        "message": truncate(str(message or ""), MAX_ERROR_MESSAGE),
        "recoverable": False,
    }
    if isinstance(stack, str) and stack:
        detail["stack_trace"] = truncate(stack, MAX_STACK_TRACE)
    return ErrorInfo(detail, None)
