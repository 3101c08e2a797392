"""What a sender does with a batch: one request per destination, each record's result applied.

Used when the destinations take many records per request, or are several: every trace
of the batch is built once (:meth:`Sender.prepare <infinium_logging.sending.Sender.prepare>`),
each destination makes its record of it, the records go in requests within the
destination's limits through its :class:`~infinium_logging.delivery.Delivery`, and the
answer is read record by record.  A trace is settled once, when every destination has
stored or refused its record: sent, unless the first destination refused it for good
(then dropped as ``rejected``).  Records refused for now are sent again by the same
sender after the retry policy's backoff, each trace counting its own retries.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator, Sequence

from .delivery import Delivery, Outcome
from .destination import Destination, DestinationStats
from .errors import InfiniumError, ValidationError
from .ledger import Ledger
from .model import ApiResponse
from .queued import Item
from .sending import Sender

__all__ = ["BatchSender", "Tally"]


class Tally:
    """One destination's counts (under the exporter's lock)."""

    __slots__ = ("bytes_sent", "last_error", "name", "rejected", "retries", "sent")

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0
        self.retries = 0
        self.bytes_sent = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None

    def snapshot(self) -> DestinationStats:
        """The counts as :class:`DestinationStats`."""
        return DestinationStats(
            name=self.name,
            sent=self.sent,
            retries=self.retries,
            bytes_sent=self.bytes_sent,
            rejected=dict(self.rejected),
            last_error=self.last_error,
        )


class BatchSender:
    """Processes one batch of queued traces on a sender thread (see the module)."""

    def __init__(self, sender: Sender, deliveries: Sequence[Delivery], ledger: Ledger) -> None:
        self._sender = sender
        self._deliveries = list(deliveries)
        self._ledger = ledger
        self._lock = ledger.lock
        self._deadline = deliveries[0].deadline
        self._policy = deliveries[0].policy
        self.tallies = {d.destination.name: Tally(d.destination.name) for d in deliveries}

    def stats_locked(self) -> dict[str, DestinationStats]:
        """Each destination's counts, by name (lock held)."""
        return {name: tally.snapshot() for name, tally in self.tallies.items()}

    def process(self, batch: list[Item]) -> None:
        """Deliver ``batch``; a bug costs its traces (counted invalid), not the sender."""
        sender = self._sender
        try:
            self._process(batch)
        except Exception as exc:
            for item in batch:
                sender.settle(item, "invalid", f"internal error: {exc!r}")
            sender.log_internal_error()
        sender.warn_drops()

    def _process(self, batch: list[Item]) -> None:
        pending = [item for item in batch if self._records(item)]
        started = time.monotonic()
        #: The first destination's answer for each trace it stored (on_result is told it).
        answers: dict[Item, ApiResponse] = {}
        while pending:
            for delivery in self._deliveries:
                for chunk in _chunks(pending, delivery.destination):
                    self._send(delivery, chunk, answers)
            for item in pending:
                if not item.settled and not item.records:
                    self._stored(item, answers.pop(item, None))
            pending = [item for item in pending if not item.settled]
            if pending and not self._again(pending, started):
                return

    def _records(self, item: Item) -> bool:
        """Make ``item``'s record for each destination; False when it is settled instead."""
        sender = self._sender
        prepared = sender.prepare(item)
        if prepared is None:
            return False
        trace, body = prepared
        if not sender.sampled(body):
            sender.sampled_away(item)
            return False
        records: dict[str, bytes] = {}
        for delivery in self._deliveries:
            destination = delivery.destination
            try:
                records[destination.name] = destination.record(body, trace)
            except ValidationError as exc:  # no record there (a trace without steps, say)
                if not records:  # the first destination, whose answer settles the trace
                    sender.settle(item, "invalid", f"could not be encoded: {exc}")
                    return False
                continue
            except Exception as exc:
                sender.settle(item, "invalid", f"could not be encoded: {exc}")
                return False
        item.records = records
        return True

    def _send(
        self, delivery: Delivery, chunk: list[Item], answers: dict[Item, ApiResponse]
    ) -> None:
        """One request of ``chunk``'s records to ``delivery``'s destination; apply its answer."""
        sender = self._sender
        destination = delivery.destination
        name = destination.name
        tally = self.tallies[name]
        request = destination.frame([item.records[name] for item in chunk])  # type: ignore[index]

        def given_up() -> bool:
            return all(item.settled for item in chunk)

        def on_retry(error: InfiniumError) -> bool:
            text = sender.describe(error)
            with self._lock:
                if given_up():
                    return False
                self._ledger.retries += 1
                self._ledger.last_error = tally.last_error = text
                tally.retries += 1
                return True

        first = delivery is self._deliveries[0]
        outcome = delivery.deliver(
            request, given_up=given_up, on_retry=on_retry, not_before=sender.credentials_at
        )
        if outcome.reason == "sent" and outcome.response is not None:
            results = destination.results(outcome.response, len(chunk))
            with self._lock:
                for item, result in zip(chunk, results, strict=True):
                    self._apply(item, name, tally, result.verdict, result.reason or result.detail)
                    if result.verdict == "sent" and first:
                        answers[item] = result.response or outcome.response
                    if result.detail and result.verdict != "sent":
                        tally.last_error = self._ledger.last_error = (
                            f"{name} refused a record: {result.detail}"
                        )
            return
        self._failed(chunk, outcome, name, tally)

    def _apply(self, item: Item, name: str, tally: Tally, verdict: str, reason: str) -> None:
        """What an answer said of ``item``'s record at destination ``name`` (lock held)."""
        records = item.records
        assert records is not None
        if verdict == "retry":
            return
        data = records.pop(name)
        if verdict == "sent":
            tally.sent += 1
            tally.bytes_sent += len(data)
            return
        tally.rejected[reason or "rejected"] += 1
        if name == self._deliveries[0].destination.name and not item.refused:
            item.refused = reason or "rejected"

    def _failed(self, chunk: list[Item], outcome: Outcome, name: str, tally: Tally) -> None:
        """A request of ``chunk`` failed as a whole: every trace in it ends as it says."""
        error = outcome.error
        if error is not None:
            text = self._sender.describe(error)
            with self._lock:
                tally.last_error = text
        if outcome.reason == "rejected" and error is not None:
            # Refused for good: these records, not their traces' other records.
            with self._lock:
                for item in chunk:
                    self._apply(item, name, tally, "reject", f"http_{error.status_code}")
            return
        for item in chunk:
            self._sender.finish(item, outcome, 0)

    def _stored(self, item: Item, answer: ApiResponse | None) -> None:
        """Every destination stored or refused ``item``'s records: settle it."""
        if item.refused or answer is None:
            name = self._deliveries[0].destination.name
            self._sender.settle(item, "rejected", f"{name} refused it: {item.refused}")
        else:
            self._sender.delivered(item, answer, item.size)

    def _again(self, pending: list[Item], started: float) -> bool:
        """Records refused for now: wait the policy's backoff before sending them again;
        False when none will be (each trace settled as its retries say)."""
        delay = 0.0
        retry: list[Item] = []
        for item in pending:
            decision = self._policy.decide(item.retries, time.monotonic() - started)
            if decision.retry:
                item.retries += 1
                delay = max(delay, decision.delay)
                retry.append(item)
            else:
                self._sender.settle(item, decision.reason, self._ledger.last_error)
        pending[:] = retry
        if not retry:
            return False
        names = {name for item in retry for name in item.records or ()}
        with self._lock:
            self._ledger.retries += 1
            for name in names:
                self.tallies[name].retries += 1
        if not self._deadline.sleep_until(time.monotonic() + delay):
            for item in retry:
                self._sender.settle(item, "shutdown", "the shutdown deadline came first")
            return False
        return True


def _chunks(items: list[Item], destination: Destination) -> Iterator[list[Item]]:
    """The traces whose record for ``destination`` is still to be stored, in requests within
    its limits."""
    limits = destination.limits
    name = destination.name
    chunk: list[Item] = []
    size = 0
    for item in items:
        data = item.records.get(name) if item.records is not None else None
        if data is None or item.settled:
            continue
        if chunk and (size + len(data) > limits.max_bytes or len(chunk) >= limits.max_records):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(data)
    if chunk:
        yield chunk
