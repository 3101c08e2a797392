"""Admission: the inbox of submitted traces and the buffer's bounds (count, bytes, estimates)."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from .ledger import Ledger
from .model import MAX_BODY_BYTES, TaskData
from .queued import BASE_ESTIMATE, Item, PendingTrace, fields_estimate, struct_estimate
from .sanitise import _object_fields

__all__ = ["INBOX_BATCH", "Admission", "as_trace"]

#: Memory a trace's steps take per byte of their JSON (dicts, structs, small strings and
#: numbers as Python objects; measured on realistic traces: 2.1 for dicts, 1.6 for TaskData).
_MEMORY_PER_WIRE_BYTE: Final = 2.0
#: What a step is taken to weigh on the wire until encoded traces tell (realistic steps,
#: with an LLM or tool call and previews, weigh about 1 KB).
_INITIAL_STEP_BYTES: Final = 1024.0

#: Captured traces a caller leaves in the inbox before admitting them itself.  Traces there
#: are admitted (counted, estimated, queued or refused as ``queue_full``) in batches: by the
#: caller every INBOX_BATCH traces, at once when a sender waits for work or the exporter
#: closes, else by the next sender looking for work.  A lock and a queue entry per trace cost
#: as much as capturing it.  Once a sender has been woken, the traces that follow wait for it
#: in the inbox: it needs the GIL to run, which a thread logging in a loop holds for up to
#: sys.getswitchinterval(), and admitting and waking again for each of them would cost more
#: than capturing it.
INBOX_BATCH: Final = 32


class Admission:
    """Submitted traces wait in ``inbox`` until admitted to the ledger's queue in order:
    counted, estimated, and queued or refused (``invalid``, ``closed``, ``queue_full``)
    under ``max_items`` traces and ``max_bytes`` bytes of memory.

    Encoding on the caller's thread would cost as much as the logging call itself, so
    the byte bound counts an estimate while a trace waits (see :meth:`estimate`); a
    sender replaces it with the size of the encoded body, and :meth:`learn` what a
    step weighs from it.
    """

    def __init__(self, ledger: Ledger, max_items: int, max_bytes: int) -> None:
        self.ledger = ledger
        self.max_items = max_items
        self.max_bytes = max_bytes
        #: Traces submitted and not yet admitted: appended without the lock.
        self.inbox: collections.deque[object] = collections.deque()
        self._step_bytes = _INITIAL_STEP_BYTES
        #: Memory counted per step of a queued trace.
        self.step_estimate = int(_INITIAL_STEP_BYTES * _MEMORY_PER_WIRE_BYTE)
        #: Memory counted for the rest of a captured trace (learnt like the steps' share).
        self.fixed_estimate = BASE_ESTIMATE

    def admit_locked(self, closed: bool) -> tuple[bool, int]:
        """Admit the inbox's traces in order (lock held); whether the last one was accepted,
        and how many joined the queue."""
        inbox = self.inbox
        ledger = self.ledger
        # One loop with the state in locals, not a call per trace: this is most of what a
        # captured trace costs once the handler has built it.
        estimate = self.estimate
        queue = ledger.queue
        dropped = ledger.dropped
        room = self.max_items - len(queue)
        held = ledger.held_bytes
        seq = start = ledger.seq
        max_bytes = self.max_bytes
        fixed = self.fixed_estimate
        per_step = self.step_estimate
        taken = 0
        accepted = True
        while inbox:
            task = inbox.popleft()
            taken += 1
            try:
                if isinstance(task, PendingTrace):  # nearly every trace that comes this way
                    size = task.estimate(fixed, per_step)
                else:
                    size = estimate(task)
            except Exception:  # a trace of the application's own whose estimate fails
                size = -1
            if size < 0:
                dropped["invalid"] += 1
                accepted = False
            elif closed:
                dropped["closed"] += 1
                accepted = False
            elif room <= 0 or held + size > max_bytes:
                dropped["queue_full"] += 1
                accepted = False
            else:
                queue.append(Item(task, seq, size))
                seq += 1
                held += size
                room -= 1
                accepted = True
        ledger.submitted += taken
        ledger.held_bytes = held
        ledger.seq = seq
        return accepted, seq - start

    def full_locked(self, size: int) -> bool:
        """Whether a trace of ``size`` bytes finds the buffer full (lock held)."""
        ledger = self.ledger
        return len(ledger.queue) >= self.max_items or ledger.held_bytes + size > self.max_bytes

    def room_locked(self, most: int) -> tuple[int, int]:
        """Traces (at most ``most``, at least one) and bytes (at least one) the buffer has
        room for (lock held)."""
        ledger = self.ledger
        room = max(1, min(most, self.max_items - len(ledger.queue)))
        return room, max(1, self.max_bytes - ledger.held_bytes)

    def estimate(self, task: object) -> int:
        """A cheap guess of the memory a queued trace holds (a few attribute reads), or -1 if
        it is not a trace (never raises).

        Summaries count once (a character is a byte in memory as on the wire, for the
        usual ASCII); each step counts what a step of the traces encoded so far takes on
        the wire, times :data:`_MEMORY_PER_WIRE_BYTE`: dicts, structs and small objects
        take about twice the room of their JSON.
        """
        fixed = self.fixed_estimate
        per_step = self.step_estimate
        try:
            if type(task) is dict:
                return fields_estimate(task, fixed, per_step)
            if isinstance(task, PendingTrace):
                return task.estimate(fixed, per_step)
            if isinstance(task, TaskData):
                return struct_estimate(task, per_step)
            if isinstance(task, Mapping):
                return fields_estimate(task, fixed, per_step)
        except Exception:  # a mapping whose get() fails, say: not a trace
            return -1
        return -1

    def learn(self, task: TaskData, size: int) -> None:
        """Learn from a trace just encoded (``size`` bytes) what a step weighs, and what the
        part of a trace that is not counted field by field weighs."""
        summaries = len(task.input_summary or "") + len(task.output_summary or "")
        rest = BASE_ESTIMATE + len(task.name) + len(task.description)
        steps = task.steps
        # Moving averages: unlocked, since a lost update only makes one estimate a bit off.
        if steps:
            per_step = (size - rest - summaries) / len(steps)
            per_step = min(max(per_step, 32.0), float(MAX_BODY_BYTES))
            self._step_bytes = step_bytes = 0.9 * self._step_bytes + 0.1 * per_step
            self.step_estimate = int(step_bytes * _MEMORY_PER_WIRE_BYTE)
        else:
            rest = max(rest, size - summaries)
        self.fixed_estimate = int(0.9 * self.fixed_estimate + 0.1 * min(rest, MAX_BODY_BYTES))


def as_trace(task: Any) -> Any:
    """``task``, or the fields of the official client's TaskData (a dataclass) as a dict,
    read as a dict of TaskData fields is (its nested dataclasses included)."""
    if type(task) is dict or isinstance(task, (TaskData, Mapping)):
        return task
    if dataclasses.is_dataclass(task) and not isinstance(task, type):
        return _object_fields(task)
    return task
