"""The end of an exporter: waiting for the senders until the deadline, the tally of what is
left, the exit spill, and the last warnings and reports."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from . import spill
from .destination import Destination
from .dispatch import Dispatch
from .durability import quietly
from .guard import EXPORTING
from .ledger import warn_dropped
from .queued import Item
from .sending import Sender
from .throttle import TokenBucket
from .workers import Workers

__all__ = ["Closing", "ShutsDown"]

_log = logging.getLogger("infinium_logging.exporter")

#: Time allowed past a shutdown deadline for reporting its losses to ``on_result``.
_REPORT_GRACE: Final = 0.25
#: How long shutdown waits for idle sender threads to end (they are daemons: only tidiness).
_JOIN_GRACE: Final = 0.1


class Closing:
    """Finishes a shutdown whose deadline (``dispatch.until.at``) is set and whose door is
    closed: the parts of the exporter below it are read here and told the end."""

    def __init__(
        self,
        dispatch: Dispatch,
        sender: Sender,
        workers: Workers[Any],
        bucket: TokenBucket,
        destinations: Sequence[Destination],
        *,
        then: Sequence[Callable[[], bool]] = (),
        keeps: bool = False,
    ) -> None:
        self._settings = sender.settings
        self._ledger = dispatch.ledger
        self._queue = dispatch.ledger.queue
        self._inbox = dispatch.admission.inbox
        self._admit_locked = dispatch.admit_locked
        self._work = dispatch.work
        self._pacing = dispatch.pacing
        self._until = dispatch.until
        self._durable = dispatch.durable
        self._sender = sender
        self._reporter = sender.reporter
        self._destinations = destinations
        self._workers = workers
        self._bucket = bucket
        #: The exporter's other lanes' own endings: after this lane's senders (which hand them
        #: traces) and before the spool (which they settle records in) is closed.
        self._then = then
        #: Whether what is left here stays in a spool the dispatch does not own (a lane's share
        #: of the exporter's spool records: sent to that lane at the next start).
        self._keeps = keeps

    def finish(self) -> bool:
        """Wait, tally, report; True when nothing was lost to the deadline."""
        token = EXPORTING.set(True)
        try:
            if not self._workers.alive and (self._queue or self._inbox):
                # No sender runs (none could start at exit, or none was needed): send what
                # waits from this thread, as a sender would, until the deadline.
                self._workers.run_here()
            return self._finish()
        finally:
            EXPORTING.reset(token)

    def _finish(self) -> bool:
        deadline = self._until.at if self._until.at is not None else time.monotonic()
        durable = self._durable
        spool = durable.spool if durable is not None else None
        ledger = self._ledger
        with ledger.lock:
            self._admit_locked()  # added while the door closed: counted as closed
            self._wait_for_senders(deadline)
        others_whole = True
        if self._then:
            # The lanes deliver what they were handed until the same deadline (the first
            # settles each trace here as it goes), each to its end: a list, not all().
            ends = [finish() for finish in self._then]
            others_whole = all(ends)
        with ledger.lock:
            if durable is not None:
                durable.final = True
            stuck = bool(ledger.in_flight)
            for item in ledger.in_flight:
                self._pacing.through(item, waking=False)
            lost, kept = ledger.tally_left_locked(spool is not None or self._keeps)
            self._work.notify_all()
        gone = durable.left(kept) if durable is not None else []
        lost = self._spill_lost(lost)
        with ledger.lock:
            news = self._sender.warner.news(ledger.dropped, force=True)
            spooled = ledger.spooled
        self._until.finished.set()
        self._bucket.wake()
        self._reporter.report_lost(lost + gone, deadline + _REPORT_GRACE)
        if not stuck:
            # Idle senders exit at once; a sender stuck in a request is a daemon thread
            # and is left behind (its late answer is ignored: the trace is settled).
            self._workers.join(_JOIN_GRACE)
        for destination in self._destinations:
            destination.close()
        if spool is not None:
            # Unlocks the segments: the next start (or another process) adopts what is left.
            quietly(spool.close)
        if news:
            warn_dropped(news, ledger.last_error, self._sender.lane)
        spill.close(self._settings)
        if spooled and spool is not None:
            _log.info(
                "infinium_logging left %d trace(s) in the spool (%s) for the next start",
                spooled,
                spool.root,
            )
        return ledger.dropped["shutdown"] == 0 and others_whole

    def _spill_lost(self, lost: list[Item]) -> list[Item]:
        """At exit, keep on disk what shutdown counted as lost (see :mod:`.spill`); what could
        not be kept."""
        left = spill.keep(self._settings, lost, self._sender.spill_record)
        self._ledger.spilled(len(lost) - len(left))
        return left

    def _unhanded(self, in_flight: set[Item]) -> bool:
        """Whether a trace in flight is this lane's to settle: with lanes after it, only one
        a sender has not handed on yet, or is handing on now (the lanes settle the others
        before the tally)."""
        if not self._then:
            return bool(in_flight)
        return any(not item.handed or item.starting for item in in_flight)

    def _wait_for_senders(self, deadline: float) -> None:
        """Wait (lock held) until nothing is queued or in flight, or the deadline."""
        ledger = self._ledger
        durable = self._durable
        backlog = durable.backlog if durable is not None else None
        ledger.waiters += 1
        try:
            while True:
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    break
                if (
                    ledger.queue
                    or self._unhanded(ledger.in_flight)
                    or (backlog is not None and backlog.refilling)
                ):
                    wait = remaining  # every settle and refill notifies
                elif (
                    backlog is not None
                    and durable is not None
                    and self._workers.alive
                    and durable.due_by(deadline)
                ):
                    # Spooled records a sender may still take up before the deadline.
                    wait = min(remaining, max(0.01, backlog.at - now))
                else:
                    break
                ledger.settled_cond.wait(wait)
        finally:
            ledger.waiters -= 1


_S = TypeVar("_S", bound="ShutsDown")


class ShutsDown:
    """``close()``, ``with`` and ``async with`` for what ends by ``shutdown()``."""

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop, delivering what can be delivered within ``timeout`` seconds."""
        raise NotImplementedError

    def close(self) -> None:
        """Same as :meth:`shutdown` with the default timeout."""
        self.shutdown()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # shutdown() waits on threads: do it off the event loop.
        await asyncio.to_thread(self.shutdown)
