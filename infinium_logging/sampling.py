"""Sampling: which traces a head rate lets through (every trace with an error is kept)."""

from __future__ import annotations

import zlib
from typing import Final

__all__ = ["has_errors", "sampled_in"]

# What only a trace with an error holds on the wire: the structure's own quotes (a string's
# quotes are escaped, so no text can imitate these).
_ERROR_MARKS: Final = (b'"errors":[', b'"error":{', b'"errors_encountered":[')
_SCALE: Final = 2**32


def has_errors(body: bytes) -> bool:
    """Whether the wire body of a trace records an error (of the trace, a step or a tool)."""
    return any(mark in body for mark in _ERROR_MARKS)


def sampled_in(body: bytes, rate: float) -> bool:
    """Whether the trace whose wire body is ``body`` is kept at a head rate of ``rate``.

    The decision is a function of the trace itself (a CRC of its body), not a draw: a trace
    kept once and left in the spool is kept again when it is read back after a restart,
    never counted as sent by one attempt and sampled out by the next.
    """
    if rate >= 1.0:
        return True
    if has_errors(body):
        return True
    return zlib.crc32(body) < rate * _SCALE
