"""Tests of the token bucket: exactness over every window, pauses, deadlines, interruption."""

from __future__ import annotations

import bisect
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infinium_logging.throttle import TokenBucket


class FakeClock:
    """A clock that only moves when told to; its ``wait`` advances it instead of sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def wait(self, _cond: threading.Condition, timeout: float) -> bool:
        self.waits.append(timeout)
        self.now += timeout
        return False


def _max_in_window(times: list[float], window: float) -> int:
    """The largest number of times that fall in any closed window of length ``window``."""
    best = 0
    for i, start in enumerate(times):
        j = bisect.bisect_right(times, start + window)
        best = max(best, j - i)
    return best


def test_burst_is_exactly_the_capacity() -> None:
    """A fresh bucket lets exactly ``burst`` requests through at once, not one more."""
    clock = FakeClock()
    bucket = TokenBucket(10.0, 20, clock=clock)
    granted = [bucket.try_acquire() == 0.0 for _ in range(25)]
    assert granted == [True] * 20 + [False] * 5


def test_wait_until_next_token_is_reported() -> None:
    """An empty bucket says how long until the next token, and grants it exactly then."""
    clock = FakeClock()
    bucket = TokenBucket(4.0, 1, clock=clock)
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() == pytest.approx(0.25)
    clock.advance(0.2)
    assert bucket.try_acquire() == pytest.approx(0.05)
    clock.advance(0.05)
    assert bucket.try_acquire() == 0.0


def test_sustained_rate_is_exact_with_blocking_acquire() -> None:
    """Callers that always wait get burst + rate*T requests in T seconds, never more."""
    clock = FakeClock()
    bucket = TokenBucket(10.0, 20, clock=clock, wait=clock.wait)
    start = clock()
    times = []
    while clock() - start <= 10.0:
        assert bucket.acquire()
        times.append(clock() - start)
    in_ten_seconds = sum(1 for t in times if t <= 10.0)
    assert in_ten_seconds in (120, 121)  # 20 + 10*10, plus the one due at exactly t=10
    assert _max_in_window(times, 1.0) <= 20 + 10


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=200.0),
    burst=st.integers(min_value=1, max_value=30),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=300),
    windows=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=5),
)
def test_no_window_lets_more_than_burst_plus_rate_times_length(
    rate: float, burst: int, gaps: list[float], windows: list[float]
) -> None:
    """Property: for arbitrary arrival patterns, any window of T s sees <= burst + rate*T grants."""
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock=clock)
    granted: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        if bucket.try_acquire() == 0.0:
            granted.append(clock())
    for window in windows:
        assert _max_in_window(granted, window) <= burst + rate * window + 1e-9


def test_pause_holds_everyone_then_resumes_at_rate_not_burst() -> None:
    """A 429 pause holds callers for its length, and afterwards the bucket starts empty."""
    clock = FakeClock()
    bucket = TokenBucket(10.0, 20, clock=clock)
    bucket.pause(2.0)
    assert bucket.try_acquire() == pytest.approx(2.0)
    assert bucket.paused_for() == pytest.approx(2.0)
    clock.advance(1.0)
    bucket.pause(0.5)  # a shorter pause does not cut the longer one short
    assert bucket.try_acquire() == pytest.approx(1.0)
    clock.advance(1.0)
    assert bucket.paused_for() == 0.0
    assert bucket.try_acquire() == pytest.approx(0.1)
    clock.advance(0.1)
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() == pytest.approx(0.1)


def test_disabled_bucket_lets_all_through_but_still_pauses() -> None:
    """With rate limiting off, only a server-requested pause holds callers."""
    clock = FakeClock()
    bucket = TokenBucket(1.0, 1, enabled=False, clock=clock)
    assert all(bucket.try_acquire() == 0.0 for _ in range(1000))
    bucket.pause(3.0)
    assert bucket.try_acquire() == pytest.approx(3.0)
    clock.advance(3.0)
    assert bucket.try_acquire() == 0.0


def test_acquire_gives_up_at_once_when_the_token_would_come_after_the_deadline() -> None:
    """acquire() returns False without waiting when the next token is past the deadline."""
    clock = FakeClock()
    bucket = TokenBucket(1.0, 1, clock=clock, wait=clock.wait)
    assert bucket.acquire()
    deadline = clock() + 0.5
    assert not bucket.acquire(lambda: deadline)
    assert clock.waits == []
    later = clock() + 1.0
    assert bucket.acquire(lambda: later)
    assert clock.waits == [pytest.approx(1.0)]


def test_wake_interrupts_a_waiting_thread_when_a_deadline_appears() -> None:
    """A thread blocked in acquire() returns False promptly once shutdown sets a deadline."""
    bucket = TokenBucket(0.01, 1)  # next token in 100 s
    assert bucket.acquire()
    deadline: list[float] = []
    result: list[bool] = []

    def waiter() -> None:
        result.append(bucket.acquire(lambda: deadline[0] if deadline else None))

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    assert thread.is_alive()
    started = time.monotonic()
    deadline.append(time.monotonic() + 1.0)
    bucket.wake()
    thread.join(2.0)
    assert result == [False]
    assert time.monotonic() - started < 0.5


def test_threads_sharing_a_bucket_never_exceed_the_bound() -> None:
    """Four threads competing for one real-clock bucket stay within burst + rate*T."""
    bucket = TokenBucket(200.0, 5)
    stamps: list[float] = []
    lock = threading.Lock()
    start = time.monotonic()

    def worker() -> None:
        while time.monotonic() - start < 0.3:
            if bucket.acquire(lambda: start + 0.3):
                with lock:
                    stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5.0)
    elapsed = max(stamps) - start
    assert len(stamps) <= 5 + 200.0 * elapsed + 1
    assert len(stamps) >= 5 + 200.0 * 0.3 * 0.5  # and it is not starving them either


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (float("inf"), 1), (1.0, 0)])
def test_invalid_parameters_are_refused(rate: float, burst: int) -> None:
    """A bucket that could never grant, or grant without bound, is a ValueError."""
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate, burst)
