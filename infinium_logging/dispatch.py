"""Dispatch: handing admitted traces to idle sender threads, pacing them, spool chores."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .admission import Admission
from .delivery import Deadline
from .queued import Item
from .workers import Pacing
from .writeahead import WriteAhead

__all__ = ["Dispatch"]


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
        durable = self.durable
        pacing = self.pacing
        while True:
            with self.ledger.lock:
                while True:
                    self.admit_locked()
                    now = time.monotonic()
                    chore = durable.chore(now, self.until.at) if durable is not None else ""
                    if chore:
                        break
                    if self._queue:
                        # Not paced after close: the shutdown deadline wants everything out.
                        if not self.closed() and pacing.wait(now):
                            self.waking = False  # whoever was woken is running
                            continue
                        item = self._queue.popleft()
                        self.ledger.in_flight.add(item)
                        pacing.started(item, now)
                        return item
                    if self.closed() and not (
                        durable is not None and durable.due_by(self.until.at or now)
                    ):
                        return None
                    self.idle += 1
                    try:
                        # A caller that saw no sender idle left its trace in the inbox for
                        # us: look once more now that we count as idle (callers check after
                        # adding to it), so that no trace waits there with every sender asleep.
                        if self._inbox:
                            continue
                        self.work.wait(durable.idle_wait(now) if durable is not None else None)
                    finally:
                        self.idle -= 1
                        self.waking = False
            assert durable is not None
            durable.do_chore(chore)
