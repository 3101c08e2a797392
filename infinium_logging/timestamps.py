"""Levels and times: what a record's level and timestamp become in a trace."""

from __future__ import annotations

import datetime as _dt
import math
import time
from typing import Final

from .model import format_timestamp

__all__ = [
    "LEVELS",
    "captured_timestamp",
    "event_time",
    "event_timestamp",
    "iso_timestamp",
    "level_number",
]


# --- levels ---------------------------------------------------------------------------------------

#: structlog level and method names (lower case) as stdlib numbers.
LEVELS: Final[dict[str, int]] = {
    "notset": 0,
    "debug": 10,
    "info": 20,
    "warning": 30,
    "warn": 30,
    "error": 40,
    "exception": 40,
    "critical": 50,
    "fatal": 50,
    # structlog's BoundLogger.msg() logs at info.
    "msg": 20,
}


def level_number(level: object, default: int = 20) -> int:
    """A level name (any case, structlog's method names included) or number as a stdlib number."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str):
        found = LEVELS.get(level.lower())
        if found is not None:
            return found
    return default


# --- time -----------------------------------------------------------------------------------------

# (whole second, its "YYYY-MM-DDTHH:MM:SS" text): one tuple, replaced atomically, so that
# threads share it safely.
_second_text: tuple[int, str] = (-1, "")
# Inside this range time.gmtime and datetime agree on the text; outside it, use the slow path.
_FAST_MIN: Final = 946_684_800.0  # 2000-01-01
_FAST_MAX: Final = 4_102_444_800.0  # 2100-01-01


def iso_timestamp(timestamp: float) -> str:
    """Exactly :func:`~infinium_logging.model.format_timestamp`, several times faster.

    The date and time of the current second are cached; only the microseconds
    are formatted per call, rounded half to even as ``datetime`` rounds them
    (``timestamp - int(timestamp)`` is exact, like the ``modf`` it uses).
    """
    global _second_text
    if not _FAST_MIN <= timestamp < _FAST_MAX:
        try:
            return format_timestamp(timestamp)
        except (OverflowError, OSError, ValueError):
            return format_timestamp(time.time())
    second = int(timestamp)
    micros = round((timestamp - second) * 1e6)
    if micros >= 1_000_000:
        second += 1
        micros -= 1_000_000
    cached = _second_text
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _second_text = cached
    return "%s.%06dZ" % (cached[1], micros)  # noqa: UP031 - measurably faster than an f-string


def event_timestamp(value: object) -> float | str:
    """:func:`event_time`, except that a timestamp already in the wire format is kept as text.

    ``TimeStamper(fmt="iso")`` (UTC, the default) writes exactly the format
    traces use, so the common case costs a few character checks.
    """
    if (
        type(value) is str
        and len(value) == 27
        and value[26] == "Z"
        and value[10] == "T"
        and value[19] == "."
        and value[4] == "-"
    ):
        return value
    return event_time(value)


def captured_timestamp(value: object) -> object:
    """A structlog ``timestamp`` as the processor keeps it until the trace is built: as it
    is when it needs no clock to be read (a number, text with ``Z`` or an offset), else read
    now (see :func:`event_time`), while the time it was logged can still tell local time
    from UTC."""
    if type(value) is str:
        tail = value[10:]
        if value[-1:] in ("Z", "z") or "+" in tail or "-" in tail:
            return value
    elif not isinstance(value, _dt.datetime):
        return value
    return event_time(value, time.time())


def event_time(value: object, now: float | None = None) -> float:
    """The POSIX time of a structlog ``timestamp`` value, or now when it cannot be read.

    Accepts what ``TimeStamper`` produces: epoch numbers (``fmt=None``, or as text with
    ``fmt="%s"``), ISO 8601 strings with ``Z`` or an offset, and strings without one.
    Those are local time (``utc=False``, as in structlog's default configuration) or UTC
    (``utc=True`` with a format of one's own): given ``now``, the time the event was
    logged, the reading nearer to it is taken, else local time, as Python reads a naive
    datetime.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and number > 0:
            return number
    elif isinstance(value, str):
        text = value.strip()
        if text[:1].isdigit() and text.replace(".", "", 1).isdigit():
            # TimeStamper(fmt="%s") writes the epoch seconds as text.
            number = float(text)
            return number if math.isfinite(number) and number > 0 else time.time()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            moment = _dt.datetime.fromisoformat(text)
        except ValueError:
            return time.time()
        return _posix(moment, now)
    elif isinstance(value, _dt.datetime):
        return _posix(value, now)
    return time.time()


def _posix(moment: _dt.datetime, now: float | None) -> float:
    if moment.tzinfo is not None:
        return moment.timestamp()
    local = moment.timestamp()  # Python reads a naive datetime as local time
    if now is None:
        return local
    utc = moment.replace(tzinfo=_dt.timezone.utc).timestamp()
    return utc if abs(utc - now) < abs(local - now) else local
