"""Tests of the exporter against the local collector: delivery, retries, limits, stats, send."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from exporters import balanced, make_exporter, trace, wait_until
from sinks import OFFICIAL_BODY_PART, official_trace

from infinium_logging.collector import LocalCollector
from infinium_logging.errors import (
    AuthenticationError,
    BatchError,
    NotFoundError,
    ServerError,
    ValidationError,
)
from infinium_logging.events import tagged_trace
from infinium_logging.exporter import Exporter
from infinium_logging.guard import in_export
from infinium_logging.handler import InfiniumHandler
from infinium_logging.ledger import DROP_REASONS, DropWarner, ExporterStats
from infinium_logging.model import MAX_BODY_BYTES, ApiResponse, ExecutionStep, TaskData
from infinium_logging.processor import InfiniumProcessor
from infinium_logging.queued import PendingTrace
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

PROMPT_ID = "0d9c1b7a-3e2f-4a5b-8c6d-7e8f9a0b1c2d"


def exporter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("infinium-exporter-")]


@pytest.fixture
def collector(infinium_collector: LocalCollector) -> LocalCollector:
    """The shared test collector (a shorter name)."""
    return infinium_collector


# --- delivery -------------------------------------------------------------------------------------


def test_workers_start_lazily_on_the_first_submit(collector: LocalCollector) -> None:
    """No thread at construction; N daemon threads named infinium-exporter-N after a submit."""
    before = set(exporter_threads())
    with make_exporter(collector, workers=3) as exporter:
        assert set(exporter_threads()) == before
        assert exporter.submit(trace())
        mine = [t for t in exporter_threads() if t not in before]
        assert sorted(t.name for t in mine) == [f"infinium-exporter-{n}" for n in (1, 2, 3)]
        assert all(t.daemon for t in mine)
        assert exporter.flush(5)
    assert wait_until(lambda: not any(t.is_alive() for t in mine))


def test_submitted_traces_arrive_and_on_result_gets_each_trace_id(
    collector: LocalCollector,
) -> None:
    """Every accepted trace is stored once; on_result sees its TaskData and the traceId."""
    outcomes: list[tuple[Any, ApiResponse]] = []
    lock = threading.Lock()

    def on_result(task: Any, response: ApiResponse) -> None:
        with lock:
            outcomes.append((task, response))

    with make_exporter(collector, on_result=on_result) as exporter:
        assert all(exporter.submit(trace(f"t{i}")) for i in range(20))
        assert exporter.flush(5)
        stats = exporter.stats()
    stored = collector.traces()
    assert sorted(t.task.name for t in stored) == sorted(f"t{i}" for i in range(20))
    assert {r.trace_id for _, r in outcomes} == {t.trace_id for t in stored}
    assert all(r.success for _, r in outcomes)
    assert (stats.sent, stats.dropped_total, stats.bytes_sent) == (
        20,
        0,
        sum(len(t.body) for t in stored),
    )
    assert stats.last_success_time is not None and stats.last_error is None


def test_dicts_are_read_leniently_on_the_sender_thread_and_fixes_counted(
    collector: LocalCollector,
) -> None:
    """A dict with fixable problems is delivered; what lenient reading changed is counted."""
    with make_exporter(collector) as exporter:
        assert exporter.submit(
            {
                "name": "from a dict",
                "description": "x",
                "current_datetime": "2026-01-01T00:00:00Z",
                "duration": "2.5",
                "steps": [{"step_number": "one", "action": "log", "description": "d"}],
            }
        )
        assert exporter.flush(5)
        stats = exporter.stats()
    [stored] = collector.traces()
    assert stored.task.name == "from a dict"
    assert stored.task.duration == 2.5
    assert stats.sent == 1
    assert sum(stats.coerced.values()) >= 1


def test_things_that_are_not_traces_are_counted_invalid(collector: LocalCollector) -> None:
    """submit(42) is refused at once; a TaskData that cannot be encoded is dropped as invalid."""
    unencodable = trace("bad", steps=[ExecutionStep(1, "log", "d", metadata={"thing": object()})])
    with make_exporter(collector) as exporter:
        assert exporter.submit(42) is False  # type: ignore[arg-type]
        assert exporter.submit(unencodable)
        assert exporter.flush(5)
        stats = exporter.stats()
    assert stats.dropped["invalid"] == 2
    assert collector.request_count == 0
    assert balanced(stats)


def test_an_oversize_trace_is_shrunk_to_fit(collector: LocalCollector) -> None:
    """A trace over 1 MiB is fitted (marked truncated) on the sender thread and delivered."""
    with make_exporter(collector) as exporter:
        assert exporter.submit(trace("big", output_summary="x" * (2 * MAX_BODY_BYTES)))
        assert exporter.flush(10)
    [stored] = collector.traces()
    assert len(stored.body) <= MAX_BODY_BYTES
    assert stored.task.environment is not None
    assert stored.task.environment.custom_tags is not None
    assert stored.task.environment.custom_tags["truncated"] == "true"


def test_settings_come_from_the_environment_with_overrides(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exporter() reads INFINIUM_*; keyword overrides win; settings + overrides replace."""
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    monkeypatch.setenv("INFINIUM_BASE_URL", collector.base_url)
    monkeypatch.setenv("INFINIUM_WORKERS", "3")
    with Exporter(workers=1) as exporter:
        assert exporter.settings.workers == 1
        assert exporter.settings.base_url == collector.base_url
        assert exporter.submit(trace("env"))
        assert exporter.flush(5)
    with Exporter(exporter.settings, workers=2) as other:
        assert other.settings.workers == 2
    assert [t.task.name for t in collector.traces()] == ["env"]
    assert TEST_AGENT_SECRET not in repr(exporter)


def test_copying_keeps_the_one_exporter(collector: LocalCollector) -> None:
    """A copy of an exporter, or of something holding one (a processor, a config dict), is
    the same exporter: a second one sharing its threads and counters would miscount."""
    with make_exporter(collector) as exporter:
        assert copy.copy(exporter) is exporter
        with pytest.raises(TypeError, match="cannot be pickled") as refused:
            pickle.dumps(exporter)
        assert TEST_AGENT_SECRET not in str(refused.value)
        processor = InfiniumProcessor(exporter=exporter)
        copied = copy.deepcopy({"processor": processor, "exporter": exporter})
        assert copied["exporter"] is exporter
        processor_copy = copied["processor"]
        assert isinstance(processor_copy, InfiniumProcessor) and processor_copy is not processor
        processor_copy(None, "info", {"event": "copied", "infinium": True})
        assert exporter.flush(5)
        assert exporter.stats().sent == 1
    assert [t.task.name for t in collector.traces()] == ["copied"]


def test_the_official_clients_task_data_is_submitted_and_sent(collector: LocalCollector) -> None:
    """``submit`` and ``send`` take the official client's TaskData (a dataclass) as ``to_task``
    does, with the body the official client sends."""
    with make_exporter(collector) as exporter:
        assert exporter.submit(official_trace())
        assert exporter.send(official_trace()).success
        assert exporter.flush(5)
        assert exporter.stats().sent == 1  # send() is not counted: it answers itself
    bodies = [t.body for t in collector.traces()]
    assert len(bodies) == 2 and all(OFFICIAL_BODY_PART in body for body in bodies)


def test_logging_from_code_run_under_the_exporters_lock_neither_blocks_nor_loses(
    collector: LocalCollector,
) -> None:
    """A __del__ run by the garbage collector (or a signal handler) while this thread holds
    the exporter's lock may log: submitting then must not wait for the lock (it would wait
    forever); the traces are admitted afterwards and delivered."""
    with make_exporter(collector) as exporter:
        logger = logging.getLogger(f"tests.exporter.reentrant.{id(exporter)}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        handler = InfiniumHandler(exporter=exporter)
        logger.addHandler(handler)

        def log_under_the_lock() -> None:
            with exporter._lock:  # as the collector's finalizer would run, mid-admission
                for n in range(40):  # more than a batch: admission is attempted
                    logger.info("leaked %d", n, extra={"infinium": True})
                exporter.submit(trace("submitted under the lock"))

        worker = threading.Thread(target=log_under_the_lock, daemon=True)
        worker.start()
        worker.join(5)
        try:
            assert not worker.is_alive(), "submitting under the exporter's lock blocked"
            assert exporter.flush(10)
            assert exporter.stats().sent == 41
        finally:
            logger.removeHandler(handler)
            handler.close()


# --- retries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_each_retryable_status_is_retried(collector: LocalCollector, status: int) -> None:
    """One failure with a retryable status, then success: delivered with one retry."""
    collector.fail_next(1, status)
    with make_exporter(collector) as exporter:
        assert exporter.submit(trace())
        assert exporter.flush(5)
        stats = exporter.stats()
    assert (stats.sent, stats.retries, stats.dropped_total) == (1, 1, 0)
    assert collector.faults[f"http_{status}"] == 1
    assert collector.accepted_count == 1


def test_a_reset_connection_is_retried(collector: LocalCollector) -> None:
    """A connection reset (fresh connection) counts as a retry and then succeeds."""
    collector.drop_next(1)
    with make_exporter(collector, workers=1) as exporter:
        assert exporter.submit(trace())
        assert exporter.flush(5)
        stats = exporter.stats()
    assert (stats.sent, stats.retries) == (1, 1)


def test_a_closed_pooled_connection_is_not_a_failure(collector: LocalCollector) -> None:
    """The server closing a kept-alive connection costs no retry and no error."""
    with make_exporter(collector, workers=1) as exporter:
        assert exporter.submit(trace("first"))
        assert exporter.flush(5)
        collector.drop_next(1)
        assert exporter.submit(trace("second"))
        assert exporter.flush(5)
        stats = exporter.stats()
    assert (stats.sent, stats.retries, stats.last_error) == (2, 0, None)
    assert collector.faults["drop"] == 1


def test_a_timeout_is_retried(collector: LocalCollector) -> None:
    """A request that gets no answer in time is retried (and the retry succeeds)."""
    collector.hang_next(1)
    with make_exporter(collector, workers=1, timeout=0.2) as exporter:
        assert exporter.submit(trace())
        assert exporter.flush(5)
        stats = exporter.stats()
    assert (stats.sent, stats.retries) == (1, 1)
    assert stats.last_error is not None and "timed out" in stats.last_error


def test_retries_are_exhausted_after_max_retries(collector: LocalCollector) -> None:
    """A server that keeps failing gets 1 + max_retries requests; then the trace is dropped."""
    collector.fail_next(10, 503)
    with make_exporter(collector, max_retries=2) as exporter:
        assert exporter.submit(trace())
        assert exporter.flush(5)
        stats = exporter.stats()
    assert stats.dropped["retries_exhausted"] == 1
    assert (stats.retries, collector.request_count) == (2, 3)
    assert stats.failed == 1
    assert balanced(stats)


def test_max_elapsed_bounds_the_time_spent_retrying(collector: LocalCollector) -> None:
    """With a tiny time budget, retries stop early and the reason is max_elapsed."""
    collector.fail_next(50, 503, retry_after=0.2)
    with make_exporter(collector, max_retries=50, max_elapsed=0.3, retry_backoff_max=1.0) as ex:
        started = time.monotonic()
        assert ex.submit(trace())
        assert ex.flush(5)
        elapsed = time.monotonic() - started
        stats = ex.stats()
    assert stats.dropped["max_elapsed"] == 1
    assert elapsed < 1.0
    assert collector.request_count <= 3


def test_retry_after_is_the_minimum_wait(collector: LocalCollector) -> None:
    """A 503 with Retry-After: 0.4 is not retried sooner than 0.4 s later."""
    collector.fail_next(1, 503, retry_after=0.4)
    with make_exporter(collector, retry_backoff_max=5.0) as exporter:
        started = time.monotonic()
        assert exporter.submit(trace())
        assert exporter.flush(5)
        elapsed = time.monotonic() - started
    assert collector.accepted_count == 1
    assert elapsed >= 0.4


def test_retry_after_is_bounded(collector: LocalCollector) -> None:
    """A Retry-After of an hour is cut to retry_backoff_max."""
    collector.fail_next(1, 503, retry_after=3600)
    with make_exporter(collector, retry_backoff_max=0.2) as exporter:
        started = time.monotonic()
        assert exporter.submit(trace())
        assert exporter.flush(5)
        assert time.monotonic() - started < 2.0
    assert collector.accepted_count == 1


def test_a_429_pauses_every_sender(collector: LocalCollector) -> None:
    """After a 429 with Retry-After, no sender sends anything until it has passed."""
    arrivals: list[float] = []
    on_result = lambda _task, response: arrivals.append(time.monotonic())  # noqa: E731
    collector.fail_next(1, 429, retry_after=0.5)
    with make_exporter(collector, workers=4, retry_backoff_max=5.0, on_result=on_result) as ex:
        assert ex.submit(trace("first"))
        assert wait_until(lambda: collector.faults.get("http_429") == 1)
        limited_at = time.monotonic()
        assert wait_until(lambda: ex.stats().retries == 1)  # the exporter has seen the 429
        assert all(ex.submit(trace(f"then{i}")) for i in range(3))
        assert ex.flush(5)
    assert collector.accepted_count == 4
    assert min(arrivals) - limited_at >= 0.4


# --- final failures ------------------------------------------------------------------------------


def test_refused_credentials_are_not_retried_and_logged_once(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """401: no retry, counted as auth, one error naming the variables, no secret anywhere."""
    caplog.set_level(logging.INFO, logger="infinium_logging")
    with make_exporter(collector, agent_secret="wrong-secret-xyz", workers=1) as exporter:
        assert all(exporter.submit(trace(f"t{i}")) for i in range(3))
        assert exporter.flush(5)
        stats = exporter.stats()
    assert stats.dropped["auth"] == 3
    assert (stats.retries, collector.request_count) == (0, 3)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "INFINIUM_AGENT_ID" in errors[0].getMessage()
    assert "INFINIUM_AGENT_SECRET" in errors[0].getMessage()
    assert "wrong-secret-xyz" not in caplog.text
    assert stats.last_error is not None and "wrong-secret-xyz" not in stats.last_error


def test_sending_pauses_after_refused_credentials_then_recovers(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """After a 401 the senders wait auth_backoff, try again, and resume when it works."""
    caplog.set_level(logging.INFO, logger="infinium_logging")
    collector.fail_next(1, 401)
    with make_exporter(collector, auth_backoff=0.3, workers=1) as exporter:
        assert exporter.submit(trace("refused"))
        assert wait_until(lambda: exporter.stats().dropped["auth"] == 1)
        refused_at = time.monotonic()
        assert exporter.submit(trace("after"))
        assert exporter.flush(5)
        recovered_after = time.monotonic() - refused_at
        stats = exporter.stats()
    assert (stats.sent, stats.dropped["auth"]) == (1, 1)
    assert recovered_after >= 0.25
    assert any(
        r.getMessage() == "Infinium accepted the credentials again; sending resumed"
        for r in caplog.records
    )


def test_rejections_are_not_retried_and_each_message_logged_once(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """400/413/422 are dropped as rejected at once; each distinct message is logged once."""
    caplog.set_level(logging.WARNING, logger="infinium_logging")
    collector.fail_next(3, 422)
    collector.fail_next(1, 400)
    with make_exporter(collector, workers=1) as exporter:
        assert all(exporter.submit(trace(f"t{i}")) for i in range(4))
        assert exporter.flush(5)
        stats = exporter.stats()
    assert (stats.dropped["rejected"], stats.retries, collector.request_count) == (4, 0, 4)
    rejected = [r.getMessage() for r in caplog.records if "rejected a trace" in r.getMessage()]
    assert len(rejected) == 2
    assert "HTTP 422" in rejected[0] and "HTTP 400" in rejected[1]


# --- buffer bounds --------------------------------------------------------------------------------


def test_queue_full_by_count(collector: LocalCollector) -> None:
    """With the sender stuck, only max_queue_size traces wait; the rest are queue_full."""
    collector.hang_next(1)
    with make_exporter(collector, workers=1, max_queue_size=5, timeout=30.0) as exporter:
        assert exporter.submit(trace("stuck"))
        # In flight and at the server: encoded, its size learnt (the request is sent after).
        assert wait_until(lambda: exporter.stats().in_flight == 1 and collector.request_count >= 1)
        accepted = [exporter.submit(trace(f"t{i}")) for i in range(10)]
        stats = exporter.stats()
        assert balanced(stats)
        exporter.shutdown(0.2)
        final = exporter.stats()
    assert accepted == [True] * 5 + [False] * 5
    assert (stats.queued, stats.dropped["queue_full"]) == (5, 5)
    assert final.dropped["shutdown"] == 6
    assert balanced(final)


def test_queue_full_by_bytes(collector: LocalCollector) -> None:
    """The byte bound refuses traces whose estimated size would not fit."""
    collector.hang_next(1)
    big = "x" * 4000
    with make_exporter(
        collector, workers=1, max_queue_bytes=16_384, max_queue_size=1000, timeout=30.0
    ) as exporter:
        assert exporter.submit(trace("stuck"))
        # In flight and at the server: encoded, its size learnt (the request is sent after).
        assert wait_until(lambda: exporter.stats().in_flight == 1 and collector.request_count >= 1)
        accepted = [exporter.submit(trace(f"t{i}", description=big)) for i in range(6)]
        stats = exporter.stats()
        exporter.shutdown(0.2)
    assert accepted[:3] == [True, True, True]
    assert accepted[-1] is False
    assert stats.dropped["queue_full"] == accepted.count(False)
    assert stats.buffered_bytes <= 16_384
    assert balanced(stats)


# --- flush, shutdown --------------------------------------------------------------------------------


def test_flush_returns_by_its_deadline_when_the_server_hangs(collector: LocalCollector) -> None:
    """flush(0.3) with every request hanging returns False in about 0.3 s."""
    collector.hang_next(10)
    with make_exporter(collector, timeout=30.0) as exporter:
        assert exporter.submit(trace())
        started = time.monotonic()
        assert exporter.flush(0.3) is False
        assert 0.25 <= time.monotonic() - started < 0.6
        exporter.shutdown(0.1)


def test_shutdown_after_a_flush_gave_up_does_not_wait_for_the_same_traces(
    collector: LocalCollector,
) -> None:
    """A flush that waited the whole shutdown_timeout for stuck traces: shutdown() right
    after, nothing submitted since, counts them lost at once.  A shorter flush, or a trace
    submitted since, leaves shutdown its full deadline."""
    collector.hang_next(100)
    with make_exporter(collector, timeout=30.0, shutdown_timeout=0.5) as exporter:
        assert exporter.submit(trace("stuck"))
        assert exporter.flush(0.1) is False  # shorter than shutdown_timeout: not giving up
        assert exporter.flush() is False
        assert exporter.submit(trace("new"))  # something new: shutdown waits for it again
        started = time.monotonic()
        assert exporter.flush() is False
        took = time.monotonic() - started
        assert 0.45 <= took < 0.9
        started = time.monotonic()
        assert exporter.shutdown() is False
        assert time.monotonic() - started < 0.2
        assert exporter.stats().dropped["shutdown"] == 2
    with make_exporter(collector, timeout=30.0, shutdown_timeout=0.5) as exporter:
        assert exporter.submit(trace("stuck"))
        assert exporter.flush(0.1) is False
        started = time.monotonic()
        assert exporter.shutdown() is False
        assert 0.45 <= time.monotonic() - started < 0.9


def test_shutdown_deadline_covers_requests_in_flight(collector: LocalCollector) -> None:
    """shutdown(0.4) with hanging requests returns on time and counts them once as shutdown."""
    own = LocalCollector(agent_id=TEST_AGENT_ID, agent_secret=TEST_AGENT_SECRET).start()
    try:
        own.hang_next(100)
        exporter = make_exporter(own, workers=2, timeout=30.0)
        assert all(exporter.submit(trace(f"t{i}")) for i in range(5))
        assert wait_until(lambda: exporter.stats().in_flight == 2)
        started = time.monotonic()
        assert exporter.shutdown(0.4) is False
        assert 0.35 <= time.monotonic() - started < 0.9
        after = exporter.stats()
    finally:
        own.stop()  # releases the hanging requests: their late failure must not count twice
    time.sleep(0.1)
    final = exporter.stats()
    assert after.dropped["shutdown"] == 5
    assert final == after
    assert balanced(final)


def test_submit_after_shutdown_is_closed_and_shutdown_is_idempotent(
    collector: LocalCollector,
) -> None:
    """Later submits return False (counted closed); a second shutdown returns at once."""
    exporter = make_exporter(collector)
    assert exporter.submit(trace())
    assert exporter.shutdown(2)
    assert exporter.closed
    assert exporter.submit(trace()) is False
    started = time.monotonic()
    assert exporter.shutdown(2)
    assert time.monotonic() - started < 0.1
    stats = exporter.stats()
    assert (stats.sent, stats.dropped["closed"]) == (1, 1)
    assert balanced(stats)


def test_shutdown_with_the_server_down_keeps_its_deadline(collector: LocalCollector) -> None:
    """With nothing reachable, retries go on only until the deadline; everything is counted."""
    with LocalCollector() as gone:
        url = gone.base_url
    exporter = make_exporter(
        collector, base_url=url, retry_backoff_base=0.5, retry_backoff_max=0.5, max_retries=100
    )
    assert all(exporter.submit(trace(f"t{i}")) for i in range(10))
    started = time.monotonic()
    assert exporter.shutdown(0.8) is False
    assert time.monotonic() - started < 0.8 + 0.3
    stats = exporter.stats()
    assert stats.sent == 0
    assert stats.dropped["shutdown"] == 10
    assert stats.retries > 0
    assert balanced(stats)


def test_async_context_manager_shuts_down_off_the_loop(collector: LocalCollector) -> None:
    """`async with` shuts down on exit in a thread: the event loop keeps running meanwhile."""
    collector.hang_next(1)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main() -> Exporter:
        task = asyncio.create_task(ticker())
        async with make_exporter(collector, shutdown_timeout=0.4, timeout=30.0) as exporter:
            assert exporter.submit(trace("async"))
            await asyncio.sleep(0.05)
            closing = time.monotonic()
        task.cancel()
        ticks_while_closing = [t for t in ticks if t >= closing]
        assert len(ticks_while_closing) >= 10
        return exporter

    exporter = asyncio.run(main())
    assert exporter.closed
    assert exporter.stats().dropped["shutdown"] == 1


def test_flush_waits_only_for_what_was_submitted_before_it(collector: LocalCollector) -> None:
    """Traces submitted while a flush waits do not hold that flush up."""
    collector.latency = 0.25
    with make_exporter(collector, workers=1) as exporter:
        assert exporter.submit(trace("before"))
        result: list[tuple[bool, float]] = []

        def flusher() -> None:
            started = time.monotonic()
            result.append((exporter.flush(5), time.monotonic() - started))

        thread = threading.Thread(target=flusher)
        thread.start()
        time.sleep(0.02)
        for i in range(5):
            assert exporter.submit(trace(f"after{i}"))
        thread.join(5)
        collector.latency = 0.0
    [(flushed, took)] = result
    assert flushed
    assert took < 0.25 * 3


def test_enable_logging_sets_up_the_library_logger(collector: LocalCollector) -> None:
    """enable_logging=True attaches the library's stderr handler at log_level."""
    library = logging.getLogger("infinium_logging")
    before = list(library.handlers)
    old_level = library.level
    try:
        with make_exporter(collector, enable_logging=True, log_level="DEBUG"):
            added = [h for h in library.handlers if h not in before]
            assert len(added) == 1
            assert added[0].level == logging.DEBUG
    finally:
        for handler in [h for h in library.handlers if h not in before]:
            library.removeHandler(handler)
        library.setLevel(old_level)


# --- stats and invariants ---------------------------------------------------------------------------


def test_eight_threads_of_a_thousand_submits_all_arrive(collector: LocalCollector) -> None:
    """8 x 1,000 concurrent submits: every trace stored exactly once, stats balanced throughout."""
    seen_unbalanced: list[ExporterStats] = []
    with make_exporter(collector, workers=4, max_queue_size=10_000) as exporter:
        stop = threading.Event()

        def observe() -> None:
            while not stop.is_set():
                stats = exporter.stats()
                if not balanced(stats):
                    seen_unbalanced.append(stats)
                time.sleep(0.002)

        def produce(n: int) -> None:
            for i in range(1000):
                exporter.submit(trace(f"p{n}-{i}"))

        observer = threading.Thread(target=observe)
        observer.start()
        producers = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join()
        assert exporter.flush(60)
        stop.set()
        observer.join()
        stats = exporter.stats()
    assert seen_unbalanced == []
    assert (stats.submitted, stats.sent, stats.dropped_total) == (8000, 8000, 0)
    names = [t.task.name for t in collector.traces()]
    assert len(names) == 8000
    assert len(set(names)) == 8000


def test_invariant_holds_under_chaos(collector: LocalCollector) -> None:
    """With random 503s, 429s and resets, every trace ends sent or dropped-with-reason."""
    collector.chaos(7, p503=0.1, p429=0.05, p_reset=0.1, retry_after=0.01)
    seen: list[ExporterStats] = []
    with make_exporter(collector, workers=4, max_retries=2, max_queue_size=100) as exporter:
        for i in range(300):
            exporter.submit(trace(f"c{i}"))
            if i % 10 == 0:
                seen.append(exporter.stats())
        assert exporter.flush(30)
        final = exporter.stats()
    assert all(balanced(s) for s in seen)
    assert balanced(final)
    assert final.queued == final.in_flight == 0
    assert final.sent == collector.accepted_count
    assert final.sent + final.dropped_total == 300
    assert final.retries > 0
    assert set(final.dropped) == set(DROP_REASONS)


def test_drop_warnings_come_at_most_once_a_minute(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Many drops give one warning with counts by reason, not one per trace."""
    caplog.set_level(logging.WARNING, logger="infinium_logging.exporter")
    collector.fail_next(40, 422)
    with make_exporter(collector, workers=2) as exporter:
        for i in range(40):
            exporter.submit(trace(f"t{i}"))
        assert exporter.flush(5)
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert 1 <= len(drops) <= 2  # one during the run, maybe one summary at shutdown
    assert "rejected=" in drops[0]


def test_drop_warner_rate_limits_with_its_clock() -> None:
    """The warner reports new drops at most once per interval, counting since the last report."""
    now = [0.0]
    warner = DropWarner(60.0, clock=lambda: now[0])
    assert warner.news({"queue_full": 3}) == {"queue_full": 3}
    now[0] = 30.0
    assert not warner.due()
    assert warner.news({"queue_full": 9}) is None
    now[0] = 61.0
    assert warner.news({"queue_full": 9, "auth": 1}) == {"queue_full": 6, "auth": 1}
    now[0] = 200.0
    assert warner.news({"queue_full": 9, "auth": 1}) is None  # nothing new: nothing to say
    assert warner.news({"queue_full": 10, "auth": 1}, force=True) == {"queue_full": 1}


def test_disabled_exporter_drops_cheaply_and_sends_nothing(collector: LocalCollector) -> None:
    """INFINIUM_DISABLED: submit returns False (counted), no thread, send says disabled."""
    before = set(exporter_threads())
    with make_exporter(collector, disabled=True) as exporter:
        assert exporter.submit(trace()) is False
        assert set(exporter_threads()) == before
        response = exporter.send(trace())
        batch = exporter.send_batch([trace(), trace()])
        stats = exporter.stats()
    assert stats.dropped["disabled"] == 1
    assert response.success is False and "disabled" in response.message
    assert (batch.successful, batch.failed) == (0, 2)
    assert collector.request_count == 0


def test_an_explicit_disabled_false_wins_over_the_environment(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A suite run with INFINIUM_DISABLED=true can still point one exporter at a collector."""
    monkeypatch.setenv("INFINIUM_DISABLED", "true")
    disabled = Exporter(
        base_url=collector.base_url, agent_id=TEST_AGENT_ID, agent_secret=TEST_AGENT_SECRET
    )
    assert disabled.submit(trace()) is False
    disabled.shutdown(1)
    with Exporter(
        base_url=collector.base_url,
        agent_id=TEST_AGENT_ID,
        agent_secret=TEST_AGENT_SECRET,
        disabled=False,
    ) as exporter:
        assert exporter.submit(trace("sent anyway"))
        assert exporter.flush(10)
    assert [t.task.name for t in collector.traces()] == ["sent anyway"]


def test_send_refuses_a_trace_nested_too_deeply_to_encode(collector: LocalCollector) -> None:
    """send() validates: a trace msgspec cannot encode (containers nested past the recursion
    limit) is a ValidationError, not a RecursionError, and nothing is sent."""
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(50_000):  # past any interpreter's recursion limit (3.13's is 10,000)
        inner["a"] = {}
        inner = inner["a"]
    step = {"step_number": 1, "action": "a", "description": "d", "metadata": {"deep": deep}}
    fields: dict[str, Any] = {"name": "deep", "description": "d", "duration": 1.0}
    fields |= {"current_datetime": "2026-01-01T00:00:00Z", "steps": [step]}
    with make_exporter(collector) as exporter, pytest.raises(ValidationError, match="too deeply"):
        exporter.send(fields)
    assert collector.request_count == 0


def test_on_result_errors_are_caught_and_logged_once(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback that raises never stops delivery; the problem is logged once."""
    caplog.set_level(logging.WARNING, logger="infinium_logging.exporter")

    def broken(_task: Any, _response: ApiResponse) -> None:
        raise RuntimeError("callback bug")

    with make_exporter(collector, on_result=broken) as exporter:
        assert all(exporter.submit(trace(f"t{i}")) for i in range(5))
        assert exporter.flush(5)
        stats = exporter.stats()
    assert stats.sent == 5
    assert len([r for r in caplog.records if "on_result" in r.getMessage()]) == 1


def test_a_failing_callback_is_not_shown_as_raised_by_the_library(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback that raises on a failed trace: its traceback is its own, not chained to the
    exception the exporter was handling when it called it (a 404 here)."""
    caplog.set_level(logging.WARNING, logger="infinium_logging.exporter")

    def broken(_task: Any, response: ApiResponse) -> None:
        raise RuntimeError(f"callback bug: {(response.data or {}).get('reason')}")

    with make_exporter(collector, on_result=broken, max_retries=0) as exporter:
        collector.fail_next(1, 404)
        assert exporter.submit(trace("refused"))
        assert exporter.flush(5)
    (record,) = [r for r in caplog.records if "on_result" in r.getMessage()]
    text = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    assert "RuntimeError: callback bug: rejected" in text
    assert "During handling" not in text and "NotFoundError" not in text


def test_a_slow_callback_does_not_hold_the_shutdown_past_its_deadline(
    collector: LocalCollector,
) -> None:
    """Traces lost at the deadline are reported to on_result for a short grace at most: a
    callback that takes its time does not hold shutdown() (or the exit) past its deadline."""
    release = threading.Event()
    calls: list[str] = []

    def slow(task: Any, _response: ApiResponse) -> None:
        calls.append(task.name)
        release.wait(30)

    collector.hang_next(100)
    exporter = make_exporter(collector, on_result=slow, workers=1, timeout=30.0)
    try:
        for i in range(3):
            assert exporter.submit(trace(f"t{i}"))
        # In flight and at the server: encoded, its size learnt (the request is sent after).
        assert wait_until(lambda: exporter.stats().in_flight == 1 and collector.request_count >= 1)
        started = time.monotonic()
        assert exporter.shutdown(0.5) is False
        took = time.monotonic() - started
    finally:
        release.set()
    assert took < 0.5 + 0.25 + 0.5
    assert calls  # the report began; the callback was not waited for
    assert exporter.stats().dropped["shutdown"] == 3


def test_in_export_marks_exporter_threads_and_sync_sends(collector: LocalCollector) -> None:
    """in_export() is true on sender threads and during send(), false elsewhere."""
    marks: list[tuple[str, bool]] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            marks.append((threading.current_thread().name, in_export()))

    spy = Spy()
    urllib3_logger = logging.getLogger("urllib3")
    urllib3_logger.addHandler(spy)
    old_level = urllib3_logger.level
    urllib3_logger.setLevel(logging.DEBUG)
    try:
        flags: list[bool] = []
        with make_exporter(collector, on_result=lambda *_: flags.append(in_export())) as exporter:
            assert exporter.submit(trace())
            assert exporter.flush(5)
            exporter.send(trace("sync"))
    finally:
        urllib3_logger.removeHandler(spy)
        urllib3_logger.setLevel(old_level)
    assert in_export() is False
    assert flags == [True]
    assert marks
    assert all(flag for _, flag in marks)
    assert {name for name, _ in marks} & {"MainThread"}


# --- synchronous sends ----------------------------------------------------------------------------


def test_send_returns_the_answer_and_validates_strictly(collector: LocalCollector) -> None:
    """send() returns the ApiResponse with traceId; an invalid dict is a ValidationError."""
    with make_exporter(collector) as exporter:
        response = exporter.send(trace("now"))
        with pytest.raises(ValidationError):
            exporter.send({"name": 5})
        stats = exporter.stats()
    assert response.success and response.trace_id == collector.traces()[0].trace_id
    assert stats.submitted == 0  # sync sends are the caller's business, not the buffer's


def test_send_retries_then_raises_the_last_error(collector: LocalCollector) -> None:
    """send() retries a 503 like the background does; when retries run out it raises it."""
    collector.fail_next(1, 503)
    with make_exporter(collector, max_retries=1) as exporter:
        assert exporter.send(trace("retried")).success
        collector.fail_next(5, 503)
        with pytest.raises(ServerError) as caught:
            exporter.send(trace("failing"))
    assert caught.value.status_code == 503
    assert collector.accepted_count == 1


def test_send_raises_on_refused_credentials(collector: LocalCollector) -> None:
    """send() raises AuthenticationError at once for a 401 (no retry)."""
    with make_exporter(collector, agent_secret="not-the-secret") as exporter:
        with pytest.raises(AuthenticationError):
            exporter.send(trace())
    assert collector.request_count == 1


def test_send_batch_keeps_input_order_and_isolates_failures(collector: LocalCollector) -> None:
    """One bad trace fails alone; results are in input order; sends overlap in time."""
    collector.latency = 0.2
    tasks: list[Any] = [trace(f"b{i}") for i in range(4)]
    tasks.insert(2, {"name": 12})
    with make_exporter(collector, workers=4) as exporter:
        started = time.monotonic()
        result = exporter.send_batch(tasks)
        elapsed = time.monotonic() - started
    assert (result.successful, result.failed, result.total) == (4, 1, 5)
    assert [r.success for r in result.results] == [True, True, False, True, True]
    assert result.errors and result.errors[0].startswith("task 2")
    by_id = {t.trace_id: t.task.name for t in collector.traces()}
    names = [by_id[r.trace_id] for r in result.results if r.trace_id is not None]
    assert names == ["b0", "b1", "b2", "b3"]
    assert elapsed < 0.2 * 4


def test_send_batch_limits_and_total_failure(collector: LocalCollector) -> None:
    """More than 100 is a ValueError; empty is an empty result; all refused is a BatchError."""
    with make_exporter(collector) as exporter:
        with pytest.raises(ValueError, match="at most 100"):
            exporter.send_batch([trace()] * 101)
        assert exporter.send_batch([]).total == 0
    with make_exporter(collector, agent_secret="not-the-secret") as exporter:
        with pytest.raises(BatchError) as caught:
            exporter.send_batch([trace("a"), trace("b")])
    assert (caught.value.total_tasks, caught.value.failed_tasks) == (2, 2)
    assert len(caught.value.errors) == 2
    assert "not-the-secret" not in str(caught.value)


def test_interpreted_result_and_prompts_through_the_exporter() -> None:
    """The GET helpers work through the exporter's pool, throttle and errors."""
    prompts = {
        PROMPT_ID: {
            "key": "prompt-key-1",
            "versions": [
                {"version": 3, "name": "p", "content": "Hi {{who}} {{x}}", "createdAt": "c"}
            ],
        }
    }
    with LocalCollector(prompts=prompts) as collector, make_exporter(collector) as exporter:
        trace_id = exporter.send(trace("graded")).trace_id
        assert trace_id is not None
        result = exporter.get_interpreted_result(trace_id)
        prompt = exporter.get_prompt(PROMPT_ID, "prompt-key-1", variables={"who": "Ada"})
        with pytest.raises(NotFoundError):
            exporter.get_interpreted_result("00000000-0000-4000-8000-000000000000")
    assert result.data is not None and result.data["traceId"] == trace_id
    assert (prompt.version, prompt.content) == (3, "Hi {{who}} {{x}}")
    assert prompt.rendered_content == "Hi Ada {{x}}"


def test_the_throttle_holds_the_exporter_to_its_rate(collector: LocalCollector) -> None:
    """With 20 req/s and a burst of 5, 15 traces take about (15 - 5) / 20 = 0.5 s."""
    arrivals: list[float] = []
    on_result = lambda _task, _response: arrivals.append(time.monotonic())  # noqa: E731
    with make_exporter(
        collector,
        enable_rate_limiting=True,
        requests_per_second=20.0,
        burst_size=5,
        workers=4,
        on_result=on_result,
    ) as exporter:
        started = time.monotonic()
        assert all(exporter.submit(trace(f"r{i}")) for i in range(15))
        assert exporter.flush(5)
    assert len(arrivals) == 15
    assert max(arrivals) - started >= 0.45
    assert sum(1 for t in arrivals if t - started < 0.2) <= 5 + 20 * 0.2 + 1


# --- traces captured by handlers, pacing, memory --------------------------------------------------


class _Captured(PendingTrace):
    """A captured trace that notes where it is built."""

    __slots__ = ("built_on", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.built_on: list[str] = []

    def materialize(self) -> dict[str, Any]:
        self.built_on.append(threading.current_thread().name)
        return {"name": self.name, "duration": "1.5", "current_datetime": "2026-01-01T00:00:00Z"}


class _Unbuildable(PendingTrace):
    """A captured trace whose building fails."""

    __slots__ = ()

    def materialize(self) -> dict[str, Any]:
        raise RuntimeError("cannot be built")


def test_captured_traces_are_built_on_a_sender_thread(collector: LocalCollector) -> None:
    """submit() takes a PendingTrace as it is; a sender thread builds, reads and sends it, and
    on_result sees the trace it became."""
    results: list[Any] = []
    captured = _Captured("built later")
    with make_exporter(collector, on_result=lambda task, _: results.append(task)) as exporter:
        assert exporter.submit(captured)
        assert exporter.flush(5)
        stats = exporter.stats()
    assert captured.built_on and captured.built_on[0].startswith("infinium-exporter-")
    (received,) = collector.traces()
    assert (received.task.name, received.task.duration) == ("built later", 1.5)
    assert stats.coerced == {}  # "1.5" is read as a number: no fix to count
    assert isinstance(results[0], TaskData)
    assert results[0].name == "built later"


def test_a_captured_trace_that_cannot_be_built_is_invalid(collector: LocalCollector) -> None:
    """A trace whose building fails costs that trace (counted invalid), nothing else."""
    with make_exporter(collector) as exporter:
        assert exporter.submit(_Unbuildable())
        assert exporter.submit(trace("fine"))
        assert exporter.flush(5)
        stats = exporter.stats()
    assert (stats.sent, stats.dropped["invalid"]) == (1, 1)
    assert stats.last_error is not None and "cannot be built" in stats.last_error
    assert balanced(stats)


def test_with_a_spool_a_captured_trace_is_built_before_submit_returns(
    collector: LocalCollector, tmp_path: Any
) -> None:
    """The write-ahead needs the trace itself: with a spool it is built on the caller's thread
    and in the spool when submit returns."""
    captured = _Captured("spooled")
    collector.hang_next(1)
    with make_exporter(collector, workers=1, timeout=30.0, spool_dir=tmp_path) as exporter:
        assert exporter.submit(captured)
        assert captured.built_on == [threading.current_thread().name]
        assert exporter.stats().spool_pending_records == 1
        exporter.shutdown(0.2)


def test_a_hanging_request_does_not_hold_the_other_senders_back(collector: LocalCollector) -> None:
    """Pacing starts one trace at a time only while requests are quick: with one hanging, the
    other sender soon delivers the rest."""
    collector.hang_next(1)
    with make_exporter(collector, workers=2, timeout=30.0) as exporter:
        assert all(exporter.submit(trace(f"t{i}")) for i in range(6))
        assert wait_until(lambda: exporter.stats().sent == 5, 5)
        exporter.shutdown(0.2)


def test_a_trace_waiting_to_be_retried_does_not_hold_the_others_back(
    collector: LocalCollector,
) -> None:
    """A sender backing off before a retry lets another sender start on the next traces."""
    collector.fail_next(1, 503)
    with make_exporter(
        collector, workers=2, retry_backoff_base=5.0, retry_backoff_max=5.0
    ) as exporter:
        assert all(exporter.submit(trace(f"t{i}")) for i in range(5))
        assert wait_until(lambda: exporter.stats().sent == 4, 3)
        assert exporter.stats().retries == 1
        exporter.shutdown(0.2)


def test_queued_traces_count_their_memory(collector: LocalCollector) -> None:
    """While queued, a trace counts the memory it holds (about twice its JSON per step), not
    its wire size; once encoded, its body's size."""
    collector.hang_next(1)
    steps = [{"step_number": i, "action": "a", "description": "d"} for i in range(1, 11)]
    with make_exporter(collector, workers=1, timeout=30.0) as exporter:
        assert exporter.submit(trace("stuck"))
        # In flight and at the server: encoded, its size learnt (the request is sent after).
        assert wait_until(lambda: exporter.stats().in_flight == 1 and collector.request_count >= 1)
        sending = exporter.stats().buffered_bytes
        assert exporter.submit({"name": "queued", "steps": steps})
        queued = exporter.stats().buffered_bytes - sending
        exporter.shutdown(0.2)
    assert sending < 200  # the encoded body of "stuck"
    assert queued >= 10 * 2 * 1024  # ten steps at twice the 1 KB a step weighs until learnt


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "plain"},
        {"steps": [{"step_number": 1}] * 3, "input_summary": "in" * 50, "output_summary": "out"},
        {"steps": ({"step_number": 1},) * 2, "input_summary": 7, "output_summary": None},
        {"steps": "not a list", "output_summary": "x" * 300},
    ],
)
def test_a_tagged_event_counts_the_memory_its_dict_would(
    collector: LocalCollector, fields: dict[str, Any]
) -> None:
    """What a handler or processor captured is counted as the dict of fields it carries
    (admission reads it in place, without a call per trace)."""
    collector.hang_next(1)
    with make_exporter(collector, workers=1, timeout=30.0) as exporter:
        assert exporter.submit(trace("stuck"))
        # In flight and at the server: encoded, its size learnt (the request is sent after).
        assert wait_until(lambda: exporter.stats().in_flight == 1 and collector.request_count >= 1)
        before = exporter.stats().buffered_bytes
        assert exporter.submit(fields)
        as_dict = exporter.stats().buffered_bytes - before
        captured = tagged_trace(fields, "m", None, 1.0, None, None, {})
        assert exporter.submit(captured)
        as_captured = exporter.stats().buffered_bytes - before - as_dict
        exporter.shutdown(0.2)
    assert as_captured == as_dict > 0


# --- the inbox of captured traces ----------------------------------------------------------------


def test_captured_traces_waiting_in_the_inbox_are_counted_and_flushed(
    collector: LocalCollector,
) -> None:
    """Captured traces wait in the inbox while every sender is busy; stats() and flush() see
    them at once, in order, and none is lost or counted twice."""
    collector.hang_next(1)
    with make_exporter(collector, workers=1, timeout=0.5, max_retries=1) as exporter:
        assert exporter.submit(trace("first"))
        # In flight and at the server: encoded, its size learnt (the request is sent after).
        assert wait_until(lambda: exporter.stats().in_flight == 1 and collector.request_count >= 1)
        for number in range(5):  # fewer than a batch: the caller does not admit them
            assert exporter.submit(_Captured(f"captured {number}"))
        stats = exporter.stats()
        assert (stats.submitted, stats.queued) == (6, 5)
        assert balanced(stats)
        assert exporter.flush(10)
        stats = exporter.stats()
    names = [received.task.name for received in collector.traces()]
    assert [n for n in names if n.startswith("captured")] == [f"captured {i}" for i in range(5)]
    assert stats.submitted == stats.sent + stats.dropped_total == 6


def test_a_full_buffer_refuses_captured_traces_when_they_are_admitted(
    collector: LocalCollector,
) -> None:
    """The bound holds for captured traces too: those beyond it are counted queue_full."""
    collector.hang_next(1)
    with make_exporter(collector, workers=1, timeout=5.0, max_queue_size=10) as exporter:
        assert exporter.submit(trace("stuck"))
        # In flight and at the server: encoded, its size learnt (the request is sent after).
        assert wait_until(lambda: exporter.stats().in_flight == 1 and collector.request_count >= 1)
        for number in range(100):
            exporter.submit(_Captured(f"captured {number}"))
        stats = exporter.stats()
        exporter.shutdown(0)
    assert stats.submitted == 101
    assert (stats.queued, stats.dropped["queue_full"]) == (10, 90)
    assert balanced(stats)


def test_an_idle_sender_takes_a_captured_trace_at_once(collector: LocalCollector) -> None:
    """With a sender waiting for work, a captured trace is admitted and sent without waiting
    for a batch to fill or for a flush."""
    with make_exporter(collector, workers=1) as exporter:
        assert exporter.submit(_Captured("warm-up"))
        assert wait_until(lambda: collector.accepted_count == 1)
        assert wait_until(lambda: exporter._dispatch.idle == 1)
        assert exporter.submit(_Captured("alone"))
        assert wait_until(lambda: collector.accepted_count == 2, 5)


def test_a_burst_after_a_quiet_spell_wakes_a_sender_once(collector: LocalCollector) -> None:
    """The first trace of a burst wakes an idle sender; the rest wait for it in the inbox
    instead of each taking the lock and waking again while it has not run yet (it needs the
    GIL, which the logging thread holds).  All are delivered without a flush, and a sender
    that went back to sleep is woken by the next trace at once."""
    with make_exporter(collector, workers=2) as exporter:
        assert exporter.submit(_Captured("warm-up"))
        assert wait_until(lambda: collector.accepted_count == 1)
        assert wait_until(lambda: exporter._dispatch.idle == 2)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(30.0)  # the woken sender cannot run during the burst
        try:
            for number in range(20):
                assert exporter.submit(_Captured(f"burst {number}"))
            waiting = len(exporter._inbox)
        finally:
            sys.setswitchinterval(interval)
        assert waiting == 19
        assert wait_until(lambda: collector.accepted_count == 21, 30)
        assert wait_until(lambda: exporter._dispatch.idle == 2)
        assert exporter.submit(_Captured("alone"))
        assert wait_until(lambda: collector.accepted_count == 22, 30)
        # The collector counts a trace before it answers; the sender settles it after.
        assert wait_until(lambda: exporter.stats().sent == 22, 30)
        stats = exporter.stats()
    assert (stats.submitted, stats.sent) == (22, 22)


def test_captured_traces_submitted_after_shutdown_are_counted_closed(
    collector: LocalCollector,
) -> None:
    with make_exporter(collector) as exporter:
        exporter.shutdown(1)
        assert not exporter.submit(_Captured("late"))
        stats = exporter.stats()
    assert (stats.submitted, stats.dropped["closed"]) == (1, 1)


class _Unreadable(Mapping[str, Any]):
    """A mapping that fails when it is read."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("unreadable")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_a_mapping_that_cannot_be_read_is_refused_and_the_batch_goes_on(
    collector: LocalCollector,
) -> None:
    """A trace whose size cannot even be guessed is refused as invalid where it stands in the
    inbox; the captured traces before and after it are admitted and delivered in order."""
    collector.hang_next(1)
    with make_exporter(collector, workers=1, timeout=0.5, max_retries=1) as exporter:
        assert exporter.submit(trace("first"))
        # In flight and at the server: encoded, its size learnt (the request is sent after).
        assert wait_until(lambda: exporter.stats().in_flight == 1 and collector.request_count >= 1)
        assert exporter.submit(_Captured("before"))
        assert exporter.submit(_Unreadable()) is False
        assert exporter.submit(_Captured("after"))
        assert exporter.flush(10)
        stats = exporter.stats()
    assert stats.dropped["invalid"] == 1
    assert [t.task.name for t in collector.traces()][-2:] == ["before", "after"]
    assert balanced(stats)


def test_an_exporter_made_as_the_official_client_is_says_how_it_is_made_here() -> None:
    """``Exporter(agent_id, agent_secret)``, as ``InfiniumClient`` takes them: a TypeError that
    names the keyword arguments, never the secret."""
    with pytest.raises(TypeError, match=r"keyword arguments \(agent_id=") as info:
        Exporter(TEST_AGENT_ID)  # type: ignore[arg-type]
    assert TEST_AGENT_ID not in str(info.value)
