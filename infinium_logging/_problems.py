"""Every problem of a trace that strict validation refuses, not only the first it meets."""

from __future__ import annotations

import re
from typing import Final

import msgspec

from .convert import Problem, to_task
from .errors import ValidationError

__all__ = ["all_problems"]

#: At most this many problems are reported for one trace.
_MAX_PROBLEMS: Final = 50
#: Valid values for the required fields: a missing or refused one is replaced by its stand-in
#: (taking it out would only make it missing), so that the search goes on past it.
_STAND_INS: Final[dict[str, object]] = {
    "current_datetime": "2000-01-01T00:00:00.000000Z",
    "fetched_at": "2000-01-01T00:00:00.000000Z",
    "duration": 0.0,
    "step_number": 1,
    "version": 1,
    **dict.fromkeys(
        (
            *("name", "description", "action", "error_type", "message", "task_objective"),
            *("model", "tool_name", "prompt_id", "prompt_name"),
        ),
        "x",
    ),
}
#: One step of a path: ``.field`` (or the first ``field``) or ``[index]``.
_PATH_PART: Final = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def all_problems(obj: object, first: ValidationError) -> list[str]:
    """Every problem of a trace that strict validation refused, not only the ``first``.

    Strict validation stops at one problem: it is asked again with each problem's value taken
    out, or a required field's replaced by a valid stand-in (while that can be done, and the
    problem moves on), and lenient reading, which goes on
    past every problem, names the rest (a numeric string where a number belongs, which lenient
    reading accepts, is found only by the first way).
    """
    found = {first.path or "": first.message}
    trial = msgspec.json.decode(msgspec.json.encode(obj))  # a copy of the decoded JSON
    error = first
    for _ in range(_MAX_PROBLEMS):
        unknown = error.message.endswith("unknown field")
        if error.path is None or not _take_out(trial, error.path, stand_in=not unknown):
            break
        try:
            to_task(trial, strict=True)
        except ValidationError as exc:
            if (exc.path or "") in found:
                break
            found[exc.path or ""] = exc.message
            error = exc
        else:
            break
    lenient: list[Problem] = []
    to_task(obj, strict=False, problems=lenient)
    for problem in lenient:
        if problem.path not in found and len(found) < _MAX_PROBLEMS:
            found[problem.path] = f"{problem.path or '$'}: {problem.reason}"
    return list(found.values())


def _take_out(data: object, path: str, *, stand_in: bool) -> bool:
    """Remove the value at ``path`` (``steps[2].llm_call.prompt_tokens``) from ``data``, or put
    in its stand-in when it is a required field's; False when neither can be done."""
    parts: list[str | int] = []
    for match in _PATH_PART.finditer(path):
        parts.append(match[1] if match[1] is not None else int(match[2]))
    if not parts or "".join(m[0] for m in _PATH_PART.finditer(path)) != path:
        return False
    for part in parts[:-1]:
        if not _holds(data, part):
            return False
        data = data[part]  # type: ignore[index]
    last = parts[-1]
    if stand_in and isinstance(data, dict) and isinstance(last, str) and last in _STAND_INS:
        if data.get(last) == _STAND_INS[last]:
            return False
        data[last] = _STAND_INS[last]
        return True
    if not _holds(data, last):
        return False
    del data[last]  # type: ignore[attr-defined]
    return True


def _holds(data: object, part: str | int) -> bool:
    if isinstance(data, dict):
        return isinstance(part, str) and part in data
    return isinstance(data, list) and isinstance(part, int) and part < len(data)
