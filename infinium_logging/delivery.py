"""Delivery: one ``deliver(body) -> Outcome`` with throttle, timeout, retries and the 429 rule.

Background sending, :meth:`Exporter.send <infinium_logging.exporter.Exporter.send>`
and spool replay all deliver through :meth:`Delivery.deliver`; the other API
calls (prompts, interpreted results) go through :meth:`Delivery.call`, the same
loop.  Whatever is specific to the endpoint is the
:class:`~infinium_logging.destination.Destination`'s.

The 429 rule: a 429 pauses the whole token bucket (every sender, every
synchronous call) for as long as this request waits before its retry: the
server's ``Retry-After`` (bounded by ``retry_backoff_max``) when it sent one,
else the jittered backoff; when the 429 ends the retries, for its Retry-After
alone.  A 429 says the client as a whole is too fast, whichever call met it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from .destination import Destination
from .errors import InfiniumError
from .model import ApiResponse
from .retry import RetryPolicy, classify, retry_after_of
from .throttle import TokenBucket

__all__ = ["Deadline", "Delivery", "Outcome"]

#: No request starts closer than this to the shutdown deadline: it could hardly be answered in
#: time, yet the server might store it after the exporter gave up, and the trace (kept in the
#: spool) would then arrive twice.
LAST_REQUEST_WINDOW: Final = 0.05


class Deadline:
    """The shutdown deadline of one exporter, which every wait and request respects."""

    __slots__ = ("at", "finished", "stopping")

    def __init__(self) -> None:
        #: When shutdown must be over (monotonic), None before shutdown starts.
        self.at: float | None = None
        #: Set when shutdown starts: wakes every sleeper.
        self.stopping = threading.Event()
        #: Set when shutdown is over.
        self.finished = threading.Event()

    def get(self) -> float | None:
        """The deadline (the token bucket asks after every wake-up)."""
        return self.at

    def request_timeout(self, timeout: float) -> float | None:
        """The timeout of a request starting now: None before shutdown, <= 0 when too late."""
        deadline = self.at
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining < min(LAST_REQUEST_WINDOW, timeout):
            return 0.0
        return min(timeout, remaining)

    def sleep_until(self, until: float, given_up: Callable[[], bool] | None = None) -> bool:
        """Sleep until ``until``; False (at once) when the deadline would come first, or
        when ``given_up()`` says the work is settled elsewhere."""
        while True:
            if given_up is not None and given_up():
                return False
            now = time.monotonic()
            if now >= until:
                return True
            deadline = self.at
            if deadline is not None and until > deadline:
                return False
            event = self.stopping if deadline is None else self.finished
            if event.is_set() and deadline is not None:
                return False
            event.wait(until - now)


class Outcome:
    """How a delivery ended: ``reason`` is ``"sent"`` or why not (a drop reason: ``auth``,
    ``rejected``, ``retries_exhausted``, ``max_elapsed``, ``shutdown``), or ``"abandoned"``
    when the work was settled elsewhere meanwhile (at the shutdown deadline)."""

    __slots__ = ("error", "reason", "response")

    def __init__(
        self,
        reason: str,
        response: ApiResponse | None = None,
        error: InfiniumError | None = None,
    ) -> None:
        self.reason = reason
        #: The answer, when sent.
        self.response = response
        #: The last failure, when there was one.
        self.error = error

    def __repr__(self) -> str:
        return f"Outcome({self.reason!r})"

    def raise_unless_sent(self) -> ApiResponse:
        """The answer, or the failure raised (for synchronous callers)."""
        if self.response is not None and self.reason == "sent":
            return self.response
        if self.error is not None:
            raise self.error
        raise InfiniumError("the exporter is shutting down")


#: What a retry is told: the failure that will be retried.  False means give up (the work
#: was settled elsewhere meanwhile).
OnRetry = Callable[[InfiniumError], bool]


class Delivery:
    """Attempts at one destination through one token bucket, under one shutdown deadline."""

    def __init__(
        self,
        destination: Destination,
        policy: RetryPolicy,
        bucket: TokenBucket,
        deadline: Deadline,
        timeout: float,
    ) -> None:
        self.destination = destination
        self.policy = policy
        self.bucket = bucket
        self.deadline = deadline
        self._timeout = timeout

    def deliver(
        self,
        body: bytes,
        *,
        given_up: Callable[[], bool] | None = None,
        on_retry: OnRetry | None = None,
        not_before: Callable[[], float] | None = None,
    ) -> Outcome:
        """Send ``body`` to the destination, retrying as the policy says, never past the
        shutdown deadline.

        ``given_up()`` is asked after anything that blocks (True: the work was settled
        elsewhere, stop); ``on_retry(error)`` is told of every retry before its wait;
        ``not_before()`` is when the next attempt may start at the earliest (the pause
        after refused credentials).
        """
        post = self.destination.post
        return self.call(lambda timeout: post(body, timeout), given_up, on_retry, not_before)

    def call(
        self,
        request: Callable[[float | None], ApiResponse],
        given_up: Callable[[], bool] | None = None,
        on_retry: OnRetry | None = None,
        not_before: Callable[[], float] | None = None,
    ) -> Outcome:
        """Make ``request(timeout)`` with the throttle, timeout and retry policy (as
        :meth:`deliver`)."""
        deadline = self.deadline
        policy = self.policy
        started = time.monotonic()
        retries = 0
        last_error: InfiniumError | None = None
        while True:
            if not_before is not None:
                until = not_before()
                if until > time.monotonic() and not deadline.sleep_until(until, given_up):
                    return Outcome("shutdown")
            if not self.bucket.acquire(deadline.get):
                return Outcome("shutdown")
            timeout = deadline.request_timeout(self._timeout)
            if given_up is not None and given_up():
                return Outcome("abandoned")
            if timeout is not None and timeout <= 0:
                return Outcome("shutdown")
            # The last attempt ends by max_elapsed too (the transport's timeout is a deadline).
            left = started + policy.max_elapsed - time.monotonic()
            if left <= 0 and retries:
                return Outcome("max_elapsed", error=last_error)
            if 0 < left < (self._timeout if timeout is None else timeout):
                timeout = left
            try:
                response = request(timeout)
            except InfiniumError as error:
                if given_up is not None and given_up():  # settled while the request was out
                    return Outcome("abandoned")
                verdict = classify(error)
                if verdict != "retry":
                    return Outcome("auth" if verdict == "auth" else "rejected", error=error)
                retry_after = retry_after_of(error)
                decision = policy.decide(retries, time.monotonic() - started, retry_after)
                if error.status_code == 429:
                    pause = decision.delay if decision.retry else 0.0
                    if retry_after is not None:
                        pause = max(pause, policy.bound_retry_after(retry_after))
                    self.bucket.pause(pause)
                if not decision.retry:
                    return Outcome(decision.reason, error=error)
                retries += 1
                last_error = error
                if on_retry is not None and not on_retry(error):
                    return Outcome("abandoned")
                if not deadline.sleep_until(time.monotonic() + decision.delay, given_up):
                    return Outcome("shutdown", error=error)
                continue
            return Outcome("sent", response)
