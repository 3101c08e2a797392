"""Long values of a captured event cut, at capture, to what one trace body can carry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .model import MAX_BODY_BYTES
from .sanitise import truncate

__all__ = ["CAPTURE_BUDGET", "bounded"]

#: Characters of text (and bytes) a captured event's spool record keeps in all, shared among
#: its longest values: a trace body is at most MAX_BODY_BYTES, so no more could be sent, and
#: the record (with the rest of the event) stays under that bound.
CAPTURE_BUDGET: Final = MAX_BODY_BYTES * 3 // 4


def bounded(
    basis: dict[Any, Any], message: str, env: Mapping[str, Any]
) -> tuple[dict[Any, Any], str, Mapping[str, Any]]:
    """``(basis, message, env)`` with the longest strings and bytes among the basis's values
    and the message cut so that together they hold at most :data:`CAPTURE_BUDGET` characters,
    marked as ``fit_task`` marks a shrunk trace (``custom_tags["truncated"]`` and
    ``["truncated_fields"]``).  The arguments are returned as they are when nothing is cut
    (the usual case: one pass over the values); they are never modified.
    """
    total = len(message)
    for value in basis.values():
        if type(value) is str or type(value) is bytes:
            total += len(value)
    if total <= CAPTURE_BUDGET:
        return basis, message, env
    lengths = [len(message)] + [
        len(v) for v in basis.values() if type(v) is str or type(v) is bytes
    ]
    limit = _fair_share(lengths, CAPTURE_BUDGET)
    cut: list[str] = []
    kept = dict(basis)
    for key, value in basis.items():
        if (type(value) is str or type(value) is bytes) and len(value) > limit:
            kept[key] = truncate(value, limit) if type(value) is str else value[:limit]
            cut.append(str(key))
    if len(message) > limit:
        message = truncate(message, limit)
        cut.append("message")
    marked = dict(env)
    tags = dict(marked.get("custom_tags") or {})
    tags["truncated"] = "true"
    tags["truncated_fields"] = truncate(", ".join(cut) + " (cut when logged)", 500)
    marked["custom_tags"] = tags
    return kept, message, marked


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
