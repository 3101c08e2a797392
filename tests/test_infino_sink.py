"""The Infino destination against the local endpoint: batches, retries, per-record failures,
stats, and the spool."""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exporters import fork_and_report, trace, wait_until
from infino_server import InfinoServer, fast_settings, running

from infinium_logging.infino import InfinoSink, InfinoStats
from infinium_logging.model import ExecutionStep, LlmCall

DATASET = "infinium-traces"


@pytest.fixture
def infino() -> Iterator[InfinoServer]:
    """A local Infino endpoint."""
    yield from running()


def make_sink(infino: InfinoServer, **overrides: Any) -> InfinoSink:
    """A sink aimed at ``infino`` with fast retries and a short linger."""
    return InfinoSink(**fast_settings(infino, **overrides))


def balanced(stats: InfinoStats) -> bool:
    """Every trace taken is in exactly one place."""
    return stats.submitted + stats.adopted == (
        stats.sent + stats.dropped_total + stats.queued + stats.in_flight + stats.spooled
    )


def test_many_traces_go_in_few_requests(infino: InfinoServer) -> None:
    """500 traces submitted at once arrive in a handful of bulk requests, each stored once."""
    sink = make_sink(infino, max_batch_records=200, linger=30.0)  # batches fill by count
    for number in range(500):
        assert sink.submit(trace(f"t{number}"))
    assert sink.flush(10.0)
    stats = sink.stats()
    assert stats.sent == 500 and stats.rows_sent == 500
    assert len(infino.ids(DATASET)) == 500
    assert 3 <= stats.requests <= 4
    assert max(infino.bulk_sizes) <= 200
    assert balanced(stats)
    sink.shutdown()


def test_a_batch_is_bounded_by_bytes(infino: InfinoServer) -> None:
    """No request carries more than max_batch_bytes of records."""
    sink = make_sink(infino, max_batch_bytes=4096)
    for number in range(40):
        sink.submit(trace(f"t{number}", description="x" * 400))
    assert sink.flush(10.0)
    assert len(infino.ids(DATASET)) == 40
    assert len(infino.bulk_sizes) >= 4
    sink.shutdown()


def test_a_lone_trace_waits_about_linger(infino: InfinoServer) -> None:
    """Without flush, a single trace is sent once it waited ``linger`` seconds."""
    sink = make_sink(infino, linger=0.2)
    sink.submit(trace("alone"))
    assert wait_until(lambda: len(infino.ids(DATASET)) == 1, timeout=10.0)
    sink.shutdown()


def test_steps_dataset_gets_one_row_per_step(infino: InfinoServer) -> None:
    """With a steps dataset, each step is a row there, tied to the trace by trace_id."""
    sink = make_sink(infino, steps_dataset="infinium-steps")
    steps = [
        ExecutionStep(n, "llm", "call", llm_call=LlmCall("m", prompt_tokens=n)) for n in (1, 2)
    ]
    sink.submit(trace("with steps", steps=steps))
    assert sink.flush(10.0)
    (row,) = infino.documents(DATASET)
    step_docs = infino.documents("infinium-steps")
    assert len(step_docs) == 2
    assert {doc["trace_id"] for doc in step_docs} == {row["trace_id"]}
    sink.shutdown()


def test_503_and_429_are_retried_with_new_signatures(infino: InfinoServer) -> None:
    """Failed requests are retried (the endpoint checks every signature) until stored."""
    infino.fail_next.extend([(503, {}), (429, {"Retry-After": "0"}), (502, {})])
    sink = make_sink(infino)
    sink.submit(trace("retried"))
    assert sink.flush(10.0)
    stats = sink.stats()
    assert stats.sent == 1 and stats.retries == 3
    assert infino.bad_signatures == 0
    assert [status for _, _, status in infino.requests] == [503, 429, 502, 200]
    sink.shutdown()


def test_retry_after_is_honoured(infino: InfinoServer) -> None:
    """After a 429 with Retry-After, the next request waits at least that long."""
    infino.fail_next.append((429, {"Retry-After": "0.3"}))
    sink = make_sink(infino, retry_backoff_max=1.0)  # Retry-After is bounded by it
    times: list[float] = []
    original = infino.answer

    def timed(*args: Any) -> Any:
        times.append(time.monotonic())
        return original(*args)

    infino.answer = timed  # type: ignore[method-assign,assignment]
    sink.submit(trace("throttled"))
    assert sink.flush(10.0)
    assert len(times) == 2 and times[1] - times[0] >= 0.29
    sink.shutdown()


def test_transient_item_failures_are_sent_again(infino: InfinoServer) -> None:
    """A record refused for now inside a 200 answer is sent again, alone, and stored once."""
    sink = make_sink(infino, linger=30.0)  # both in one batch, sent by flush
    first, second = trace("first"), trace("second")
    sink.submit(first)
    sink.submit(second)
    # Refuse whichever record comes first, once.
    original = infino._bulk

    def refuse_first_once(dataset: str, body: bytes) -> dict[str, Any]:
        if not infino.item_statuses:
            doc_id = json.loads(body.split(b"\n", 1)[0])["index"]["_id"]
            infino.item_statuses[doc_id] = collections.deque([429])
        return original(dataset, body)

    infino._bulk = refuse_first_once  # type: ignore[method-assign]
    assert sink.flush(10.0)
    stats = sink.stats()
    assert stats.sent == 2 and stats.retries == 1
    assert infino.bulk_sizes == [2, 1]
    assert all(count == 1 for count in infino.writes.values())
    sink.shutdown()


def test_permanent_item_failures_are_counted_by_reason(infino: InfinoServer) -> None:
    """A record refused for good is not retried; it is counted by Infino's error type."""
    infino.refuse = lambda doc: "mapper_parsing_exception" if doc["name"] == "bad" else None
    sink = make_sink(infino, linger=30.0)
    sink.submit(trace("bad"))
    sink.submit(trace("good"))
    assert sink.flush(10.0)
    stats = sink.stats()
    assert stats.sent == 1
    assert stats.dropped["rejected"] == 1
    assert stats.rows_rejected == {"mapper_parsing_exception": 1}
    assert stats.requests == 1
    assert "mapper_parsing_exception" in (stats.last_error or "")
    assert balanced(stats)
    sink.shutdown()


def test_a_bad_signature_is_an_auth_drop_without_the_secret(infino: InfinoServer) -> None:
    """Keys Infino refuses end the batch as ``auth``; the secret is nowhere in the stats."""
    sink = make_sink(infino, secret_key="wrong-secret-value-123")
    sink.submit(trace("refused"))
    assert sink.flush(10.0)
    stats = sink.stats()
    assert stats.dropped["auth"] == 1 and stats.sent == 0
    assert infino.bad_signatures == 1
    assert "wrong-secret-value-123" not in repr(stats) + repr(sink) + repr(sink.settings)
    sink.shutdown()


def test_retries_run_out(infino: InfinoServer) -> None:
    """An endpoint that stays down costs max_retries retries, then the trace is counted."""
    infino.down = True
    sink = make_sink(infino, max_retries=2)
    sink.submit(trace("lost"))
    assert sink.flush(10.0)
    stats = sink.stats()
    assert stats.dropped["retries_exhausted"] == 1 and stats.retries == 2
    assert "503" in (stats.last_error or "")
    assert balanced(stats)
    sink.shutdown()


def test_after_shutdown_submit_is_refused_and_counted(infino: InfinoServer) -> None:
    """A closed sink takes nothing, never raises, and counts it."""
    sink = make_sink(infino)
    assert sink.shutdown(1.0)
    assert sink.submit(trace("late")) is False
    assert sink.stats().dropped["closed"] == 1


def test_shutdown_delivers_what_is_queued(infino: InfinoServer) -> None:
    """Traces still waiting for their batch are sent by shutdown."""
    sink = make_sink(infino, linger=60.0)
    for number in range(5):
        sink.submit(trace(f"t{number}"))
    assert sink.shutdown(5.0)
    assert len(infino.ids(DATASET)) == 5


def test_a_full_queue_refuses_and_counts(infino: InfinoServer) -> None:
    """Past max_queue_size, submit says False and the trace is counted as queue_full."""
    infino.down = True
    sink = make_sink(infino, max_queue_size=2, linger=60.0)
    results = [sink.submit(trace(f"t{number}")) for number in range(3)]
    assert results == [True, True, False]
    assert sink.stats().dropped["queue_full"] == 1
    sink.shutdown(0.1)


def test_an_unreadable_trace_is_counted_not_raised(infino: InfinoServer) -> None:
    """Something that is no trace at all is counted as invalid."""
    sink = make_sink(infino)
    assert sink.submit(object()) in (True, False)
    sink.submit(trace("fine"))
    assert sink.flush(10.0)
    stats = sink.stats()
    assert stats.sent + stats.dropped["invalid"] == 2
    assert balanced(stats)
    sink.shutdown()


def test_spooled_traces_survive_an_outage_and_a_restart(
    infino: InfinoServer, tmp_path: Path
) -> None:
    """With a spool, traces that could not be sent are delivered by the next sink on the same
    directory, with the same _id."""
    infino.down = True
    sink = make_sink(infino, spool_dir=str(tmp_path), max_retries=0)
    for number in range(3):
        sink.submit(trace(f"t{number}"))
    assert sink.flush(10.0)
    assert sink.stats().spooled == 3
    sink.shutdown(0.5)
    infino.down = False
    again = make_sink(infino, spool_dir=str(tmp_path))
    # A sender adopts what the first sink left, as the Infinium exporter's do.
    assert wait_until(lambda: again.stats().adopted == 3, timeout=15.0)
    again.submit(trace("t0"))  # the same trace once more: same _id, no second copy
    assert wait_until(lambda: again.stats().sent == 4, timeout=15.0)
    assert len(infino.ids(DATASET)) == 3
    again.shutdown()


def test_each_dataset_is_a_destination_with_its_own_stats(infino: InfinoServer) -> None:
    """With a steps dataset, a trace is settled once both datasets stored its rows; a trace
    without steps has no record for the steps dataset; each dataset has its own counts."""
    sink = make_sink(infino, steps_dataset="infinium-steps", linger=30.0)
    steps = [ExecutionStep(n, "llm", "call") for n in (1, 2, 3)]
    sink.submit(trace("with steps", steps=steps))
    sink.submit(trace("bare"))
    assert sink.flush(10.0)
    stats = sink.stats()
    assert stats.sent == 2 and stats.rows_sent == 2 + 3 and stats.requests == 2
    each = sink.exporter.stats().destinations
    assert (each["infino"].sent, each["infino-steps"].sent) == (2, 1)
    assert len(infino.documents("infinium-steps")) == 3
    assert balanced(stats)
    sink.shutdown()


def test_a_step_row_refused_for_good_does_not_drop_its_trace(infino: InfinoServer) -> None:
    """The steps dataset refusing a trace's step rows is counted there; the trace, stored in
    the traces dataset, counts as sent."""
    infino.refuse = lambda doc: "mapper_parsing_exception" if "step_number" in doc else None
    sink = make_sink(infino, steps_dataset="infinium-steps")
    sink.submit(trace("steps refused", steps=[ExecutionStep(1, "llm", "call")]))
    assert sink.flush(10.0)
    stats = sink.stats()
    assert stats.sent == 1 and stats.dropped_total == 0
    assert stats.rows_rejected == {"mapper_parsing_exception": 1}
    each = sink.exporter.stats().destinations
    assert each["infino-steps"].rejected == {"mapper_parsing_exception": 1}
    assert len(infino.documents(DATASET)) == 1
    sink.shutdown()


def test_infino_failures_are_not_explained_as_infinium_ones(
    infino: InfinoServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys Infino refuses are counted and kept in last_error, never explained with the
    Infinium exporter's advice about INFINIUM_AGENT_ID."""
    sink = make_sink(infino, secret_key="another-wrong-secret-456")
    with caplog.at_level("DEBUG", logger="infinium_logging"):
        sink.submit(trace("refused"))
        assert sink.flush(10.0)
    assert sink.stats().dropped["auth"] == 1
    assert "AGENT_ID" not in caplog.text
    assert "another-wrong-secret-456" not in caplog.text
    sink.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_starts_empty_and_sends_its_own(infino: InfinoServer) -> None:
    """In a forked child the sink holds none of the parent's traces (they are the parent's
    to send) and delivers its own over a pool of its own: every trace is stored once."""
    sink = make_sink(infino, linger=60.0)  # the parent's traces wait for their batch
    for number in range(5):
        sink.submit(trace(f"parent-{number}"))

    def child() -> dict[str, Any]:
        fresh = sink.stats()
        for number in range(3):
            sink.submit(trace(f"child-{number}"))
        flushed = sink.flush(10.0)
        sent = sink.stats().sent
        sink.shutdown(5.0)
        return {"report": [fresh.submitted, fresh.queued, flushed, sent]}

    report = fork_and_report(child, timeout=30.0)["report"]
    assert sink.flush(10.0)
    assert report == [0, 0, True, 3]
    assert sink.stats().sent == 5
    names = sorted(doc["name"] for doc in infino.documents(DATASET))
    assert names == sorted([f"parent-{n}" for n in range(5)] + [f"child-{n}" for n in range(3)])
    sink.shutdown()
