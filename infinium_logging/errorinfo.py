"""Errors: what an exception, or a traceback rendered as text, becomes in a trace."""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final

from .sanitise import (
    safe_str,
    truncate,
)

__all__ = [
    "MAX_ERROR_MESSAGE",
    "MAX_STACK_TRACE",
    "ErrorInfo",
    "error_from_exc_info",
    "error_from_rendered",
]

#: Longest ErrorDetail message and stack trace kept from an exception.
MAX_ERROR_MESSAGE: Final = 10_000
MAX_STACK_TRACE: Final = 32_768


class ErrorInfo:
    """An ErrorDetail (as a dict, sent as is) and the identity of the exception it describes.

    The identity (``id`` plus type and message) lets ``task()`` recognise an
    exception it already recorded when it later escapes the block, without
    keeping the exception (and its frames) alive.
    """

    __slots__ = ("detail", "key")

    def __init__(self, detail: dict[str, Any], key: tuple[int, str, str] | None) -> None:
        self.detail = detail
        self.key = key


def _exc_triple(
    exc_info: object,
) -> tuple[type[BaseException], BaseException, TracebackType | None] | None:
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        return type(exc_info), exc_info, exc_info.__traceback__
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc = exc_info[1]
        if not isinstance(exc, BaseException):
            return None
        return type(exc), exc, exc_info[2]
    return None


def error_from_exc_info(exc_info: object) -> ErrorInfo | None:
    """An :class:`ErrorInfo` from ``exc_info`` (``True``, an exception or a 3-tuple), else None.

    ``True`` means ``sys.exc_info()``, read now: this must run on the thread
    that logs, inside its ``except`` block.
    """
    triple = _exc_triple(exc_info)
    if triple is None:
        return None
    kind, exc, tb = triple
    error_type = getattr(kind, "__name__", "Exception")
    message = safe_str(exc) or error_type
    try:
        stack = "".join(traceback.format_exception(kind, exc, tb))
    except Exception:
        stack = f"{error_type}: {message}"
    detail = {
        "error_type": error_type,
        "message": truncate(message, MAX_ERROR_MESSAGE),
        "recoverable": False,
        "stack_trace": truncate(stack, MAX_STACK_TRACE),
    }
    return ErrorInfo(detail, (id(exc), error_type, message))


#: An exception's line in a rendered traceback: its type (dotted name), then ": message".
_EXCEPTION_LINE: Final = re.compile(r"([A-Za-z_][\w.]*)(?:: (.*))?")
_TRACEBACK_HEADERS: Final = (
    "Traceback (most recent call last)",
    "Exception Group Traceback (most recent call last)",
)
#: The frame lines of an exception group's traceback start with "|" (after the indent).
_GROUP_LINE: Final = re.compile(r"\s*\| ?")


def _rendered_exception(text: str) -> tuple[str, str]:
    """The type and message of the exception ``text`` renders (``traceback`` style).

    The last exception of a chain is the one after the last ``Traceback``
    header: the first line after its frames (they are indented), and every
    line after it is its message (a message over several lines, notes).  An
    exception group's own line is the first ``| Type: ...`` after its header.
    Without a header (an exception that was never raised), the first line.
    """
    lines = text.strip().splitlines()
    start = 0
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index].lstrip(" +|")
        if line.startswith(_TRACEBACK_HEADERS):
            start = index + 1
            if line.startswith("Exception Group"):
                for candidate in lines[start:]:
                    group = _GROUP_LINE.match(candidate)
                    inner = candidate[group.end() :] if group else candidate
                    found = _EXCEPTION_LINE.fullmatch(inner)
                    if found and not inner.startswith("File "):
                        return found.group(1), found.group(2) or ""
            break
    if start:
        while start < len(lines) and lines[start][:1] in (" ", "\t"):
            start += 1  # the frames
    rest = lines[start:] or lines[-1:]
    found = _EXCEPTION_LINE.fullmatch(rest[0])
    if found is None:
        return "Exception", "\n".join(rest)
    message = "\n".join([found.group(2) or "", *rest[1:]]).strip("\n")
    return found.group(1), message


def error_from_rendered(value: object) -> ErrorInfo | None:
    """An :class:`ErrorInfo` from what structlog's ``format_exc_info`` / ``dict_tracebacks`` left.

    Used when such a processor ran before :class:`InfiniumProcessor`, so that
    ``exc_info`` is gone and only its rendering (``event_dict["exception"]``) is left.
    """
    if isinstance(value, str) and value.strip():
        error_type, message = _rendered_exception(value)
        detail = {
            "error_type": error_type,
            "message": truncate(message or error_type, MAX_ERROR_MESSAGE),
            "recoverable": False,
            "stack_trace": truncate(value, MAX_STACK_TRACE),
        }
        return ErrorInfo(detail, None)
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        first = value[0]
        error_type = safe_str(first.get("exc_type") or "Exception")
        message = safe_str(first.get("exc_value") or "") or error_type
        lines = ["Traceback (most recent call last):"]
        for stack in reversed(value):
            if not isinstance(stack, Mapping):
                continue
            for frame in stack.get("frames") or ():
                if isinstance(frame, Mapping):
                    lines.append(
                        f'  File "{frame.get("filename")}", line {frame.get("lineno")}, '
                        f"in {frame.get('name')}"
                    )
            lines.append(f"{stack.get('exc_type')}: {stack.get('exc_value')}")
        detail = {
            "error_type": error_type,
            "message": truncate(message, MAX_ERROR_MESSAGE),
            "recoverable": False,
            "stack_trace": truncate("\n".join(lines), MAX_STACK_TRACE),
        }
        return ErrorInfo(detail, None)
    return None
