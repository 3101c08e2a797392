"""Tagged events: a record or event dict carrying the tag, captured on the caller's thread.

What must be fixed at the moment of the event is captured on the thread that
logs, as cheaply as possible: the tag's value (a shallow copy of a dict), the
message and its arguments, the time, the event's fields (a shallow copy of the
record's or event's dict), exception details (formatted now, so that no frames
are kept alive, as ``QueueHandler.prepare`` does) and the environment.  The
:class:`TaggedTrace` holding them is queued as it is; everything else is done by
:meth:`TaggedTrace.materialize`, which the exporter calls on its sender thread
(:func:`~infinium_logging.payload.tagged_payload`: defaults, timestamps and
messages).  Traces leave it as dicts of TaskData fields; lenient coercion
(:func:`~infinium_logging.convert.to_task` with ``strict=False``) follows on the
same thread.  An event inside a task is captured as a
:data:`~infinium_logging.fields.RawEvent` instead, and becomes a step
(:mod:`~infinium_logging.steps`).

Because objects logged are read later, on another thread, an application must
not mutate them after logging them: the contract of
:class:`logging.handlers.QueueHandler`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from ._bounded import bounded, long_in_sight
from .errorinfo import ErrorInfo
from .fields import event_fields, held_text, is_dataclass_object, record_message
from .model import TaskData
from .payload import tagged_payload
from .queued import PendingTrace, fields_estimate, set_captured_reader
from .sanitise import _object_fields, safe_str
from .timestamps import event_timestamp

__all__ = [
    "TaggedTrace",
    "is_tag",
    "tagged_trace",
]


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

    def spool_form(self, cut: bool = False) -> tuple[Any, ...] | None:
        """``(basis, message, timestamp, error detail, env[, fields])`` when the tag's value is
        a dict (the usual case), read back by :meth:`from_spool_form`; the message is formatted
        now, and the event's own fields (if any) are listed as pairs.  With ``cut`` (or a value
        too long in plain sight) the long values are cut to what a trace can carry."""
        if type(self.basis) is not dict:
            return None
        message = self.message
        if self.args is not None:
            message = record_message(message, self.args)
        elif type(message) is not str:
            message = safe_str(message)
        error = None if self.error is None else self.error.detail
        fields = self.fields
        if isinstance(fields, dict):
            fields = event_fields(fields, "")
        basis, env, pairs = self.basis, self.env, list(fields) if fields else None
        # Cut on the caller's thread: a huge value would otherwise be encoded whole there.
        if cut or long_in_sight(basis, message, pairs):
            basis, message, env, pairs = bounded(basis, message, env, pairs)
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
    elif is_dataclass_object(value):
        # The official client's TaskData (a dataclass), when migrating from send_task_data:
        # its fields as they are now, read as a dict of TaskData fields is.
        value = _object_fields(value)
    return TaggedTrace(value, message, args, timestamp, fields, error, env)
