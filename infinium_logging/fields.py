"""An event's fields: which keys are fields, its message, the text it holds, JSON-safe values."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from .convert import MAX_PREVIEW_LENGTH
from .errorinfo import ErrorInfo
from .model import TaskData
from .sanitise import _SURE_INT, MAX_FREEFORM_STRING, _marked_copy, json_safe, safe_str, truncate

__all__ = [
    "FORMATTER_ATTRIBUTES",
    "FROM_EVENT",
    "FROM_RECORD",
    "RECORD_ATTRIBUTES",
    "RawEvent",
    "STEP_FIELDS",
    "STRUCTLOG_RESERVED",
    "TASK_FIELDS",
    "as_float",
    "as_int",
    "event_fields",
    "held_by_events",
    "held_text",
    "is_dataclass_object",
    "preview",
    "record_fields",
    "record_message",
    "safe_value",
]

#: Names of TaskData fields: the keys a tag dict (or, for ``True``, the event) may set.
TASK_FIELDS: Final = frozenset(TaskData.__struct_fields__)
#: Event fields that fill an ExecutionStep field instead of its metadata.
STEP_FIELDS: Final = frozenset(
    {"action", "llm_call", "tool_call", "duration_ms", "input_preview", "output_preview"}
)
#: Keys structlog's own processors put in an event dict: not structured fields of the event.
STRUCTLOG_RESERVED: Final = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "exc_info",
        "exception",
        "stack",
        "stack_info",
        "positional_args",
    }
)
#: What formatters add to a LogRecord after it was made.
FORMATTER_ATTRIBUTES: Final = frozenset({"message", "asctime"})
#: Attributes every LogRecord has, read from a real one (as structlog's ExtraAdder does)
#: so that new Python versions (``taskName`` in 3.12) are covered; plus what formatters add.
RECORD_ATTRIBUTES: Final = (
    frozenset(logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__)
    | FORMATTER_ATTRIBUTES
)


#: Where a raw event's fields come from: a LogRecord's ``__dict__`` or a structlog event dict.
FROM_RECORD: Final = 0
FROM_EVENT: Final = 1

#: One event of a task, as captured on the thread that logged: ``(source kind, level number,
#: a shallow copy of the record's __dict__ or of the event dict, the tag key (not a field),
#: the ErrorInfo, the message or None to take it from the record's msg and args)``.
RawEvent = tuple[int, int, dict[Any, Any], str, ErrorInfo | None, str | None]


def safe_value(value: Any) -> Any:
    """A JSON-safe copy of one field value, free for the common scalar cases.

    Strings are cut to :data:`~infinium_logging.convert.MAX_FREEFORM_STRING`
    characters now, so a huge string is not held until the task ends.  A
    value that raises while it is read becomes its repr, marked so that
    lenient reading reports it as replaced.
    """
    kind = type(value)
    if kind is str:
        return value if len(value) <= MAX_FREEFORM_STRING else json_safe(value)
    if kind is bool or value is None:
        return value
    if kind is int:
        return value if -_SURE_INT < value < _SURE_INT else json_safe(value)
    if kind is float and math.isfinite(value):
        return value
    return _marked_copy(value)


def preview(value: object) -> str:
    """A step's ``input_preview`` / ``output_preview``: text, cut to the platform's limit."""
    if type(value) is not str:
        if isinstance(value, (Mapping, list, tuple, msgspec.Struct)):
            safe = json_safe(value)
            try:
                value = safe_str(value) if safe is None else msgspec.json.encode(safe).decode()
            except Exception:
                value = safe_str(value)
        else:
            value = safe_str(value)
    assert isinstance(value, str)
    return value if len(value) <= MAX_PREVIEW_LENGTH else truncate(value, MAX_PREVIEW_LENGTH)


def as_int(value: object) -> int | None:
    """A whole number read leniently (``320``, ``"320"``, ``12.0``), or None."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or value is None:
        return None
    # Subclasses run their own __round__, __int__ or strip: one that raises is no number.
    try:
        if isinstance(value, float):
            return round(value) if math.isfinite(value) else None
        if isinstance(value, str):
            number = float(value.strip())
            return round(number) if math.isfinite(number) else None
        if isinstance(value, int):
            return int(value)
    except Exception:
        return None
    return None


def as_float(value: object) -> float | None:
    """A finite number read leniently (``0.2``, ``"0.2"``, ``1``), or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip())
        else:
            return None
    except Exception:  # not a number, or a subclass whose __float__ or strip raises
        return None
    return number if math.isfinite(number) else None


def is_dataclass_object(value: object) -> bool:
    """Whether ``value`` is an instance of a dataclass (not the class itself)."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


#: Text shorter than this is covered by the exporter's average size of a step.
_LONG_TEXT: Final = 1024


def held_text(values: Iterable[object]) -> int:
    """The characters of the long strings (and bytes) among ``values``: what a captured
    event keeps alive beyond the average step until its trace is built, and cut to size then
    (a retrieved document logged as a field, say), so that ``max_queue_bytes`` counts it."""
    total = 0
    for value in values:
        if (type(value) is str or type(value) is bytes) and len(value) > _LONG_TEXT:
            total += len(value)
    return total


def record_message(msg: object, args: object) -> str:
    """``LogRecord.getMessage()`` of a record's ``msg`` and ``args``; the bare ``msg`` as text
    when the arguments do not fit the format."""
    try:
        text = msg if type(msg) is str else str(msg)
        if args:
            text = text % args
        return text
    except Exception:  # bad %-arguments: the event still says something
        return safe_str(msg)


def record_fields(attributes: dict[str, Any], tag_key: str) -> list[tuple[str, Any]]:
    """A LogRecord's structured fields (what ``extra=`` and filters added), in the order given.

    ``LogRecord.__init__`` sets the standard attributes first and
    ``makeRecord`` (or a record factory, or a filter) adds the rest after
    them, so the fields are found by walking the record's attributes from
    the end back to the first standard one, skipping ``message`` and
    ``asctime`` that formatters add: a few steps instead of a pass over
    every attribute.  The tag key and keys starting with ``_`` are not fields.
    """
    found: list[tuple[str, Any]] = []
    for key in reversed(attributes):
        if key in RECORD_ATTRIBUTES:
            if key in FORMATTER_ATTRIBUTES:
                continue
            break
        if key != tag_key and key[:1] != "_":
            found.append((key, attributes[key]))
    if len(found) > 1:
        found.reverse()
    return found


def held_by_events(events: Iterable[object]) -> int:
    """The long text a task's captured events hold (see :func:`held_text`): their messages and
    the values of their fields (a step added as a dict, a subtask's, is small).

    Written out, not with record_fields and held_text, because it runs on the caller's thread
    when a task ends: benchmarks/run.py figure 3b (a whole 10-step task, per step) is
    7.69-7.79 us with it and 8.85-9.02 us composed (alternate runs, 0.83-0.86x against
    0.98-1.00x of its QueueHandler baseline).
    """
    total = 0
    for event in events:
        if type(event) is not tuple:
            continue
        source = event[2]
        if event[0] == FROM_RECORD:
            message = source.get("msg")
            for key in reversed(source):  # the added keys, found as record_fields finds them
                if key in RECORD_ATTRIBUTES:
                    if key in FORMATTER_ATTRIBUTES:
                        continue
                    break
                value = source[key]
                if (type(value) is str or type(value) is bytes) and len(value) > _LONG_TEXT:
                    total += len(value)
        else:
            message = event[5]
            for value in source.values():
                if (type(value) is str or type(value) is bytes) and len(value) > _LONG_TEXT:
                    total += len(value)
        if type(message) is str and len(message) > _LONG_TEXT:
            total += len(message)
    return total


def event_fields(event: Mapping[Any, Any], tag_key: str) -> list[tuple[str, Any]]:
    """A structlog event's structured fields: what structlog's own processors did not add."""
    return [
        (key, item)
        for key, item in event.items()
        if type(key) is str and key not in STRUCTLOG_RESERVED and key != tag_key and key[:1] != "_"
    ]
