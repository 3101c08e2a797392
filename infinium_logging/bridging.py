"""Dedup of bridged records: one step or trace per event when structlog and logging both see it.

structlog bridged to the standard library hands each event to an InfiniumProcessor and
then, as a LogRecord, to an InfiniumHandler; a ``ProcessorFormatter`` shows one record to
both; two handlers may share a destination.  The processor leaves a note here (``bridge``)
and the handler drops the record that carries it (:func:`marked`); records are told apart
by :func:`record_identity`.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import CodeType, FrameType
from typing import Final

__all__ = ["bridge", "bridge_in_use", "marked", "record_identity"]


class _Bridge(threading.local):
    """Per-thread note from the structlog processor to the stdlib handler (see processor.py).

    When the processor has turned an event into a step or a trace and the
    event is about to be passed on to a stdlib logger, it leaves
    ``(logger name, level number, event dict)`` here; the handler drops the
    record that carries that event (see :func:`marked`), so bridged setups get
    one step or one trace per event, not two.
    """

    mark: tuple[str, int, object] | None = None


class _BridgeInUse:
    """Set (process-wide) once a processor has left a mark: until then the handler skips
    reading the thread-local (a plain attribute is read in half the time)."""

    in_use: bool = False
    #: The code of structlog's call into the wrapped logger (``_proxy_to_logger``), set by
    #: processor.py: this module does not import structlog.
    calls: frozenset[CodeType] = frozenset()
    #: Set once an InfiniumProcessor exists: in a ``ProcessorFormatter`` it sees the
    #: LogRecords an InfiniumHandler sees too, so both tell records apart from then on
    #: (see :func:`record_identity`), as two handlers do.
    processor: bool = False
    #: The last tagged record sent, and where to: two handlers sharing one destination (say
    #: one on the root logger and one on a child), or a handler and a processor in a
    #: formatter, send a record once.  One for the process, not per thread: a race between
    #: threads can only miss a duplicate.
    last_tagged: tuple[object, object] = (None, None)


bridge: Final = _Bridge()
bridge_in_use: Final = _BridgeInUse()

#: How far up from the handler structlog's call into the logger is looked for (it is about
#: ten frames up: the stdlib's handler and logger calls in between).
_BRIDGE_DEPTH: Final = 40


class _SameRecord:
    """A LogRecord's identity: equal only for the record itself and its copies (which
    ``ProcessorFormatter``, ``QueueHandler`` and ``makeLogRecord`` make, sharing its
    attributes), without keeping the record alive."""

    __slots__ = ("created", "levelno", "name", "relative")

    def __init__(self, created: object, relative: object, name: object, levelno: object) -> None:
        self.created = created
        self.relative = relative
        self.name = name
        self.levelno = levelno

    def __eq__(self, other: object) -> bool:
        # The creation times as objects, not their values: each record computes its own
        # floats, which copies share; records made within one tick of a coarse clock (or
        # under freezegun) have equal times, and a freed record's id() is reused at once.
        # Both: a mocked time.time() hands every record the same `created` object, but
        # `relativeCreated` is computed from it for each record.
        return (
            type(other) is _SameRecord
            and other.relative is self.relative
            and other.created is self.created
            and other.name == self.name
            and other.levelno == self.levelno
        )

    __hash__ = None  # type: ignore[assignment]


def record_identity(record: logging.LogRecord) -> object:
    """What tells a LogRecord (and its copies) from every other record (see _SameRecord)."""
    attributes = record.__dict__
    created = attributes.get("created")
    relative = attributes.get("relativeCreated")
    if created is None or relative is None:  # a record class of its own: duplicates unnoticed
        return object()
    return _SameRecord(created, relative, attributes.get("name"), attributes.get("levelno"))


def marked(mark: tuple[str, int, object], name: str, levelno: int, msg: object) -> bool:
    """Whether a record from logger ``name`` is the event ``mark`` names (the handler
    has taken the mark off first: it is good for one record).

    The record that structlog makes of the event carries it as its message
    (``wrap_for_formatter``), or rendered (a renderer, ``render_to_log_kwargs``),
    which is then recognised as made during a structlog call into the logger:
    not by its text (a renderer escapes and reorders it), and not merely as the
    next record from that logger (the event may never reach the handler: a
    later processor's ``DropEvent``, a handler level or filter, and a direct
    stdlib call that followed would be taken for it).
    """
    if mark[0] != name or mark[1] != levelno:
        return False
    if msg is mark[2]:
        return True
    calls = bridge_in_use.calls
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_BRIDGE_DEPTH):
        if frame is None:
            return False
        if frame.f_code in calls:
            return True
        frame = frame.f_back
    return False
