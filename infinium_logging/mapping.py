"""Event mapping: a log event becomes a trace (tagged events) or an execution step (in a task).

Two halves.  What must be fixed at the moment of the event is captured on the
thread that logs, as cheaply as possible: the tag's value (a shallow copy of a
dict), the message and its arguments, the time, the event's fields (a shallow
copy of the record's or event's dict), exception details (formatted now, so
that no frames are kept alive, as ``QueueHandler.prepare`` does) and the
environment.  Everything else is done by :meth:`PendingTrace.materialize`,
which the exporter calls on its sender thread: filling in defaults, formatting
timestamps and messages, building steps, LLM usage and JSON-safe metadata.
Traces leave it as dicts of TaskData fields; lenient coercion
(:func:`~infinium_logging.convert.to_task` with ``strict=False``) follows on the
same thread.

Because objects logged are read later, on another thread, an application must
not mutate them after logging them: the contract of
:class:`logging.handlers.QueueHandler`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import logging
import math
import platform
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from ._bounded import bounded
from ._version import __version__
from .convert import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH, MAX_PREVIEW_LENGTH
from .errorinfo import ErrorInfo
from .model import LlmCall, TaskData, ToolCall, _builtin_float
from .queued import PendingTrace, fields_estimate, set_captured_reader
from .sanitise import (
    _SURE_INT,
    MAX_FREEFORM_STRING,
    _marked_copy,
    _object_fields,
    json_safe,
    safe_str,
    truncate,
)
from .timestamps import (
    event_timestamp,
    iso_timestamp,
)

__all__ = [
    "STEP_FIELDS",
    "STRUCTLOG_RESERVED",
    "TASK_FIELDS",
    "RawEvent",
    "TaggedTrace",
    "build_step",
    "event_fields",
    "event_step",
    "environment",
    "is_tag",
    "preview",
    "record_fields",
    "record_message",
    "safe_value",
    "tagged_payload",
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
#: Whole-number fields of LlmCall and ToolCall: ``"320"`` or ``12.0`` are read as numbers now.
_CALL_INTS: Final = frozenset(
    {"prompt_tokens", "completion_tokens", "latency_ms", "duration_ms", "http_status"}
)
_LLM_CALL_FIELDS: Final = frozenset(LlmCall.__struct_fields__)
_TOOL_CALL_FIELDS: Final = frozenset(ToolCall.__struct_fields__)

#: A custom tag made of a tagged event's field is cut to this many characters.
MAX_TAG_VALUE: Final = 1_000

_PYTHON_VERSION: Final = platform.python_version()
_RUNTIME: Final = platform.python_implementation()

# --- values ---------------------------------------------------------------------------------------


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


def _as_int(value: object) -> int | None:
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


def _as_float(value: object) -> float | None:
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


# --- environment ----------------------------------------------------------------------------------

_EnvKey = tuple[str | None, str | None, tuple[tuple[str, str], ...], str | None]
_env_cache: dict[_EnvKey, dict[str, Any]] = {}
_ENV_CACHE_MAX: Final = 4096


@functools.cache
def structlog_version() -> str | None:
    """structlog's version, for the traces of structlog events (from its metadata: the
    stdlib handler reads bridged events without importing structlog)."""
    try:
        return importlib.metadata.version("structlog")
    except Exception:  # not installed, or an unusual installation: the version is optional
        return None


def environment(
    framework: str | None,
    logger_name: str | None,
    tags: tuple[tuple[str, str], ...],
    framework_version: str | None = None,
) -> dict[str, Any]:
    """The ``environment`` the library fills in, as a dict shared between traces (never mutate it).

    ``custom_tags`` are ``INFINIUM_TAGS`` plus ``logger`` (the logger's name).
    """
    key = (framework, logger_name, tags, framework_version)
    found = _env_cache.get(key)
    if found is not None:
        return found
    custom = dict(tags)
    if logger_name:
        custom.setdefault("logger", logger_name)
    env: dict[str, Any] = {
        "python_version": _PYTHON_VERSION,
        "runtime": _RUNTIME,
        "sdk_version": __version__,
    }
    if framework is not None:
        env["framework"] = framework
    if framework_version is not None:
        env["framework_version"] = framework_version
    if custom:
        env["custom_tags"] = custom
    if len(_env_cache) >= _ENV_CACHE_MAX:
        _env_cache.clear()  # many distinct logger names: rebuild rather than grow
    _env_cache[key] = env
    return env


def _as_dict(value: object) -> dict[str, Any] | None:
    if type(value) is dict:
        return value.copy()
    if isinstance(value, Mapping):
        try:
            return dict(value)
        except Exception:  # a mapping that cannot be read: as if it were not one
            return None
    if isinstance(value, msgspec.Struct):
        return {name: getattr(value, name) for name in value.__struct_fields__}
    if _is_dataclass_object(value):  # the official client's EnvironmentContext
        return _object_fields(value)
    return None


def merge_environment(given: object, filled: Mapping[str, Any]) -> Any:
    """``given`` with the library's values added where it has none (``custom_tags`` key by key)."""
    if given is None:
        return filled
    mine = _as_dict(given)
    if mine is None:
        return given  # not readable here: lenient coercion decides
    for key, value in filled.items():
        if key == "custom_tags":
            tags = _as_dict(mine.get("custom_tags"))
            if tags is None:
                mine["custom_tags"] = value
            else:
                for tag, text in value.items():
                    tags.setdefault(tag, text)
                mine["custom_tags"] = tags
        elif mine.get(key) is None:
            mine[key] = value
    return mine


# --- tagged events --------------------------------------------------------------------------------


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
    elif _is_dataclass_object(value):
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


def is_tag(value: object) -> bool:
    """Whether ``value``, found under the tag key, makes the event a trace, as
    :func:`tagged_payload` decides: a dict, a TaskData or another mapping always
    does; ``None``, ``False``, ``""`` and other false values do not."""
    kind = type(value)
    if kind is dict or value is True:
        return True
    if value is None or value is False or kind is str:
        return bool(value)
    if isinstance(value, (TaskData, Mapping)):
        return True
    try:
        return bool(value)
    except Exception:  # a value whose truth cannot be told is no tag
        return False


# --- deferred traces ------------------------------------------------------------------------------


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


class TaggedTrace(msgspec.Struct, PendingTrace, eq=False, gc=False):
    """The trace of one tagged event, as :func:`tagged_payload` will build it.

    ``basis`` is the tag's value, which must be the caller's own (see
    :func:`tagged_trace`).  ``args`` is ``None`` when ``message`` is the
    final text; otherwise ``message`` and ``args`` are a LogRecord's ``msg``
    and ``args``, formatted only if the trace needs the message.
    ``timestamp`` is a POSIX time, or what structlog's ``TimeStamper`` left
    (read by :func:`event_timestamp` when the trace is built).
    """

    # A Struct rather than a class with __slots__: one is made for every tagged event, on
    # the caller's thread, and msgspec's constructor costs a third of a Python __init__.
    # Built positionally (value, message, args, timestamp, fields, error, env). eq=False:
    # compared and hashed by identity, as a captured event should be.  gc=False: not
    # tracked by the cyclic collector (one tracked object fewer per event, and a queue of
    # them is not traversed by every full collection).  It cannot be part of a cycle:
    # what it references was made before it, and nothing is ever given a reference to it
    # but the sink it is submitted to.
    basis: object
    message: object
    args: object
    timestamp: object
    # A LogRecord's fields as pairs, or a copy of a structlog event dict (the tag key taken
    # out) to be read when the trace is built: a copy costs a fifth of reading it on the
    # caller's thread.
    fields: Iterable[tuple[str, Any]] | dict[str, Any] | None
    error: ErrorInfo | None
    env: Mapping[str, Any]

    @property
    def held(self) -> int:  # type: ignore[override]
        """Long text among the message and the event's fields."""
        fields = self.fields
        if isinstance(fields, dict):
            return held_text((self.message, *fields.values()))
        return held_text((self.message, *(value for _, value in fields or ())))

    def estimate(self, fixed: int, per_step: int) -> int:
        """A tag's dict (nearly every tagged event) is counted as the dict of fields it is;
        a tag of ``True`` or a TaskData as any captured trace is."""
        basis = self.basis
        if type(basis) is dict:
            return fields_estimate(basis, fixed, per_step)
        return PendingTrace.estimate(self, fixed, per_step)

    def materialize(self) -> TaskData | dict[str, Any]:
        """The trace (see :func:`tagged_payload`)."""
        message: str | Callable[[], str]
        if self.args is None:
            message = self.message if type(self.message) is str else safe_str(self.message)
        else:
            message = functools.partial(record_message, self.message, self.args)
        timestamp = self.timestamp
        if type(timestamp) is not float:
            timestamp = event_timestamp(timestamp)
        payload = tagged_payload(self.basis, message, timestamp, self.fields, self.error, self.env)
        if payload is None:  # captured only when is_tag() said it is a tag
            raise ValueError("the event's tag value does not make a trace")
        return payload

    def spool_form(self) -> tuple[Any, ...] | None:
        """``(basis, message, timestamp, error detail, env[, fields])`` when the tag's value is
        a dict (the usual case), read back by :meth:`from_spool_form`; the message is formatted
        now, and the event's own fields (if any) are listed as pairs."""
        if type(self.basis) is not dict:
            return None
        message = self.message
        if self.args is not None:
            message = record_message(message, self.args)
        elif type(message) is not str:
            message = safe_str(message)
        error = None if self.error is None else self.error.detail
        # Cut to what a trace can carry now: a huge value would be encoded whole on the
        # caller's thread (and a record over the body limit is built there in full).
        fields = self.fields
        if isinstance(fields, dict):
            fields = event_fields(fields, "")
        basis, message, env, pairs = bounded(
            self.basis, message, self.env, list(fields) if fields else None
        )
        if pairs:
            return (basis, message, self.timestamp, error, env, pairs)
        return (basis, message, self.timestamp, error, env)

    @classmethod
    def from_spool_form(cls, form: object) -> TaggedTrace:
        """The captured trace a :meth:`spool_form` read back describes (``ValueError`` when
        it does not describe one)."""
        if not isinstance(form, (list, tuple)) or len(form) not in (5, 6):
            raise ValueError("not the record of a captured event")
        basis, message, timestamp, error, env = form[:5]
        fields = None
        if len(form) == 6:
            pairs = form[5]
            if not isinstance(pairs, (list, tuple)) or not all(
                isinstance(pair, (list, tuple)) and len(pair) == 2 and type(pair[0]) is str
                for pair in pairs
            ):
                raise ValueError("not the record of a captured event")
            fields = [(key, item) for key, item in pairs]
        if (
            type(basis) is not dict
            or type(message) is not str
            or type(env) is not dict
            or (error is not None and type(error) is not dict)
        ):
            raise ValueError("not the record of a captured event")
        info = None if error is None else ErrorInfo(error, None)
        return cls(basis, message, None, timestamp, fields, info, env)


set_captured_reader(TaggedTrace.from_spool_form)


def tagged_trace(  # noqa: PLR0917 - positional: keyword passing costs on this hot path
    value: object,
    message: object,
    args: object,
    timestamp: object,
    fields: Iterable[tuple[str, Any]] | dict[str, Any] | None,
    error: ErrorInfo | None,
    env: Mapping[str, Any],
) -> TaggedTrace:
    """Capture a tagged event (``is_tag(value)`` must be true).

    A dict, other mapping or TaskData is copied (shallow: what it holds is
    shared), so that fields the application sets or removes after logging do
    not change the trace.
    """
    kind = type(value)
    if kind is dict:
        value = value.copy()  # type: ignore[attr-defined]
    elif kind is TaskData:
        value = value.__copy__()  # type: ignore[attr-defined]
    elif kind is not str and isinstance(value, Mapping):
        value = dict(value)
    elif _is_dataclass_object(value):
        # The official client's TaskData (a dataclass), when migrating from send_task_data:
        # its fields as they are now, read as a dict of TaskData fields is.
        value = _object_fields(value)
    return TaggedTrace(value, message, args, timestamp, fields, error, env)


def _is_dataclass_object(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


# --- steps ----------------------------------------------------------------------------------------


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
                    number = _as_int(item)
                    call[key] = safe_value(item) if number is None else number
                elif key == "temperature" and type(item) is not float:
                    real = _as_float(item)
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
                number = _as_int(value)
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
    the values of their fields (a step added as a dict, a subtask's, is small).  Written out,
    not with record_fields and held_text: it runs on the thread that ends the task, once per
    step, and calls and lists cost twice the loop (~0.5 us a step here)."""
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


#: Where a raw event's fields come from: a LogRecord's ``__dict__`` or a structlog event dict.
FROM_RECORD: Final = 0
FROM_EVENT: Final = 1

#: One event of a task, as captured on the thread that logged: ``(source kind, level number,
#: a shallow copy of the record's __dict__ or of the event dict, the tag key (not a field),
#: the ErrorInfo, the message or None to take it from the record's msg and args)``.
RawEvent = tuple[int, int, dict[Any, Any], str, ErrorInfo | None, str | None]


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


def call_field(call: object, name: str) -> object:
    """One field of an LlmCall given as a Struct or a dict."""
    if type(call) is dict or isinstance(call, Mapping):
        return call.get(name)
    return getattr(call, name, None)


class Usage:
    """Running totals of a task's LLM calls, for ``llm_usage``."""

    __slots__ = (
        "calls",
        "completion",
        "cost",
        "count",
        "latency",
        "models",
        "prompt",
        "providers",
    )

    def __init__(self) -> None:
        self.count = 0
        self.prompt: int | None = None
        self.completion: int | None = None
        self.latency: int | None = None
        self.cost: float | None = None
        self.models: list[str] = []
        self.providers: list[str] = []
        self.calls: list[Any] = []

    def add(self, call: object, extra: Mapping[str, Any] | None, keep: bool) -> None:
        """Count one call; ``keep`` says whether it is also listed in ``calls``."""
        self.count += 1
        prompt = _as_int(call_field(call, "prompt_tokens"))
        if prompt is not None:
            self.prompt = (self.prompt or 0) + prompt
        completion = _as_int(call_field(call, "completion_tokens"))
        if completion is not None:
            self.completion = (self.completion or 0) + completion
        latency = _as_int(call_field(call, "latency_ms"))
        if latency is not None:
            self.latency = (self.latency or 0) + latency
        if extra:
            cost = _as_float(
                extra.get("llm_call.estimated_cost_usd", extra.get("llm_call.cost_usd"))
            )
            if cost is not None:
                self.cost = (self.cost or 0.0) + cost
        for name, seen in (("model", self.models), ("provider", self.providers)):
            text = call_field(call, name)
            if isinstance(text, str) and text and text not in seen and len(seen) < 2:
                seen.append(text)
        if keep:
            self.calls.append(call)

    def merge(self, later: Usage, limit: int) -> None:
        """Add the calls counted in ``later`` (all made after this one's), keeping at most
        ``limit`` in ``calls``: the same totals as adding them here one by one."""
        self.count += later.count
        if later.prompt is not None:
            self.prompt = (self.prompt or 0) + later.prompt
        if later.completion is not None:
            self.completion = (self.completion or 0) + later.completion
        if later.latency is not None:
            self.latency = (self.latency or 0) + later.latency
        if later.cost is not None:
            self.cost = (self.cost or 0.0) + later.cost
        for mine, theirs in ((self.models, later.models), (self.providers, later.providers)):
            for text in theirs:
                if text not in mine and len(mine) < 2:
                    mine.append(text)
        room = limit - len(self.calls)
        if room > 0:
            self.calls.extend(later.calls[:room])

    def as_dict(self) -> dict[str, Any]:
        """``llm_usage``: sums, ``total_tokens``, ``api_calls_count``, and model/provider
        when there is exactly one (``"multiple"`` otherwise)."""
        usage: dict[str, Any] = {"api_calls_count": self.count}
        if self.models:
            usage["model"] = self.models[0] if len(self.models) == 1 else "multiple"
        if self.providers:
            usage["provider"] = self.providers[0] if len(self.providers) == 1 else "multiple"
        if self.prompt is not None:
            usage["prompt_tokens"] = self.prompt
        if self.completion is not None:
            usage["completion_tokens"] = self.completion
        if self.prompt is not None or self.completion is not None:
            usage["total_tokens"] = (self.prompt or 0) + (self.completion or 0)
        if self.cost is not None:
            usage["estimated_cost_usd"] = round(self.cost, 10)
        if self.latency is not None:
            usage["total_latency_ms"] = self.latency
        if self.calls:
            usage["calls"] = list(self.calls)
        return usage
