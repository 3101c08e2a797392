"""What the delivery core queues: a trace not yet built (PendingTrace) and one queued Item."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from .model import TaskData

__all__ = [
    "BASE_ESTIMATE",
    "Item",
    "PendingTrace",
    "build_quietly",
    "fields_estimate",
    "read_captured",
    "set_captured_reader",
    "struct_estimate",
]

_log = logging.getLogger("infinium_logging.exporter")

#: Fixed part of a trace's size estimate: its small fields, containers and the queue's item.
BASE_ESTIMATE: Final = 512


class PendingTrace:
    """A trace captured on the thread that logged, built by :meth:`materialize` later.

    The delivery core queues it as it is and asks it only what this class
    offers: its size estimate (:meth:`estimate`), its spool form
    (:meth:`spool_form`) and how to build the trace (:meth:`materialize`).
    An :class:`~infinium_logging.exporter.Exporter` builds it on a sender
    thread (or on the caller's thread when it has a spool that cannot keep its
    spool form); :func:`~infinium_logging.testing.capture_tasks` and sinks of
    your own get it built on the caller's thread, as a dict of TaskData fields
    or a TaskData.  What it references is read when it is built: objects
    logged must not be mutated after logging them.

    ``basis`` (the trace's fields as far as they are known when it is
    captured: a dict of TaskData fields or a TaskData, else anything) and
    ``steps`` (how many steps it will have beyond those of ``basis``) let the
    exporter estimate the memory it holds without building it.
    """

    __slots__ = ()

    basis: object = None
    steps: int = 0
    #: Characters of long text it holds beyond ``basis`` and ``steps`` (see held_text).
    held: int = 0

    def materialize(self) -> TaskData | dict[str, Any]:
        """The trace: a TaskData, or a dict of TaskData fields to be read leniently."""
        raise NotImplementedError

    def spool_form(self, cut: bool = False) -> tuple[Any, ...] | None:
        """What a spool record keeps of it to build it later, or ``None`` when it has no such
        form (it is built before it is written).  ``cut``: asked again so when the record
        came out longer than a trace can carry (its long values cut, as ``fit_task`` would)."""
        return None

    def estimate(self, fixed: int, per_step: int) -> int:
        """The memory it is taken to hold while queued: ``fixed`` for the fields not counted
        one by one, ``per_step`` for each step (what the traces encoded so far teach)."""
        fields = self.basis
        size = self.steps * per_step + self.held
        if type(fields) is dict:
            return size + fields_estimate(fields, fixed, per_step)
        if isinstance(fields, TaskData):
            return size + struct_estimate(fields, per_step)
        return size + BASE_ESTIMATE


def fields_estimate(fields: Mapping[str, Any], fixed: int, per_step: int) -> int:
    """The estimate of a dict of TaskData fields: what can grow without bound (steps,
    summaries) is counted, the rest (name and description, capped by lenient coercion, and
    small fields) taken to weigh ``fixed``.  Raises what a broken mapping's ``get`` raises."""
    size = fixed
    listed = fields.get("steps")
    if type(listed) is list or type(listed) is tuple:
        size += len(listed) * per_step
    text = fields.get("input_summary")
    if type(text) is str:
        size += len(text)
    text = fields.get("output_summary")
    if type(text) is str:
        size += len(text)
    return size


def struct_estimate(task: TaskData, per_step: int) -> int:
    """The estimate of a built trace."""
    size = BASE_ESTIMATE + len(task.name) + len(task.description)
    if task.input_summary is not None:
        size += len(task.input_summary)
    if task.output_summary is not None:
        size += len(task.output_summary)
    if task.steps:
        size += len(task.steps) * per_step
    return size


def build_quietly(task: PendingTrace) -> TaskData | dict[str, Any] | None:
    """A captured trace built now (off a sender thread), or None when it cannot be."""
    try:
        return task.materialize()
    except Exception:
        _log.debug("a captured trace could not be built", exc_info=True)
        return None


_readers: list[Callable[[object], PendingTrace]] = []


def set_captured_reader(reader: Callable[[object], PendingTrace]) -> None:
    """Say how a spool record of a captured trace (a :meth:`PendingTrace.spool_form` read
    back) becomes a PendingTrace again: the capture side, which makes those forms, does."""
    _readers[:] = [reader]


def read_captured(form: object) -> PendingTrace:
    """The captured trace a spool form read back describes (``ValueError`` if none)."""
    if not _readers:
        raise ValueError("no reader of captured traces is known")
    return _readers[0](form)


class Item(msgspec.Struct, eq=False, gc=False):
    """One submitted trace on its way: queued, then in flight, then settled exactly once.

    A Struct: one is made for every trace admitted, under the lock, and msgspec's
    constructor costs a third of a Python ``__init__``.  ``gc=False``: it holds the trace
    and its body, never anything that holds it.
    """

    #: What was submitted: a TaskData, a dict of its fields or a PendingTrace (None once
    #: only the body is needed).
    task: Any
    #: Its place in submission order (flush targets compare it).
    seq: int
    #: The memory it is counted for: estimated while queued, its body's size once encoded.
    size: int
    #: The encoded wire body, once there is one.
    body: bytes | None = None
    #: Its record in the spool, if it has one.
    ref: Any = None
    #: Whether that record holds what the trace is made of rather than the wire body.
    loose: bool = False
    #: Settled: sent, dropped and counted, or kept in the spool.  Re-read after anything
    #: that can block: another thread may settle it meanwhile, at the shutdown deadline.
    settled: bool = False
    #: Taken by a sender and not yet through its first request (see workers pacing).
    starting: bool = False
    #: For destinations that take many records per request: the records still to be stored,
    #: by destination name, once made.
    records: dict[str, bytes] | None = None
    #: Times its records were sent again after an answer refused them for now.
    retries: int = 0
    #: Why the first destination refused its record for good, when it did.
    refused: str = ""
    #: The lanes (destinations, by tag: see :func:`~infinium_logging.spool.lane_tag`) that
    #: already settled this trace's record, read back from the spool.
    done: frozenset[int] = frozenset()
    #: Handed to the exporter's lanes (see :mod:`.lanes`): its record is settled lane by lane.
    handed: bool = False
    #: In a lane: the exporter's queued trace this record is of.
    origin: Any = None
