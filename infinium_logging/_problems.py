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
#: One step of a path: ``.field`` (or the first ``field``) or ``[index]``.
_PATH_PART: Final = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def all_problems(obj: object, first: ValidationError) -> list[str]:
    """Every problem of a trace that strict validation refused, not only the ``first``.

    Strict validation stops at one problem: it is asked again with each problem's value taken
    out (while the value can be, and the problem moves on), and lenient reading, which goes on
    past every problem, names the rest (a numeric string where a number belongs, which lenient
    reading accepts, is found only by the first way).
    """
    found = {first.path or "": first.message}
    trial = msgspec.json.decode(msgspec.json.encode(obj))  # a copy of the decoded JSON
    error = first
    for _ in range(_MAX_PROBLEMS):
        if error.path is None or not _take_out(trial, error.path):
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


def _take_out(data: object, path: str) -> bool:
    """Remove the value at ``path`` (``steps[2].llm_call.prompt_tokens``) from ``data``;
    False when there is no such value."""
    parts: list[str | int] = []
    for match in _PATH_PART.finditer(path):
        parts.append(match[1] if match[1] is not None else int(match[2]))
    if not parts or "".join(m[0] for m in _PATH_PART.finditer(path)) != path:
        return False
    for part in parts[:-1]:
        if not _holds(data, part):
            return False
        data = data[part]  # type: ignore[index]
    if not _holds(data, parts[-1]):
        return False
    del data[parts[-1]]  # type: ignore[attr-defined]
    return True


def _holds(data: object, part: str | int) -> bool:
    if isinstance(data, dict):
        return isinstance(part, str) and part in data
    return isinstance(data, list) and isinstance(part, int) and part < len(data)
