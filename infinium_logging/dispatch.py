"""Dispatch: handing admitted traces to idle sender threads, one or a batch at a time, pacing
them, spool chores."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .admission import Admission
from .delivery import Deadline
from .destination import BatchLimits
from .queued import Item
from .workers import Pacing
from .writeahead import WriteAhead

__all__ = ["Dispatch"]

_W = TypeVar("_W")


class Dispatch:
    """Between admission and the sender threads: ``take`` is their one source of work.

    Senders wait on ``work`` while nothing is queued (counted in ``idle``, which
    ``submit`` reads to decide whether to admit at once), take traces in order under
    :class:`~infinium_logging.workers.Pacing`, and do the spool's chores (adoption,
    taking the backlog up) on the way.  ``waking``: a sender was woken for admitted
    traces and has not run yet.
    """

    def __init__(
        self,
        admission: Admission,
        durable: WriteAhead | None,
        until: Deadline,
        closed: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admission = admission
        self.ledger = ledger = admission.ledger
        self._inbox = admission.inbox
        self._queue = ledger.queue
        self.durable = durable
        self.until = until
        self.closed = closed
        self.work = threading.Condition(ledger.lock)
        self.pacing = Pacing(self.work, ledger.queue)
        self.idle = 0
        self.waking = False
        #: When the batch being filled was first seen waiting (see take_batch), else None.
        self._filling: float | None = None
        self._clock = clock

    def admit_locked(self) -> bool:
        """Admit the inbox's traces in order (lock held) and wake senders waiting for work;
        whether the last one was accepted."""
        if not self._inbox:
            return True
        accepted, added = self.admission.admit_locked(self.closed())
        if added and self.idle:
            self.work.notify(added)
            self.waking = True
        return accepted

    def wake(self, count: int) -> None:
        """Wake up to ``count`` idle senders (lock held)."""
        if self.idle:
            self.work.notify(count)

    def take(self) -> Item | None:
        """The next trace to send; spool chores (adoption, taking up the backlog) on the way."""
        return self._take(self._one_locked)

    def take_batch(self, limits: BatchLimits) -> list[Item] | None:
        """The next batch for a destination that takes many records per request: up to
        ``limits.max_records`` queued traces, taken once that many wait, or ``limits.max_bytes``
        of them as counted, or ``limits.max_delay`` after the first was seen; a flush or
        shutdown takes what waits at once.  Spool chores on the way, as
        :meth:`take`; None when there is no more."""
        return self._take(functools.partial(self._batch_locked, limits))

    def _take(self, pick: Callable[[float], _W | None]) -> _W | None:
        """What ``pick(now)`` takes from the queue (None: it waited, look again), waiting
        while nothing is queued; the spool's chores on the way; None when there is no more."""
        durable = self.durable
        while True:
            with self.ledger.lock:
                while True:
                    self.admit_locked()
                    now = time.monotonic()
                    chore = durable.chore(now, self.until.at) if durable is not None else ""
                    if chore:
                        break
                    if self._queue:
                        work = pick(now)
                        if work is not None:
                            return work
                    elif not self._idle_locked(now):
                        return None
            assert durable is not None
            durable.do_chore(chore)

    def _one_locked(self, now: float) -> Item | None:
        """The oldest queued trace, taken into flight in its turn (see Pacing)."""
        # Not paced after close: the shutdown deadline wants everything out.
        if not self.closed() and self.pacing.wait(now):
            self.waking = False  # whoever was woken is running
            return None
        item = self._queue.popleft()
        self.ledger.in_flight.add(item)
        self.pacing.started(item, now)
        return item

    def _batch_locked(self, limits: BatchLimits, now: float) -> list[Item] | None:
        """A batch within ``limits`` when one is due, else None once it waited for one."""
        if not self._batch_due_locked(limits):
            return None
        self._filling = None
        return self._pop_batch_locked(limits)

    def _idle_locked(self, now: float) -> bool:
        """Nothing queued: wait for work (lock held); False when there will be none."""
        durable = self.durable
        if self.closed() and not (durable is not None and durable.due_by(self.until.at or now)):
            return False
        self.idle += 1
        try:
            # A caller that saw no sender idle left its trace in the inbox for us: look once
            # more now that we count as idle (callers check after adding to it), so that no
            # trace waits there with every sender asleep.
            if not self._inbox:
                self.work.wait(durable.idle_wait(now) if durable is not None else None)
        finally:
            self.idle -= 1
            self.waking = False
        return True

    def _batch_due_locked(self, limits: BatchLimits) -> bool:
        """Whether the queued traces make a batch now; else wait (lock held) for more, for
        the delay to run out, or for a flush or shutdown, and say False."""
        queue = self._queue
        if (
            len(queue) >= limits.max_records
            or self.closed()
            or self.ledger.flush_targets
            or limits.max_delay <= 0
        ):
            return True
        now = self._clock()
        if self._filling is None:
            self._filling = now
        left = self._filling + limits.max_delay - now
        if left <= 0:
            return True
        held = 0
        for item in queue:
            held += item.size
            if held >= limits.max_bytes:
                return True
        self.idle += 1  # admissions wake it: the batch may be full with the next trace
        try:
            self.work.wait(left)
        finally:
            self.idle -= 1
            self.waking = False
        return False

    def _pop_batch_locked(self, limits: BatchLimits) -> list[Item]:
        """Take the oldest ``limits.max_records`` traces (or fewer) into flight (lock held).

        Not bounded by ``limits.max_bytes`` here: while queued a trace is counted at its
        memory estimate, about twice its record; the sender cuts requests by the records'
        own bytes (see :mod:`~infinium_logging.batching`), and a batch cut by the estimate
        would make requests half full."""
        queue = self._queue
        count = min(len(queue), limits.max_records)
        batch = [queue.popleft() for _ in range(count)]
        self.ledger.in_flight.update(batch)
        return batch
