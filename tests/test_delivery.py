"""Tests of delivery (one loop for background sends, send() and replay) and the destination seam."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from exporters import make_exporter, trace

from infinium_logging.collector import LocalCollector
from infinium_logging.delivery import Deadline, Delivery
from infinium_logging.destination import BatchLimits, Destination, RecordResult
from infinium_logging.destination_infinium import InfiniumDestination, encode_trace
from infinium_logging.errors import (
    AuthenticationError,
    InfiniumError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from infinium_logging.model import ApiResponse, TaskData
from infinium_logging.retry import RetryPolicy
from infinium_logging.throttle import TokenBucket


class _Scripted:
    """A destination answering from a script: an error to raise, or None for a 200."""

    name = "scripted"
    limits = BatchLimits(max_records=10, max_bytes=1 << 20, max_delay=1.0)

    def __init__(self, script: Sequence[InfiniumError | None]) -> None:
        self._script = list(script)
        self.bodies: list[bytes] = []
        self.closed = False

    def record(self, body: bytes, trace: TaskData | None = None) -> bytes:
        assert trace is not None
        return trace.name.encode()

    def frame(self, records: Sequence[bytes]) -> bytes:
        return b"\n".join(records)

    def post(self, body: bytes, timeout: float | None) -> ApiResponse:
        self.bodies.append(body)
        failure = self._script.pop(0) if self._script else None
        if failure is not None:
            raise failure
        return ApiResponse(success=True, status_code=200, data={"n": len(self.bodies)})

    def results(self, response: ApiResponse, count: int) -> Sequence[RecordResult]:
        return [RecordResult("sent", response=response)] * count

    def close(self) -> None:
        self.closed = True


class _FrozenClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _delivery(
    destination: Destination,
    *,
    clock: _FrozenClock | None = None,
    max_retries: int = 3,
) -> Delivery:
    bucket = TokenBucket(10.0, 1, enabled=False, clock=clock or _FrozenClock())
    policy = RetryPolicy(max_retries=max_retries, backoff_base=0.01, backoff_max=0.02)
    return Delivery(destination, policy, bucket, Deadline(), 5.0)


def test_a_429_without_retry_after_pauses_the_whole_throttle() -> None:
    """The 429 rule: a 429 with no Retry-After pauses the bucket (every sender and every
    synchronous call) for the backoff this request waits before its retry."""
    clock = _FrozenClock()
    destination = _Scripted([RateLimitError("slow down"), None])
    delivery = _delivery(destination, clock=clock)
    paused: list[float] = []

    def on_retry(error: InfiniumError) -> bool:
        paused.append(delivery.bucket.paused_for())
        clock.now += 1.0  # the pause is over by the next attempt
        return True

    outcome = delivery.deliver(b"body", on_retry=on_retry)
    assert outcome.reason == "sent"
    assert destination.bodies == [b"body", b"body"]
    assert len(paused) == 1 and 0.0 < paused[0] <= 0.02


def test_a_429_with_retry_after_pauses_for_it_even_when_the_retries_are_over() -> None:
    """A 429 that ends the retries still holds everyone for its (bounded) Retry-After."""
    clock = _FrozenClock()
    delivery = _delivery(_Scripted([RateLimitError("no", retry_after=0.015)]), clock=clock)
    delivery.policy = RetryPolicy(max_retries=0, backoff_base=0.01, backoff_max=0.02)
    outcome = delivery.deliver(b"body")
    assert outcome.reason == "retries_exhausted"
    assert isinstance(outcome.error, RateLimitError)
    assert abs(delivery.bucket.paused_for() - 0.015) < 1e-9


def test_a_503_does_not_pause_the_throttle() -> None:
    """Only a 429 speaks of the client as a whole; other retried failures pause no one."""
    clock = _FrozenClock()
    delivery = _delivery(_Scripted([ServerError("busy", 503), None]), clock=clock)
    assert delivery.deliver(b"body").reason == "sent"
    assert delivery.bucket.paused_for() == 0.0


def test_outcomes_say_why_a_delivery_ended() -> None:
    """Refused credentials, a final refusal and running out of retries each end delivery
    with their reason and the error; a synchronous caller gets the error raised."""
    assert _delivery(_Scripted([AuthenticationError("no")])).deliver(b"x").reason == "auth"
    rejected = _delivery(_Scripted([NotFoundError("gone")])).deliver(b"x")
    assert rejected.reason == "rejected" and isinstance(rejected.error, NotFoundError)
    failing = _Scripted([ServerError("down", 500)] * 5)
    exhausted = _delivery(failing, max_retries=2).deliver(b"x")
    assert exhausted.reason == "retries_exhausted"
    assert len(failing.bodies) == 3
    with pytest.raises(ServerError, match="down"):
        exhausted.raise_unless_sent()


def test_every_attempt_posts_afresh() -> None:
    """Each attempt calls the destination's post again (where a signing destination makes
    a new signature); the body is the same bytes every time."""
    destination = _Scripted([ServerError("down", 502), ServerError("down", 502), None])
    assert _delivery(destination).deliver(b"exact").reason == "sent"
    assert destination.bodies == [b"exact"] * 3


def test_given_up_work_is_abandoned_not_sent() -> None:
    """Work settled elsewhere meanwhile (at the shutdown deadline) makes no further attempt."""
    settled = threading.Event()
    destination = _Scripted([ServerError("down", 503), None])

    def on_retry(error: InfiniumError) -> bool:
        settled.set()
        return True

    outcome = _delivery(destination).deliver(b"x", given_up=settled.is_set, on_retry=on_retry)
    assert outcome.reason == "shutdown"
    assert destination.bodies == [b"x"]


def test_a_deadline_in_the_past_sends_nothing() -> None:
    """Past the shutdown deadline no request starts."""
    destination = _Scripted([])
    delivery = _delivery(destination)
    delivery.deadline.at = 0.0
    assert delivery.deliver(b"x").reason == "shutdown"
    assert destination.bodies == []


def test_the_infinium_destination_sends_the_official_bytes(
    infinium_collector: LocalCollector,
) -> None:
    """The Infinium destination frames one trace as its own wire body and reads the answer
    as one sent record naming the stored trace."""
    collector = infinium_collector
    with make_exporter(collector) as exporter:
        destination = InfiniumDestination(exporter.settings)
        task = trace("seam")
        body = destination.frame([destination.record(encode_trace(task), task)])
        assert body == encode_trace(task)
        response = destination.post(body, None)
        (result,) = destination.results(response, 1)
        destination.close()
    assert result.verdict == "sent" and result.response is response
    assert response.data is not None and "traceId" in response.data
    (received,) = collector.traces()
    assert received.task.name == "seam"
    assert destination.limits.max_records == 1 and destination.name == "infinium"


def test_send_retries_a_429_without_retry_after(infinium_collector: LocalCollector) -> None:
    """send() goes through the same delivery: a 429 without Retry-After is retried."""
    collector = infinium_collector
    collector.fail_next(1, 429)
    with make_exporter(collector, retry_backoff_base=0.01, retry_backoff_max=0.05) as exporter:
        response = exporter.send(trace("limited"))
    assert response.success
    assert collector.faults.get("http_429") == 1
    assert collector.accepted_count == 1
