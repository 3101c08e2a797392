"""The workers: sender threads started lazily, their one run loop, pacing, the drain at shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sized
from typing import Final, Generic, TypeVar

from .guard import EXPORTING
from .queued import Item

__all__ = ["Pacing", "Workers"]

_log = logging.getLogger("infinium_logging.exporter")

_W = TypeVar("_W")

#: A sender starts on a trace while another is still starting (taken, not yet through its
#: first request) only once that one has been at it this long: see Pacing.
_OVERLAP_AFTER: Final = 0.002


class Workers(Generic[_W]):
    """``count`` daemon threads that each run ``take() -> work | None`` then ``process(work)``
    until ``take`` says there is no more; they know nothing of what the work is.

    Started on first need (not at construction: a thread started before a server forks its
    workers would be lost in them); ``run_here`` runs the same loop on the caller's thread,
    for when no thread runs at shutdown (none can start once the interpreter is exiting,
    Python 3.12+).  ``lock`` guards ``started`` and ``alive``; ``exited`` is called with it
    held whenever a thread ends.
    """

    def __init__(
        self,
        count: int,
        lock: threading.RLock,
        take: Callable[[], _W | None],
        process: Callable[[_W], None],
        exited: Callable[[], None],
        *,
        name: str = "infinium-exporter",
    ) -> None:
        self._count = count
        self._name = name
        self._lock = lock
        self._take = take
        self._process = process
        self._exited = exited
        self._start_lock = threading.RLock()
        self._threads: list[threading.Thread] = []
        #: Whether the threads were started (read without the lock on the submit path).
        self.started = False
        #: Threads running.
        self.alive = 0

    def start(self, refuse: Callable[[], bool]) -> bool:
        """Start the threads unless they run or ``refuse()`` (checked under the start lock);
        whether this call started them."""
        with self._start_lock:
            if self.started or refuse():
                return False
            threads = []
            for number in range(1, self._count + 1):
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}-{number}", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError:  # e.g. "can't create new thread at interpreter shutdown"
                    break
                threads.append(thread)
            if not threads:
                return False
            self._threads = threads
            with self._lock:
                self.started = True
                self.alive += len(threads)
            return True

    def run_here(self) -> None:
        """The run loop: take work and process it until there is none to take."""
        take = self._take
        process = self._process
        while (work := take()) is not None:
            process(work)

    def join(self, grace: float) -> None:
        """Wait up to ``grace`` seconds in all for the threads to end (they are daemons)."""
        join_by = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, join_by - time.monotonic()))

    def _run(self) -> None:
        EXPORTING.set(True)  # for the whole of this thread
        try:
            self.run_here()
        finally:
            with self._lock:
                self.alive -= 1
                self._exited()


class Pacing:
    """Senders take turns starting traces: one is started while another is still being
    started (taken, not yet through its first request) only once that one has been at it
    for ``_OVERLAP_AFTER``.

    Against a fast server the requests are short and mostly Python (urllib3 and
    http.client), so senders running them side by side only fight over the GIL (each GIL
    hand-off a context switch): one at a time delivers more.  Against a slow one they
    wait on the network, so every worker is soon busy, as without pacing.  Every method
    wants the lock of ``work`` held.
    """

    def __init__(self, work: threading.Condition, queue: Sized) -> None:
        self._work = work
        self._queue = queue
        #: Traces being started, when the last was taken, senders waiting for their turn.
        self._starting = 0
        self._last_start = 0.0
        self._waiting = 0

    def wait(self, now: float) -> bool:
        """Wait for this sender's turn if another trace is still being started; whether it
        waited (the queue may have changed meanwhile)."""
        since = now - self._last_start
        if not self._starting or since >= _OVERLAP_AFTER:
            return False
        self._waiting += 1
        try:
            self._work.wait(_OVERLAP_AFTER - since)
        finally:
            self._waiting -= 1
        return True

    def started(self, item: Item, now: float) -> None:
        """A sender took ``item`` at ``now``."""
        item.starting = True
        self._starting += 1
        self._last_start = now

    def through(self, item: Item, *, waking: bool) -> None:
        """``item`` is through its first request (or settled without one): another trace may
        be started.  ``waking`` when this sender will not take one itself soon."""
        if item.starting:
            item.starting = False
            self._starting -= 1
            if waking and self._waiting and self._queue:
                self._work.notify()
