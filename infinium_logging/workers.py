"""The workers: sender threads started lazily, their one run loop, and the drain at shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .guard import EXPORTING

__all__ = ["Workers"]

_log = logging.getLogger("infinium_logging.exporter")

_W = TypeVar("_W")


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
    ) -> None:
        self._count = count
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
                    target=self._run, name=f"infinium-exporter-{number}", daemon=True
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
