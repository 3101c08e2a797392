"""Steps: an event inside a task becomes an ExecutionStep (action, LLM or tool call, metadata)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from .convert import MAX_DESCRIPTION_LENGTH
from .errorinfo import ErrorInfo
from .fields import (
    FROM_RECORD,
    STEP_FIELDS,
    RawEvent,
    as_float,
    as_int,
    event_fields,
    preview,
    record_fields,
    record_message,
    safe_value,
)
from .model import LlmCall, ToolCall
from .sanitise import _SURE_INT, MAX_FREEFORM_STRING, _marked_copy, safe_str, truncate

__all__ = [
    "build_step",
    "event_step",
]

#: Whole-number fields of LlmCall and ToolCall: ``"320"`` or ``12.0`` are read as numbers now.
_CALL_INTS: Final = frozenset(
    {"prompt_tokens", "completion_tokens", "latency_ms", "duration_ms", "http_status"}
)
_LLM_CALL_FIELDS: Final = frozenset(LlmCall.__struct_fields__)
_TOOL_CALL_FIELDS: Final = frozenset(ToolCall.__struct_fields__)


def _split_call(
    value: object, struct: type[msgspec.Struct], known: frozenset[str], prefix: str
) -> tuple[Any, dict[str, Any] | None]:
    """A step's llm_call/tool_call value, and its keys the struct does not have (for metadata)."""
    if isinstance(value, struct):
        return value, None
    if isinstance(value, Mapping):
        source: Mapping[Any, Any] = value
    else:
        converted = _marked_copy(value)
        if converted is None:
            return None, None
        if not isinstance(converted, dict):
            return None, {prefix: converted}
        source = converted
    call: dict[str, Any] = {}
    extra: dict[str, Any] | None = None
    try:
        for key, item in source.items():
            if key in known:
                if key in _CALL_INTS and type(item) is not int:
                    number = as_int(item)
                    call[key] = safe_value(item) if number is None else number
                elif key == "temperature" and type(item) is not float:
                    real = as_float(item)
                    call[key] = safe_value(item) if real is None else real
                else:
                    call[key] = safe_value(item)
            else:
                if extra is None:
                    extra = {}
                extra[f"{prefix}.{safe_str(key)}"] = safe_value(item)
    except Exception:  # a mapping whose items() or keys raise: it goes to metadata as text
        return None, {prefix: _marked_copy(value)}
    return call, extra


def build_step(
    message: str,
    levelno: int,
    fields: Iterable[tuple[str, Any]],
    error: ErrorInfo | None,
) -> dict[str, Any]:
    """An ExecutionStep (as a dict) for one event inside a task; ``step_number`` is set by the task.

    ``action`` is the event's ``action`` field, else ``llm_inference`` with an
    ``llm_call``, ``tool_use`` with a ``tool_call``, ``error`` at ERROR and
    above, ``log`` otherwise.  ``duration_ms``, ``input_preview`` and
    ``output_preview`` come from fields of those names; every other field goes
    into ``metadata``, JSON-safe.
    """
    step: dict[str, Any] = {
        "action": "log",
        "description": message
        if len(message) <= MAX_DESCRIPTION_LENGTH
        else truncate(message, MAX_DESCRIPTION_LENGTH),
    }
    metadata: dict[str, Any] | None = None
    action: object = None
    for key, value in fields:
        if key in STEP_FIELDS:
            extra: dict[str, Any] | None = None
            if key == "action":
                action = value
            elif key == "llm_call":
                step["llm_call"], extra = _split_call(value, LlmCall, _LLM_CALL_FIELDS, key)
            elif key == "tool_call":
                step["tool_call"], extra = _split_call(value, ToolCall, _TOOL_CALL_FIELDS, key)
            elif key == "duration_ms":
                number = as_int(value)
                if number is not None and number >= 0:
                    step["duration_ms"] = number
                else:
                    extra = {key: safe_value(value)}
            elif value is not None:
                step[key] = preview(value)
            if extra:
                metadata = extra if metadata is None else {**metadata, **extra}
        else:
            if metadata is None:
                metadata = {}
            kind = type(value)
            # Scalars as they are (the common case, inline); anything else copied JSON-safe
            # now.  None (also from NaN) is left out: the wire carries no nulls.
            if (
                kind is bool
                or (kind is str and len(value) <= MAX_FREEFORM_STRING)
                or (kind is int and -_SURE_INT < value < _SURE_INT)
            ):
                metadata[key] = value
            else:
                safe = safe_value(value)
                if safe is not None:
                    metadata[key] = safe
    # As text before any test: comparing the caller's object could run (and raise in) its code.
    action_text = "" if action is None else safe_str(action)[:100]
    if action_text:
        step["action"] = action_text
    elif step.get("llm_call") is not None:
        step["action"] = "llm_inference"
    elif step.get("tool_call") is not None:
        step["action"] = "tool_use"
    elif levelno >= 40:
        step["action"] = "error"
    if error is not None:
        step["error"] = error.detail
    if metadata:
        step["metadata"] = metadata
    return step


def event_step(event: RawEvent) -> dict[str, Any]:
    """The ExecutionStep (as a dict) of a raw event (see :func:`build_step`)."""
    kind, levelno, source, tag_key, error, message = event
    if kind == FROM_RECORD:
        if message is None:
            message = record_message(source.get("msg"), source.get("args"))
        fields = record_fields(source, tag_key)
        if fields:
            fields = _without_structlog_copies(fields, levelno, source.get("name"))
        return build_step(message, levelno, fields, error)
    return build_step(message or "", levelno, event_fields(source, tag_key), error)


def _without_structlog_copies(
    fields: list[tuple[str, Any]], levelno: int, name: object
) -> list[tuple[str, Any]]:
    """A record's fields without structlog's ``level`` and ``logger`` when they only repeat
    the record's own (``render_to_log_kwargs`` passes the event dict as ``extra``): not
    fields, as they are not through the processor."""
    level = logging.getLevelName(levelno).lower()
    return [
        (key, item)
        for key, item in fields
        if not ((key == "level" and item == level) or (key == "logger" and item == name))
    ]
