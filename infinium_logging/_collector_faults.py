"""Faults the local collector injects into trace POSTs: queued ones, then a seeded random mix."""

from __future__ import annotations

import collections
import dataclasses
import random
import threading

__all__ = ["Chaos", "Fault", "FaultPlan", "status_fault"]


@dataclasses.dataclass(frozen=True)
class Fault:
    """What to do to one trace POST instead of (or after) handling it normally."""

    kind: str  # "status", "drop", "drop_after_accept" or "hang"
    status: int = 0
    retry_after: str | None = None


@dataclasses.dataclass(frozen=True)
class Chaos:
    rng: random.Random
    # Upper bounds of each fault on [0, 1): a draw below ``p503`` is a 503, and so on.
    limits: tuple[tuple[float, Fault], ...]


class FaultPlan:
    """Faults queued for the next trace POSTs, in order, then a seeded random mix; all counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[Fault] = collections.deque()
        self._chaos: Chaos | None = None
        self._counts: collections.Counter[str] = collections.Counter()
        self.latency = 0.0

    def queue(self, fault: Fault, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        with self._lock:
            self._queue.extend([fault] * n)

    def set_chaos(self, chaos: Chaos | None) -> None:
        with self._lock:
            self._chaos = chaos

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._chaos = None
            self.latency = 0.0

    def take(self) -> Fault | None:
        """The fault for the trace POST that just arrived, if any."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self._chaos is None:
                return None
            draw = self._chaos.rng.random()
            return next((fault for limit, fault in self._chaos.limits if draw < limit), None)

    def count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _retry_after_text(value: float | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or value < 0:
        raise ValueError(f"retry_after must be a non-negative number of seconds, got {value!r}")
    # A whole number is written as HTTP's delay-seconds; a fraction is kept so that tests of
    # clients that honour Retry-After need not wait whole seconds.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def status_fault(status: int, retry_after: float | str | None) -> Fault:
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status (400-599), got {status!r}")
    return Fault("status", status, _retry_after_text(retry_after))
