"""Coercion: outside data into traces, ``to_task`` (strict or lenient) and ``decode_task``.

Over the module budget as one thing: strict and lenient reading share one shaping of the
fields, one set of limits and one check that a trace needs no fixing, and split apart they
would each need all of it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import msgspec

from .errors import ValidationError
from .model import (
    SECTION_NAMES,
    ExecutionStep,
    LlmCall,
    LlmUsage,
    TaskData,
    _builtin_float,
    _Model,
    encode_task,
    utc_now_iso,
)
from .sanitise import (
    _SURE_INT,
    _UNREADABLE,
    MAX_DEPTH,
    _int_text_fits,
    _json_safe,
    _object_fields,
    _Unreadable,
    truncate,
)

__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "MAX_DURATION",
    "MAX_NAME_LENGTH",
    "MAX_PREVIEW_LENGTH",
    "Problem",
    "decode_task",
    "lenient_task",
    "to_task",
]

MAX_NAME_LENGTH: Final = 500
MAX_DESCRIPTION_LENGTH: Final = 10_000
MAX_PREVIEW_LENGTH: Final = 500
MAX_DURATION: Final = 86_400.0
_MAX_LENIENT_PASSES: Final = 200

_STEP_FIELDS: Final = frozenset(ExecutionStep.__struct_fields__)
_TASK_FIELDS: Final = frozenset(TaskData.__struct_fields__)
#: One step of a msgspec error's path: ``.field``, ``[index]`` or ``[...]`` (a dict's key).
_PATH_PART: Final = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
#: Fields holding free-form values, sent as given: JSON of any shape.
_FREE_FORM: Final = frozenset({"metadata", "custom_tags", "performance_metrics"})
_FLOAT_FIELDS: Final = {
    "duration",
    "temperature",
    "estimated_cost_usd",
    "deal_value",
    "conversion_rate",
    "resource_utilization",
    "test_coverage",
}


class Problem(NamedTuple):
    """Something lenient coercion changed: where, what was wrong, and what it did about it."""

    path: str
    reason: str
    action: str  # "dropped", "truncated", "clamped", "replaced"

    def __str__(self) -> str:
        return f"{self.path or '$'}: {self.reason} ({self.action})"


def _report_unreadable(copy: Any, path: str, problems: list[Problem]) -> None:
    """Turn the unreadable values in ``copy`` into plain text, reporting each as replaced."""
    if type(copy) is dict:
        pairs: Any = copy.items()
    elif type(copy) is list:
        pairs = enumerate(copy)
    else:
        return
    for key, item in list(pairs):
        where = f"{path}[{key}]" if type(key) is int else f"{path}.{key}" if path else key
        if type(item) is _Unreadable:
            copy[key] = str.__str__(item)
            problems.append(Problem(where, item.reason, "replaced"))
        else:
            _report_unreadable(item, where, problems)


# --- to_task ----------------------------------------------------------------------------------


def to_task(obj: Any, *, strict: bool = True, problems: list[Problem] | None = None) -> TaskData:
    """Build a valid :class:`TaskData` from a TaskData, a dict, or an official-client dataclass.

    Nested dicts become the nested Structs; domain sections are accepted at top
    level or under ``sections``; keys of a step that are not ExecutionStep
    fields go into the step's ``metadata``.

    ``strict=True`` raises :class:`~infinium_logging.errors.ValidationError`
    naming the path and the problem, e.g.
    ``steps[2].llm_call.prompt_tokens: expected int, got str``, for wrong types,
    unknown keys and broken limits.

    ``strict=False`` (what logging uses) never raises: it converts what can be
    converted (``"320"`` -> 320), drops what cannot, truncates over-long strings
    (marked with ``…[truncated]``), clamps numbers, and appends a
    :class:`Problem` per change to ``problems`` when given.
    """
    if strict:
        return _to_task_strict(obj)
    return lenient_task(obj, problems)[0]


def lenient_task(obj: Any, problems: list[Problem] | None = None) -> tuple[TaskData, bytes | None]:
    """``to_task(obj, strict=False)``, and the trace's wire body when it was encoded on the way.

    A dict that needs no fixing (the usual case) is converted by msgspec alone
    and checked, and its body is encoded as part of the check: a caller that
    sends the trace (the exporter) uses that body instead of encoding it again.
    ``None`` when the trace had to be fixed (the body is then still to be made).
    """
    if type(obj) is dict:
        try:
            fast = _lenient_fast(obj)
        except Exception:  # e.g. a key msgspec cannot read (a lone surrogate): the slow way
            fast = None
        if fast is not None:
            return fast
    found: list[Problem] = [] if problems is None else problems
    try:
        return _to_task_lenient(obj, found), None
    except Exception as exc:  # the last line of defence of "never raises"
        found.append(Problem("", f"could not be read as a trace ({exc!r})", "replaced"))
        return TaskData("unnamed task", "unnamed task", utc_now_iso(), 0.0), None


def decode_task(body: bytes | str, *, strict: bool = True) -> TaskData:
    """Decode a JSON body (the wire shape, or a plain TaskData dict) into a TaskData.

    Invalid JSON is a :class:`~infinium_logging.errors.ValidationError` too.
    """
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ValidationError(
            "invalid JSON: nested too deeply (deeper than the interpreter's recursion limit)"
        ) from None
    if not isinstance(obj, dict):
        raise ValidationError(f"expected a JSON object, got {_json_type(obj)}", path="")
    return to_task(obj, strict=strict)


def _json_type(obj: object) -> str:
    names = {list: "array", str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(type(obj), "null" if obj is None else type(obj).__name__)


def _to_task_strict(obj: Any) -> TaskData:
    if isinstance(obj, TaskData):
        try:
            source: Any = msgspec.to_builtins(obj, enc_hook=_builtin_float)
        except TypeError as exc:  # an object msgspec cannot write, somewhere in the struct
            raise ValidationError(str(exc), path="") from None
    elif isinstance(obj, Mapping):
        source = obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        source = _object_fields(obj)
    else:
        raise ValidationError(f"expected a TaskData or a dict, got {type(obj).__name__}", path="")
    shaped = _shape(source, strict=True, problems=[])
    try:
        task = msgspec.convert(shaped, TaskData, strict=True, from_attributes=True)
    except msgspec.ValidationError as exc:
        path, message = _explain(str(exc))
        raise ValidationError(f"{path or '$'}: {message}", path=path) from None
    _apply_limits(task, strict=True, problems=[])
    return task


# --- the lenient fast path ------------------------------------------------------------------
#
# The general lenient path copies the whole input through json_safe, then converts it,
# checks every limit and walks every struct for NaN, building a path for each field: some
# 300 µs for an ordinary trace, nearly all of it spent proving that nothing needed fixing.
# The fast path assumes that nothing does: msgspec converts the dict as it is (in C), a
# few checks look only where msgspec cannot (limits, NaN and infinities, free-form values),
# and encoding the result proves that every string is valid UTF-8 (a lone surrogate cannot
# be encoded).  Anything that would need a fix, or a Problem reported, takes the general
# path, which therefore stays the one definition of what lenient coercion does.

#: Containers nested deeper than this are cut by json_safe (``<too deep>``).
_PLAIN_DEPTH: Final = MAX_DEPTH


def _plain(value: Any, depth: int) -> bool:
    """Whether ``value`` is already exactly what json_safe would make of it (JSON types only)."""
    kind = type(value)
    if kind is str or kind is bool:
        return True
    if kind is int:
        return -_SURE_INT < value < _SURE_INT or _int_text_fits(value)
    if kind is float:
        return math.isfinite(value)
    if depth >= _PLAIN_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or len(key) > 256 or item is None:
                return False
            if not _plain(item, depth + 1):
                return False
        return True
    if kind is list:
        return all(item is not None and _plain(item, depth + 1) for item in value)
    return False


class _Checks(NamedTuple):
    """What the fast path must look at in one struct type (built once from the model)."""

    floats: tuple[str, ...]  # float fields: NaN and infinities are not allowed
    structs: tuple[str, ...]  # nested structs that have something to check themselves
    lists: tuple[str, ...]  # lists of such structs
    loose: tuple[str, ...]  # free-form (``Any``) values: must already be JSON-safe


def _checks_of(cls: type[_Model], tables: dict[type[_Model], _Checks | None]) -> _Checks | None:
    """The checks of ``cls``, or None when it holds nothing that could need them."""
    if cls in tables:
        return tables[cls]
    tables[cls] = None  # provisional: the model has no recursive types, this only guards
    floats: list[str] = []
    structs: list[str] = []
    lists: list[str] = []
    loose: list[str] = []
    hints = msgspec.structs.fields(cls)
    for field in hints:
        args = _type_args(field.type)
        if field.name in _FLOAT_FIELDS and float in args:
            floats.append(field.name)
        for arg in args:
            origin = getattr(arg, "__origin__", None)
            if isinstance(arg, type) and issubclass(arg, _Model):
                if _checks_of(arg, tables) is not None:
                    structs.append(field.name)
            elif origin is list:
                (item,) = arg.__args__
                if (
                    isinstance(item, type)
                    and issubclass(item, _Model)
                    and _checks_of(item, tables) is not None
                ):
                    lists.append(field.name)
            elif origin is dict and arg.__args__[1] is Any:
                loose.append(field.name)
    found = (
        _Checks(tuple(floats), tuple(structs), tuple(lists), tuple(loose))
        if floats or structs or lists or loose or cls is ExecutionStep
        else None
    )
    tables[cls] = found
    return found


def _type_args(tp: Any) -> tuple[Any, ...]:
    origin = getattr(tp, "__origin__", None)
    if origin is None and hasattr(tp, "__args__") and type(tp).__name__ == "UnionType":
        return tuple(tp.__args__)
    if origin is not None and str(origin) == "typing.Union":
        return tuple(tp.__args__)
    return (tp,)


_CHECKS: Final[dict[type[_Model], _Checks | None]] = {}
_checks_of(TaskData, _CHECKS)


def _struct_ok(obj: _Model, depth: int) -> bool:
    """Whether ``obj`` (and what it holds) needs none of the fixes lenient coercion makes."""
    checks = _CHECKS[type(obj)]
    if checks is None:
        return True
    for name in checks.floats:
        value = getattr(obj, name)
        if value is not None and not math.isfinite(value):
            return False
    for name in checks.loose:
        value = getattr(obj, name)
        if value is not None and type(value) is not str and not _plain(value, depth + 1):
            return False
    if type(obj) is ExecutionStep:
        preview = obj.input_preview
        if preview is not None and len(preview) > MAX_PREVIEW_LENGTH:
            return False
        preview = obj.output_preview
        if preview is not None and len(preview) > MAX_PREVIEW_LENGTH:
            return False
    for name in checks.structs:
        value = getattr(obj, name)
        if value is not None and not _struct_ok(value, depth + 1):
            return False
    for name in checks.lists:
        for item in getattr(obj, name) or ():
            if not _struct_ok(item, depth + 2):
                return False
    return True


#: What the inlined checks of _task_ok assume of the model; checked once, below.
_ASSUMED: Final[dict[type[_Model], _Checks]] = {
    TaskData: _Checks(
        ("duration",), ("sales", "project", "development", "llm_usage"), ("steps",), ()
    ),
    ExecutionStep: _Checks((), ("llm_call",), (), ("metadata",)),
    LlmCall: _Checks(("temperature",), (), (), ()),
    LlmUsage: _Checks(("estimated_cost_usd",), (), ("calls",), ()),
}
#: Whether the model is still what the inlined checks assume (else the generic walk runs).
_INLINED: Final = all(_CHECKS.get(cls) == checks for cls, checks in _ASSUMED.items())


def _task_ok(task: TaskData) -> bool:
    """:func:`_struct_ok` of a TaskData, the steps and LLM usage inlined (they are the bulk)."""
    # A written-out copy because it pays on every dict a sender reads: figure 13's baseline
    # (lenient to_task + encode_task of the realistic trace) is 44.5-45.2 us/trace with it,
    # 51.3-52.4 with _struct_ok(task, 0) (benchmarks/run.py --only 13, alternate runs).
    if not _INLINED:
        return _struct_ok(task, 0)
    isfinite = math.isfinite
    for step in task.steps or ():
        preview = step.input_preview
        if preview is not None and len(preview) > MAX_PREVIEW_LENGTH:
            return False
        preview = step.output_preview
        if preview is not None and len(preview) > MAX_PREVIEW_LENGTH:
            return False
        call = step.llm_call
        if call is not None and call.temperature is not None and not isfinite(call.temperature):
            return False
        metadata = step.metadata
        if metadata is not None and not _plain(metadata, 3):
            return False
    usage = task.llm_usage
    if usage is not None:
        cost = usage.estimated_cost_usd
        if cost is not None and not isfinite(cost):
            return False
        for call in usage.calls or ():
            if call.temperature is not None and not isfinite(call.temperature):
                return False
    return (
        (task.sales is None or _struct_ok(task.sales, 1))
        and (task.project is None or _struct_ok(task.project, 1))
        and (task.development is None or _struct_ok(task.development, 1))
    )


def _text_ok(text: str, limit: int) -> bool:
    # Not empty, not only whitespace (``isspace`` is False for ""), and within the limit.
    return 0 < len(text) <= limit and not text.isspace()


def _lenient_fast(obj: dict[Any, Any]) -> tuple[TaskData, bytes] | None:
    """The lenient result for a dict that needs no fixing, with its wire body; else None."""
    if "sections" in obj:
        return None  # the wire shape: the general path lifts the sections
    task = msgspec.convert(obj, TaskData, strict=False)  # raises for anything it cannot read
    duration = task.duration
    if not (
        _text_ok(task.name, MAX_NAME_LENGTH)
        and _text_ok(task.description, MAX_DESCRIPTION_LENGTH)
        and math.isfinite(duration)
        and 0.0 <= duration <= MAX_DURATION
        and _iso_ok(task.current_datetime)
        and _task_ok(task)
    ):
        return None
    try:
        body = encode_task(task)
    except Exception:  # a lone surrogate (not UTF-8), or a value msgspec cannot encode
        return None
    return task, body


def _to_task_lenient(obj: Any, problems: list[Problem]) -> TaskData:
    if isinstance(obj, (TaskData, Mapping)) or (
        dataclasses.is_dataclass(obj) and not isinstance(obj, type)
    ):
        seen: set[int] = set()
        source = _json_safe(obj, None, 0, seen)
        if type(source) is dict:
            _restore_not_given(obj, source, 0)
    else:
        problems.append(Problem("", f"expected a dict, got {type(obj).__name__}", "replaced"))
        source, seen = {}, set()
    if type(source) is _Unreadable:
        problems.append(Problem("", source.reason, "replaced"))
    if not isinstance(source, dict):
        source = {}
    shaped = _shape(source, strict=False, problems=problems)
    if _UNREADABLE in seen:
        _report_unreadable(shaped, "", problems)
    _fill_required(shaped, problems)
    for _ in range(_MAX_LENIENT_PASSES):
        try:
            task = msgspec.convert(shaped, TaskData, strict=False)
            break
        except msgspec.ValidationError as exc:
            path, message, parts = _locate(str(exc))
            if not _remove(shaped, parts):
                raise
            problems.append(Problem(path, message, "dropped"))
            if parts is not None and len(parts) == 1:
                _fill_required(shaped, problems)  # a required field dropped gets its default
    else:
        raise ValueError("too many invalid fields")
    _apply_limits(task, strict=False, problems=problems)
    return task


# json_safe drops a ``None``; where it means something other than "absent", it is put back:
# an error detail's defaulted fields (``None`` is "not given": the key is left out, where
# absence would send the default ``false`` / ``0``), and a linked prompt's
# ``variables_used`` (``None`` is written ``null``, as the official client writes it).
_NONE_KEPT: Final = (
    ("error_type", ("recoverable", "retry_count")),
    ("prompt_id", ("variables_used",)),
)


def _restore_not_given(original: Any, safe: Any, depth: int) -> None:
    """Put back the ``None`` values of :data:`_NONE_KEPT` that json_safe dropped."""
    if depth > 6:
        return
    if isinstance(original, msgspec.Struct) or (
        dataclasses.is_dataclass(original) and not isinstance(original, type)
    ):
        original = _object_fields(original)
    if isinstance(original, Mapping) and type(safe) is dict:
        for marker, names in _NONE_KEPT:
            if marker in original:
                for name in names:
                    if name in original and original[name] is None:
                        safe[name] = None
        for key, value in original.items():
            if type(key) is str and key in safe and value is not None:
                _restore_not_given(value, safe[key], depth + 1)
    elif isinstance(original, (list, tuple)) and type(safe) is list and len(original) == len(safe):
        for item, safe_item in zip(original, safe, strict=True):
            _restore_not_given(item, safe_item, depth + 1)


def _shape(source: Mapping[str, Any], *, strict: bool, problems: list[Problem]) -> dict[str, Any]:
    """Lift ``sections`` to top level and move a step's unknown keys into its ``metadata``."""
    shaped = dict(source)
    sections = shaped.pop("sections", None)
    if sections is not None:
        if not isinstance(sections, Mapping):
            if strict:
                raise ValidationError("sections: expected an object", path="sections")
            problems.append(Problem("sections", "expected an object", "dropped"))
        else:
            for name, value in sections.items():
                if name not in SECTION_NAMES:
                    if strict:
                        raise ValidationError(
                            f"sections.{name}: unknown section (known: {', '.join(SECTION_NAMES)})",
                            path=f"sections.{name}",
                        )
                    problems.append(Problem(f"sections.{name}", "unknown section", "dropped"))
                    continue
                if shaped.get(name) is not None:
                    if strict:
                        raise ValidationError(
                            f"{name}: given both at top level and under sections", path=name
                        )
                    problems.append(
                        Problem(f"sections.{name}", "also given at top level", "dropped")
                    )
                    continue
                shaped[name] = value
    steps = shaped.get("steps")
    if isinstance(steps, (list, tuple)):
        shaped["steps"] = [_shape_step(step) for step in steps]
    if not strict:
        for key in [key for key in shaped if key not in _TASK_FIELDS]:
            problems.append(Problem(key, "unknown field", "dropped"))
            del shaped[key]
        _stringify_tags(shaped, problems)
    return shaped


def _stringify_tags(shaped: dict[str, Any], problems: list[Problem]) -> None:
    """Custom tags are strings on the platform: a number or a bool among them (the official
    client's dataclass takes any value) is written as text, and anything else dropped on its
    own, rather than the whole mapping dropped as not a mapping of strings."""
    env = shaped.get("environment")
    tags = env.get("custom_tags") if isinstance(env, Mapping) else None
    if not isinstance(tags, Mapping) or all(type(v) is str for v in tags.values()):
        return
    fixed: dict[Any, Any] = {}
    for key, value in tags.items():
        where = f"environment.custom_tags.{key}"
        if isinstance(value, str):
            fixed[key] = value
        elif isinstance(value, bool):
            fixed[key] = "true" if value else "false"
            problems.append(Problem(where, "expected text", "replaced"))
        elif isinstance(value, (int, float)) and math.isfinite(value):
            fixed[key] = str(value)
            problems.append(Problem(where, "expected text", "replaced"))
        else:  # only this tag, not the others with it
            problems.append(Problem(where, "expected text", "dropped"))
    shaped["environment"] = {**env, "custom_tags": fixed}  # type: ignore[dict-item]


def _shape_step(step: Any) -> Any:
    if not isinstance(step, Mapping):
        return step
    extra = {key: value for key, value in step.items() if key not in _STEP_FIELDS}
    if not extra:
        return step
    shaped = {key: value for key, value in step.items() if key in _STEP_FIELDS}
    metadata = shaped.get("metadata")
    merged = dict(metadata) if isinstance(metadata, Mapping) else {}
    for key, value in extra.items():
        merged.setdefault(key, value)
    shaped["metadata"] = merged
    return shaped


def _fill_required(shaped: dict[str, Any], problems: list[Problem]) -> None:
    name = shaped.get("name")
    if not isinstance(name, str) or not name.strip():
        if name is not None:
            problems.append(Problem("name", "expected a non-empty string", "replaced"))
        shaped["name"] = str(name) if isinstance(name, (int, float)) else "unnamed task"
    if not isinstance(shaped.get("description"), str):
        if shaped.get("description") is not None:
            problems.append(Problem("description", "expected a string", "replaced"))
        shaped["description"] = shaped["name"]
    if not isinstance(shaped.get("current_datetime"), str):
        if shaped.get("current_datetime") is not None:
            problems.append(Problem("current_datetime", "expected an ISO 8601 string", "replaced"))
        shaped["current_datetime"] = utc_now_iso()
    duration = shaped.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, (int, float, str)):
        if duration is not None:
            problems.append(Problem("duration", "expected a number of seconds", "replaced"))
        shaped["duration"] = 0.0
    elif isinstance(duration, str):
        try:
            shaped["duration"] = float(duration)
        except ValueError:
            problems.append(Problem("duration", "expected a number of seconds", "replaced"))
            shaped["duration"] = 0.0


def _explain(error: str) -> tuple[str, str]:
    """Turn msgspec's "Expected `int`, got `str` - at `$.a[0].b`" into our message shape.

    The result here would be ``("a[0].b", "expected int, got str")``.
    """
    path, what, _ = _locate(error)
    return path, what


def _locate(error: str) -> tuple[str, str, list[str | int] | None]:
    """``(path as text, message, path as keys and indexes)`` of a msgspec validation error.

    The keys are read from the error as they are, not from the text path: a key
    may hold ``.``, ``[`` or a backtick.  ``None`` instead of keys when the
    error is inside a dict whose key msgspec does not name (``[...]``): the
    caller then removes that dict as a whole.  ``None`` when there is nothing
    below the top to remove.
    """
    what, at = error, "$"
    marker = error.rfind(" - at `$")
    if marker >= 0 and error.endswith("`"):
        what, at = error[:marker], error[marker + len(" - at `") : -1]
    keys: list[str | int] = []
    for match in _PATH_PART.finditer(at[1:]):
        if match.group(1) is not None:
            keys.append(match.group(1))
        elif match.group(2) is not None:
            keys.append(int(match.group(2)))
        else:  # a dict's key, unnamed: the dict itself is the deepest known place
            break
    unnamed = "[...]" in at
    field = re.match(r"Object (?:contains unknown|missing required) field `(.*)`$", what, re.DOTALL)
    text_path = at[2:] if at.startswith("$.") else at[1:]
    if field is not None:
        key = field.group(1)
        if "unknown" in what:
            what = "unknown field"
            if not unnamed:
                keys.append(key)
        else:
            what = "required field missing"  # the object lacking it goes, not the field
        text_path = f"{text_path}.{key}" if text_path else key
    what = what.replace("`", "").replace(" | null", "")
    return text_path, what[:1].lower() + what[1:], keys or None


def _remove(shaped: dict[str, Any], parts: list[str | int] | None) -> bool:
    """Delete the value at ``parts`` (keys and indexes from the top of the trace)."""
    if not parts:
        return False
    container: Any = shaped
    for part in parts[:-1]:
        try:
            container = container[part]
        except (KeyError, IndexError, TypeError):
            return False
    try:
        del container[parts[-1]]
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _iso_ok(text: str) -> bool:
    candidate = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        _dt.datetime.fromisoformat(candidate)
    except ValueError:
        return False
    return "T" in candidate or " " in candidate or len(candidate) == 10


def _apply_limits(task: TaskData, *, strict: bool, problems: list[Problem]) -> None:
    def fail(path: str, message: str) -> None:
        raise ValidationError(f"{path}: {message}", path=path)

    for name, limit in (("name", MAX_NAME_LENGTH), ("description", MAX_DESCRIPTION_LENGTH)):
        value: str = getattr(task, name)
        if not value.strip():
            if strict:
                fail(name, "cannot be empty")
            value = task.name if name == "description" else "unnamed task"
            setattr(task, name, value)
            problems.append(Problem(name, "empty", "replaced"))
        if len(value) > limit:
            if strict:
                fail(name, f"longer than {limit} characters ({len(value)})")
            setattr(task, name, truncate(value, limit))
            problems.append(Problem(name, f"longer than {limit} characters", "truncated"))
    if not _iso_ok(task.current_datetime):
        if strict:
            fail(
                "current_datetime", f"expected an ISO 8601 timestamp, got {task.current_datetime!r}"
            )
        problems.append(Problem("current_datetime", "expected an ISO 8601 timestamp", "replaced"))
        task.current_datetime = utc_now_iso()
    duration = task.duration
    if not math.isfinite(duration) or not 0.0 <= duration <= MAX_DURATION:
        if strict:
            fail("duration", f"expected 0 to {MAX_DURATION:g} seconds, got {duration!r}")
        clamped = 0.0 if not math.isfinite(duration) or duration < 0 else MAX_DURATION
        problems.append(Problem("duration", f"outside 0 to {MAX_DURATION:g} seconds", "clamped"))
        task.duration = clamped
    for index, step in enumerate(task.steps or ()):
        for name in ("input_preview", "output_preview"):
            preview = getattr(step, name)
            if preview is not None and len(preview) > MAX_PREVIEW_LENGTH:
                path = f"steps[{index}].{name}"
                if strict:
                    fail(path, f"longer than {MAX_PREVIEW_LENGTH} characters ({len(preview)})")
                setattr(step, name, truncate(preview, MAX_PREVIEW_LENGTH))
                problems.append(
                    Problem(path, f"longer than {MAX_PREVIEW_LENGTH} characters", "truncated")
                )
    _check_floats(task, "", strict, problems)


def _check_floats(obj: _Model, path: str, strict: bool, problems: list[Problem]) -> None:
    """NaN and infinity would be written as ``null``: refuse them (strict) or drop them.

    Strict mode also refuses them, and ``None``, inside free-form values:
    lenient reading has already dropped them there (json_safe).
    """
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        where = f"{path}.{name}" if path else name
        if name in _FLOAT_FIELDS and isinstance(value, float) and not math.isfinite(value):
            if strict:
                raise ValidationError(
                    f"{where}: expected a finite number, got {value!r}", path=where
                )
            problems.append(Problem(where, "not a finite number", "dropped"))
            setattr(obj, name, None)
        elif strict and name in _FREE_FORM and isinstance(value, (dict, list)):
            _refuse_nulls(value, where)
        elif isinstance(value, _Model):
            _check_floats(value, where, strict, problems)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, _Model):
                    _check_floats(item, f"{where}[{index}]", strict, problems)


def _refuse_nulls(value: dict[str, Any] | list[Any], path: str) -> None:
    """Raise for the first ``None``, NaN or infinity inside a free-form value: each would be
    written as ``null``.  A loop, not recursion, and paths made only for the error: such
    values may nest past the recursion limit (encoding then says so)."""
    # Each entry: (the container, its place as (parent's place, key or index) or None).
    pending: list[tuple[Any, Any]] = [(value, None)]
    visited: set[int] = set()
    while pending:
        container, place = pending.pop()
        if id(container) in visited:  # shared, or a cycle (which encoding refuses)
            continue
        visited.add(id(container))
        pairs = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in pairs:
            if item is None or (isinstance(item, float) and not math.isfinite(item)):
                at = _place_text(path, (place, key))
                if item is None:
                    message = f"{at}: null is not sent (the body carries no nulls): leave it out"
                else:
                    message = f"{at}: expected a finite number, got {item!r}"
                raise ValidationError(message, path=at)
            if isinstance(item, (dict, list, tuple)):
                pending.append((item, (place, key)))


def _place_text(path: str, place: Any) -> str:
    keys: list[Any] = []
    while place is not None:
        place, key = place
        keys.append(key)
    for key in reversed(keys):
        path = f"{path}[{key}]" if type(key) is int else f"{path}.{key}"
    return path
