"""The client-side request throttle: an exact token bucket shared by every sender thread."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["TokenBucket"]

#: A clock returning seconds; only differences between two readings matter.
Clock = Callable[[], float]
#: Returns the moment (on the bucket's clock) after which waiting is pointless, or None.
DeadlineOf = Callable[[], "float | None"]


def _no_deadline() -> float | None:
    return None


class TokenBucket:
    """A token bucket: ``burst`` tokens of capacity, refilled at ``rate`` tokens per second.

    Each request takes one token.  It is exact: over any window of ``T``
    seconds at most ``burst + rate * T`` requests are let through, because a
    token is only ever taken after it has been accrued (nothing is borrowed
    from the future and nothing accrues above ``burst``).

    With ``enabled=False`` the bucket lets everything through, except while it
    is paused: :meth:`pause` (used when the server answers 429) holds every
    caller, whatever ``enabled`` says, and empties the bucket so that the
    requests after the pause leave at ``rate``, not as a burst.

    Waiting happens on a condition variable, so :meth:`wake` (called at
    shutdown) interrupts every waiter at once; ``clock`` and ``wait`` can be
    replaced to test the timing without sleeping.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        enabled: bool = True,
        clock: Clock = time.monotonic,
        wait: Callable[[threading.Condition, float], object] | None = None,
    ) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._enabled = enabled
        self._clock = clock
        self._wait = wait if wait is not None else _condition_wait
        self._cond = threading.Condition(threading.Lock())
        self._tokens = float(burst)
        self._stamp = clock()
        self._paused_until = -math.inf

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenBucket:
        """The bucket of ``settings``: ``requests_per_second``, ``burst_size`` and
        ``enable_rate_limiting``."""
        return cls(
            settings.requests_per_second,
            settings.burst_size,
            enabled=settings.enable_rate_limiting,
        )

    @property
    def rate(self) -> float:
        """Refill rate, in tokens per second."""
        return self._rate

    @property
    def burst(self) -> int:
        """Capacity of the bucket."""
        return int(self._burst)

    @property
    def enabled(self) -> bool:
        """Whether the rate limit applies (pauses always do)."""
        return self._enabled

    def paused_for(self) -> float:
        """Seconds left of the current pause (0.0 when not paused)."""
        with self._cond:
            return max(0.0, self._paused_until - self._clock())

    def try_acquire(self) -> float:
        """Take a token if one is there: return 0.0; else return the seconds until one will be.

        Never blocks.
        """
        with self._cond:
            return self._take(self._clock())

    def acquire(self, deadline_of: DeadlineOf = _no_deadline) -> bool:
        """Take a token, waiting for it if needed; False when it cannot come in time.

        ``deadline_of()`` is asked again after every wake-up (the deadline can
        appear while waiting, when a shutdown starts): when the next token
        would only come after it, this returns False at once instead of
        waiting in vain.
        """
        with self._cond:
            while True:
                now = self._clock()
                delay = self._take(now)
                if delay <= 0.0:
                    return True
                deadline = deadline_of()
                if deadline is not None and now + delay > deadline:
                    return False
                self._wait(self._cond, delay)

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (a 429's ``Retry-After``), then resume at ``rate``.

        A shorter pause never cuts a longer one short.
        """
        if not seconds > 0:
            return
        with self._cond:
            until = self._clock() + seconds
            if until > self._paused_until:
                self._paused_until = until
                # After the pause the bucket starts empty: the server asked us to slow down,
                # so the first requests afterwards must not leave as a burst.
                self._tokens = 0.0
                self._stamp = until
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake every waiter so that it asks its ``deadline_of`` again (used at shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def _take(self, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        if not self._enabled:
            return 0.0
        if now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        # Rounding can leave a deficit of 1e-13 tokens; waiting at least a microsecond
        # guarantees progress on any clock and only ever errs on the slow side.
        return max((1.0 - self._tokens) / self._rate, 1e-6)


def _condition_wait(cond: threading.Condition, timeout: float) -> object:
    return cond.wait(timeout)
