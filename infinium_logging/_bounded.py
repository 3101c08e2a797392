"""Long values of a captured event cut, at capture, to what one trace body can carry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .model import MAX_BODY_BYTES
from .sanitise import truncate

__all__ = ["CAPTURE_BUDGET", "bounded", "long_in_sight"]

#: Characters of text (and bytes) a captured event's spool record keeps in all, shared among
#: its longest values: a trace body is at most MAX_BODY_BYTES, so no more could be sent, and
#: the record (with the rest of the event) stays under that bound.
CAPTURE_BUDGET: Final = MAX_BODY_BYTES * 3 // 4


#: How deep into nested dicts and lists long values are looked for (what fit_task reads).
_DEPTH: Final = 6


def bounded(
    basis: dict[Any, Any],
    message: str,
    env: Mapping[str, Any],
    fields: list[tuple[str, Any]] | None = None,
) -> tuple[dict[Any, Any], str, Mapping[str, Any], list[tuple[str, Any]] | None]:
    """``(basis, message, env, fields)`` with the longest strings and bytes among the basis's
    values (nested ones too), the event's other ``fields`` and the message cut so that
    together they hold at most :data:`CAPTURE_BUDGET` characters, marked as ``fit_task``
    marks a shrunk trace (``custom_tags["truncated"]`` and ``["truncated_fields"]``).  The
    arguments are returned as they are when nothing is cut (the usual case: one pass over
    the values); they are never modified.
    """
    lengths = [len(message)]
    _lengths(basis, 0, lengths)
    if fields:
        for _, value in fields:
            _lengths(value, 1, lengths)
    if sum(lengths) <= CAPTURE_BUDGET:
        return basis, message, env, fields
    limit = _fair_share(lengths, CAPTURE_BUDGET)
    cut: list[str] = []
    kept = _cut(basis, limit, 0, "", cut)
    if fields:
        fields = [(key, _cut(value, limit, 1, key, cut)) for key, value in fields]
    if len(message) > limit:
        message = truncate(message, limit)
        cut.append("message")
    marked = dict(env)
    tags = dict(marked.get("custom_tags") or {})
    tags["truncated"] = "true"
    tags["truncated_fields"] = truncate(", ".join(cut) + " (cut when logged)", 500)
    marked["custom_tags"] = tags
    return kept, message, marked, fields


def long_in_sight(
    basis: dict[Any, Any], message: str, fields: list[tuple[str, Any]] | None
) -> bool:
    """Whether the message or a top-level value is longer than the whole budget: then the
    event is cut before it is encoded (a huge value would be copied whole); the rest is
    found by encoding it (its MessagePack holds each string in at least as many bytes as
    it has characters, so a record within the budget holds no more text)."""
    if len(message) > CAPTURE_BUDGET:
        return True
    for value in basis.values():
        if (type(value) is str or type(value) is bytes) and len(value) > CAPTURE_BUDGET:
            return True
    for _, value in fields or ():
        if (type(value) is str or type(value) is bytes) and len(value) > CAPTURE_BUDGET:
            return True
    return False


def _lengths(value: object, depth: int, out: list[int]) -> None:
    """The lengths of the strings and bytes in ``value``, nested ones to :data:`_DEPTH`."""
    kind = type(value)
    if kind is str or kind is bytes:
        out.append(len(value))  # type: ignore[arg-type]
    elif depth < _DEPTH:
        if kind is dict:
            for item in value.values():  # type: ignore[attr-defined]
                _lengths(item, depth + 1, out)
        elif kind is list or kind is tuple:
            for item in value:  # type: ignore[attr-defined]
                _lengths(item, depth + 1, out)


def _cut(value: Any, limit: int, depth: int, path: str, cut: list[str]) -> Any:
    """``value`` with its strings and bytes over ``limit`` cut (a copy where one was)."""
    kind = type(value)
    if kind is str or kind is bytes:
        if len(value) <= limit:
            return value
        cut.append(path or "value")
        return truncate(value, limit) if kind is str else value[:limit]
    if depth >= _DEPTH:
        return value
    if kind is dict:
        return {
            key: _cut(item, limit, depth + 1, f"{path}.{key}" if path else str(key), cut)
            for key, item in value.items()
        }
    if kind is list or kind is tuple:
        return [_cut(item, limit, depth + 1, f"{path}[{i}]", cut) for i, item in enumerate(value)]
    return value


def _fair_share(lengths: list[int], budget: int) -> int:
    """The largest ``limit`` with ``sum(min(n, limit) for n in lengths) <= budget``: short
    values are kept whole, the long ones share what is left equally."""
    remaining = budget
    ordered = sorted(lengths)
    for index, length in enumerate(ordered):
        share = remaining // (len(ordered) - index)
        if length > share:
            return share
        remaining -= length
    return ordered[-1] if ordered else budget
