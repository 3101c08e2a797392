"""A tagged event's trace built: what its tag's value, message, time and fields make."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from .convert import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH
from .environment import merge_environment
from .errorinfo import ErrorInfo
from .fields import TASK_FIELDS, event_fields, is_dataclass_object
from .model import TaskData, _builtin_float
from .sanitise import _marked_copy, _object_fields, json_safe, safe_str, truncate
from .timestamps import iso_timestamp

__all__ = [
    "MAX_TAG_VALUE",
    "tag_text",
    "tagged_payload",
]

#: A custom tag made of a tagged event's field is cut to this many characters.
MAX_TAG_VALUE: Final = 1_000


def _call_message(message: Callable[[], str]) -> str:
    try:
        return message()
    except Exception:  # e.g. %-arguments that do not match the format: still a trace
        owner = getattr(message, "__self__", None)
        return safe_str(getattr(owner, "msg", "<message could not be formatted>"))


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else truncate(text, limit)


def tagged_payload(  # noqa: PLR0917 - positional: keyword passing costs on this hot path
    value: object,
    message: str | Callable[[], str],
    timestamp: float | str,
    fields: Iterable[tuple[str, Any]] | dict[str, Any] | None,
    error: ErrorInfo | None,
    env: Mapping[str, Any],
) -> TaskData | dict[str, Any] | None:
    """The trace of a tagged event, or ``None`` when ``value`` does not tag it.

    ``value`` is what the event carries under the tag key: ``True`` (the trace
    is built from the event: its message, time, and ``fields`` named like
    TaskData fields), a dict of TaskData fields, a TaskData, or a string (the
    trace's name).  ``False``, ``None`` and other false values leave the event
    untagged.  Defaults fill only what the value leaves unset: ``name`` and
    ``description`` (the message; pass a callable to build it only when
    needed), ``current_datetime`` (the event's time), ``duration`` (0.0),
    ``environment`` (merged key by key); an exception on the event is added to
    ``errors``.
    """
    kind = type(value)
    if kind is dict:
        trace: dict[str, Any] = value.copy()  # type: ignore[attr-defined]
    elif isinstance(value, TaskData):
        trace = _struct_trace(value)
    elif isinstance(value, Mapping):
        trace = dict(value)
    elif kind is str:
        if not value:
            return None
        trace = {"name": value}
    elif is_dataclass_object(value):
        trace = _object_fields(value)
    elif value:
        trace = {}
    else:
        return None
    if fields:
        _take_fields(trace, fields)
    get = trace.get
    if get("name") is None:
        if not isinstance(message, str):
            message = _call_message(message)
        trace["name"] = _fit(message, MAX_NAME_LENGTH)
    if get("description") is None:
        if not isinstance(message, str):
            message = _call_message(message)
        trace["description"] = _fit(message, MAX_DESCRIPTION_LENGTH)
    if get("current_datetime") is None:
        trace["current_datetime"] = (
            timestamp if type(timestamp) is str else iso_timestamp(float(timestamp))
        )
    if get("duration") is None:
        trace["duration"] = 0.0
    given_env = get("environment")
    trace["environment"] = env if given_env is None else merge_environment(given_env, env)
    if error is not None:
        given = get("errors")
        if isinstance(given, list):
            try:
                trace["errors"] = [*given, error.detail]
            except Exception:  # a list whose iteration raises: it alone is lost (reported)
                trace["errors"] = [_marked_copy(given), error.detail]
        else:
            trace["errors"] = [error.detail]
    return trace


def _take_fields(trace: dict[str, Any], fields: Iterable[tuple[str, Any]] | dict[str, Any]) -> None:
    """A tagged event's own fields into its trace: those named like TaskData fields fill what
    the tag left unset, the others become custom tags (the tag's own win; the library's tags,
    ``logger`` and ``INFINIUM_TAGS``, give way to them)."""
    if isinstance(fields, dict):  # a structlog event dict, copied when it was logged
        fields = event_fields(fields, "")
    tags: dict[str, str] | None = None
    for key, item in fields:
        if key in TASK_FIELDS:
            if trace.get(key) is None:
                trace[key] = item
        elif item is None or (type(item) is float and not math.isfinite(item)):
            continue  # "not given", as None is everywhere else (and NaN has no JSON)
        else:
            if tags is None:
                tags = {}
            tags[key] = _fit(item, MAX_TAG_VALUE) if type(item) is str else tag_text(item)
    if tags:
        trace["environment"] = merge_environment(trace.get("environment"), {"custom_tags": tags})


def tag_text(value: object) -> str:
    """A field's value as a custom tag, which is text: JSON for numbers, booleans and
    containers (``42``, ``true``, ``{"a":1}``), cut to :data:`MAX_TAG_VALUE` characters."""
    if isinstance(value, str):
        text = str.__str__(value)
    else:
        try:
            text = msgspec.json.encode(json_safe(value)).decode()
        except Exception:
            text = safe_str(value)
    return _fit(text, MAX_TAG_VALUE)


def _struct_trace(value: TaskData) -> dict[str, Any]:
    """A tagged TaskData as a dict of its fields, for lenient reading like a tag dict.

    A TaskData is built without checks: its name may be too long, its duration
    NaN, its nested values of any type.  Plain builtins let lenient reading
    check all of it (in C when nothing needs fixing).
    """
    try:
        fields = msgspec.to_builtins(value, enc_hook=_builtin_float)
    except Exception:  # something msgspec cannot write (an object in metadata): copy it slowly
        fields = _marked_copy(value, None)
    return fields if type(fields) is dict else {}
