"""Tests of the retry policy: classification, full-jitter backoff, Retry-After, budgets."""

from __future__ import annotations

import email.utils
import random

import pytest

from infinium_logging.errors import (
    AuthenticationError,
    InfiniumError,
    InfiniumTimeoutError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from infinium_logging.retry import (
    RetryPolicy,
    classify,
    parse_retry_after,
    retry_after_of,
)
from infinium_logging.settings import Settings

AGENT = "4f1c2b9e-8d7a-4e61-9f3b-2a5c6d7e8f90"


def _status(code: int) -> InfiniumError:
    return InfiniumError(f"HTTP {code}", status_code=code)


@pytest.mark.parametrize(
    "error",
    [
        NetworkError("refused"),
        InfiniumTimeoutError("slow"),
        _status(408),
        RateLimitError(retry_after=1.0),
        ServerError(status_code=500),
        ServerError(status_code=502),
        ServerError(status_code=503),
        ServerError(status_code=504),
    ],
)
def test_transient_failures_are_retried(error: InfiniumError) -> None:
    """Connection errors, timeouts, 408, 429, 500, 502, 503 and 504 are retried."""
    assert classify(error) == "retry"


@pytest.mark.parametrize("code", [400, 404, 405, 409, 413, 422, 302, 501, 505])
def test_other_statuses_are_final(code: int) -> None:
    """Every other status is final: the same body would get the same answer."""
    assert classify(_status(code)) == "reject"


def test_refused_credentials_are_their_own_verdict() -> None:
    """401 and 403 are 'auth', whatever the error type carrying them."""
    assert classify(AuthenticationError(status_code=401)) == "auth"
    assert classify(AuthenticationError(status_code=403)) == "auth"
    assert classify(_status(403)) == "auth"
    assert classify(NotFoundError()) == "reject"
    assert classify(ValidationError("bad")) == "reject"


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    """The n-th backoff is uniform in [0, min(max, base*2**n)]: spread out, never above."""
    policy = RetryPolicy(max_retries=10, backoff_base=0.5, backoff_max=4.0)
    rng = random.Random(7)
    for n, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0), (500, 4.0)]:
        draws = [policy.backoff(n, rng) for _ in range(400)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert min(draws) < ceiling * 0.1  # full jitter reaches near zero...
        assert max(draws) > ceiling * 0.9  # ...and near the ceiling


def test_retries_are_counted_and_then_exhausted() -> None:
    """At most max_retries retries; the next failure gives up with 'retries_exhausted'."""
    policy = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.01, max_elapsed=100)
    assert policy.decide(0, 0.0).retry
    assert policy.decide(1, 0.0).retry
    decision = policy.decide(2, 0.0)
    assert (decision.retry, decision.reason) == (False, "retries_exhausted")
    assert not RetryPolicy(max_retries=0).decide(0, 0.0).retry


def test_time_budget_gives_up_with_max_elapsed() -> None:
    """A retry that would start after max_elapsed is not made; the reason says so."""
    policy = RetryPolicy(max_retries=50, backoff_base=1.0, backoff_max=1.0, max_elapsed=10.0)
    decision = policy.decide(3, 10.0, rng=random.Random(1))
    assert (decision.retry, decision.reason) == (False, "max_elapsed")
    assert policy.decide(3, 9.5, retry_after=1.0).reason == "max_elapsed"
    assert policy.decide(3, 8.0, retry_after=1.0).retry


def test_retry_after_is_the_minimum_wait_and_is_bounded() -> None:
    """Retry-After raises the wait to at least its value, but never above backoff_max."""
    policy = RetryPolicy(max_retries=5, backoff_base=0.01, backoff_max=5.0, max_elapsed=1000)
    rng = random.Random(3)
    assert all(policy.decide(0, 0.0, retry_after=2.0, rng=rng).delay >= 2.0 for _ in range(50))
    assert policy.decide(0, 0.0, retry_after=3600.0).delay == 5.0
    assert policy.bound_retry_after(-3.0) == 0.0


def test_policy_from_settings_uses_every_knob() -> None:
    """The policy takes max_retries, backoff base/max and max_elapsed from Settings."""
    settings = Settings(
        agent_id=AGENT,
        agent_secret="s3cret-value",
        max_retries=7,
        retry_backoff_base=0.2,
        retry_backoff_max=9.0,
        max_elapsed=33.0,
    )
    assert RetryPolicy.from_settings(settings) == RetryPolicy(7, 0.2, 9.0, 33.0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("5", 5.0), (" 12 ", 12.0), ("1.5", 1.5), ("0", 0.0), ("-4", 0.0), ("", None), (None, None)],
)
def test_retry_after_in_seconds(header: str | None, expected: float | None) -> None:
    """Delay-seconds parse as seconds (negative clamps to 0); absent is None."""
    assert parse_retry_after(header) == expected


def test_retry_after_as_an_http_date() -> None:
    """An HTTP date becomes the seconds from now until then (0 when already past)."""
    now = 1_800_000_000.0
    future = email.utils.formatdate(now + 30, usegmt=True)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(future, now=now) == pytest.approx(30.0)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now=now) == 0.0


@pytest.mark.parametrize("header", ["soon", "nan", "Someday, 99 Foo 2015", "1e"])
def test_unreadable_retry_after_is_ignored(header: str) -> None:
    """A Retry-After that is neither seconds nor a date is treated as absent."""
    assert parse_retry_after(header) is None


def test_retry_after_is_read_from_rate_limit_and_server_errors() -> None:
    """A 429 carries it as retry_after; a 503 carries it in details."""
    assert retry_after_of(RateLimitError(retry_after=4.0)) == 4.0
    assert retry_after_of(RateLimitError(retry_after=None)) is None
    assert retry_after_of(ServerError(status_code=503, details={"retry_after": 2})) == 2.0
    assert retry_after_of(ServerError(status_code=503, details={"retry_after": True})) is None
    assert retry_after_of(ServerError(status_code=503)) is None
