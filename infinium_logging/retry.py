"""The retry policy: which failures are retried and how long to wait (full jitter, Retry-After)."""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import math
import random
import time
from typing import Final, Literal

from .errors import AuthenticationError, InfiniumError, NetworkError, RateLimitError
from .settings import Settings

__all__ = [
    "AUTH_STATUSES",
    "RETRYABLE_STATUSES",
    "Decision",
    "RetryPolicy",
    "Verdict",
    "classify",
    "parse_retry_after",
    "retry_after_of",
]

#: Statuses worth another try: the server may answer differently in a moment.
RETRYABLE_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses that mean the credentials were refused.
AUTH_STATUSES: Final = frozenset({401, 403})

#: What to do about a failed request.
Verdict = Literal["retry", "auth", "reject"]


def classify(error: InfiniumError) -> Verdict:
    """Say whether a failed request is retried, is a credentials problem, or is final.

    Connection errors and timeouts (:class:`~infinium_logging.errors.NetworkError`)
    and the statuses in :data:`RETRYABLE_STATUSES` are retried; 401 and 403 are
    ``"auth"``; every other answer (400, 404, 413, 422, a redirect...) is
    ``"reject"``: sending the same body again would get the same answer.
    """
    if isinstance(error, NetworkError):
        return "retry"
    status = error.status_code
    if isinstance(error, AuthenticationError) or status in AUTH_STATUSES:
        return "auth"
    if status in RETRYABLE_STATUSES:
        return "retry"
    return "reject"


def retry_after_of(error: InfiniumError) -> float | None:
    """The server's ``Retry-After`` carried by an error, in seconds, if it sent one."""
    if isinstance(error, RateLimitError) and error.retry_after is not None:
        return error.retry_after
    value = error.details.get("retry_after")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delay-seconds or an HTTP date; seconds from now, >= 0.

    ``now`` is the current POSIX time (for HTTP dates); a missing or
    unreadable value gives None.  The result is not bounded here: the policy
    bounds it (see :meth:`RetryPolicy.decide`).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(seconds):
            return None
        return min(max(0.0, seconds), 1e9)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses as naive
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, moment.timestamp() - current)


@dataclasses.dataclass(frozen=True)
class Decision:
    """The policy's answer after a retryable failure: wait ``delay`` and retry, or give up."""

    retry: bool
    delay: float = 0.0
    #: Why it gave up: ``"retries_exhausted"`` or ``"max_elapsed"`` (empty when retrying).
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by a retry count and a time budget.

    The n-th retry (n = 0, 1, ...) waits a uniform random time in
    ``[0, min(backoff_max, backoff_base * 2**n)]`` ("full jitter": clients that
    failed together do not retry together).  A ``Retry-After`` from the server
    is the minimum wait, cut to ``backoff_max`` so that a server cannot park a
    sender for hours.  A trace gets at most ``max_retries`` retries, and no
    retry starts later than ``max_elapsed`` seconds after its first attempt.
    """

    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_elapsed: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy the settings describe."""
        return cls(
            max_retries=settings.max_retries,
            backoff_base=settings.retry_backoff_base,
            backoff_max=settings.retry_backoff_max,
            max_elapsed=settings.max_elapsed,
        )

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The jittered wait before retry number ``retry_number`` (counting from 0)."""
        # Capping the exponent keeps 2**n a finite float whatever max_retries is.
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** min(retry_number, 64))
        return (rng or _RNG).uniform(0.0, ceiling)

    def bound_retry_after(self, retry_after: float) -> float:
        """A server's ``Retry-After`` as this policy honours it: at most ``backoff_max``."""
        return min(max(0.0, retry_after), self.backoff_max)

    def decide(
        self,
        retries_done: int,
        elapsed: float,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> Decision:
        """After a retryable failure: how long to wait before the next try, or give up.

        ``retries_done`` is how many retries this trace already had, ``elapsed``
        the seconds since its first attempt started.
        """
        if retries_done >= self.max_retries:
            return Decision(False, reason="retries_exhausted")
        delay = self.backoff(retries_done, rng)
        if retry_after is not None:
            delay = max(delay, self.bound_retry_after(retry_after))
        if elapsed + delay > self.max_elapsed:
            return Decision(False, reason="max_elapsed")
        return Decision(True, delay=delay)


# One shared generator: the jitter needs no security, only independence between threads' draws.
_RNG: Final = random.Random()
