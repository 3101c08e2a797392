"""The delivery core's batches: an Exporter whose destination takes many records per request
(an Infino dataset on the local bulk endpoint), read record by record; and the batcher's
waiting under an injected clock."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from exporters import balanced, make_exporter, trace, wait_until
from infino_server import ACCESS_KEY, SECRET_KEY, InfinoServer, running

from infinium_logging.admission import Admission
from infinium_logging.collector import LocalCollector
from infinium_logging.delivery import Deadline
from infinium_logging.destination import BatchLimits
from infinium_logging.dispatch import Dispatch
from infinium_logging.exporter import Exporter
from infinium_logging.infino_destination import InfinoDestination
from infinium_logging.infino_settings import InfinoSettings, core_settings
from infinium_logging.ledger import Ledger
from infinium_logging.model import TaskData
from infinium_logging.queued import Item

DATASET = "infinium-traces"


@pytest.fixture
def infino() -> Iterator[InfinoServer]:
    """A local Infino endpoint."""
    yield from running()


def batching_exporter(
    infino: InfinoServer, on_result: Any = None, **overrides: Any
) -> tuple[Exporter, InfinoDestination]:
    """An Exporter delivering to one Infino dataset, fast retries, batches as ``overrides``."""
    values: dict[str, Any] = {
        "endpoint": infino.url,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "linger": 60.0,  # batches go when full, flushed or shut down
        "max_batch_records": 10,
        "retry_backoff_base": 0.01,
        "retry_backoff_max": 0.05,
        "requests_per_second": 1000.0,
        "burst_size": 1000,
    }
    values.update(overrides)
    settings = InfinoSettings(**values)
    destination = InfinoDestination(settings)
    exporter = Exporter(core_settings(settings), destinations=[destination], on_result=on_result)
    return exporter, destination


def _ids(body: bytes) -> list[str]:
    """The ``_id`` of each row of a bulk body, in order."""
    return [json.loads(line)["index"]["_id"] for line in body.split(b"\n")[::2] if line]


def test_partial_results_settle_each_trace_on_its_own(infino: InfinoServer) -> None:
    """One request of three records, one refused for good: two sent (on_result told their
    answer), one dropped as rejected and counted under Infino's reason for it."""
    infino.refuse = lambda doc: "mapper_parsing_exception" if doc["name"] == "bad" else None
    told: list[tuple[str, bool, Any]] = []
    exporter, _ = batching_exporter(
        infino,
        on_result=lambda task, response: told.append((task.name, response.success, response.data)),
    )
    for name in ("good-1", "bad", "good-2"):
        assert exporter.submit(trace(name))
    assert exporter.flush(10.0)
    stats = exporter.stats()
    assert stats.sent == 2 and stats.dropped["rejected"] == 1
    assert stats.destinations["infino"].sent == 2
    assert stats.destinations["infino"].rejected == {"mapper_parsing_exception": 1}
    assert "mapper_parsing_exception" in (stats.last_error or "")
    assert infino.bulk_sizes == [3]
    assert sorted((name, ok) for name, ok, _ in told) == [
        ("bad", False),
        ("good-1", True),
        ("good-2", True),
    ]
    assert [data["reason"] for name, _, data in told if name == "bad"] == ["rejected"]
    assert balanced(stats)
    exporter.shutdown()


def test_records_refused_for_now_are_sent_again_alone(infino: InfinoServer) -> None:
    """A record a 200 answer refuses for now goes again, without the others, and is stored
    once; its retry is counted."""
    exporter, _ = batching_exporter(infino)
    original = infino._bulk

    def refuse_second_once(dataset: str, body: bytes) -> dict[str, Any]:
        if not infino.item_statuses:
            infino.item_statuses[_ids(body)[1]] = collections.deque([429])
        return original(dataset, body)

    infino._bulk = refuse_second_once  # type: ignore[method-assign]
    for name in ("a", "b", "c"):
        exporter.submit(trace(name))
    assert exporter.flush(10.0)
    stats = exporter.stats()
    assert stats.sent == 3 and stats.retries == 1
    assert stats.destinations["infino"].retries == 1
    assert infino.bulk_sizes == [3, 1]
    assert all(count == 1 for count in infino.writes.values())
    assert balanced(stats)
    exporter.shutdown()


def test_records_refused_for_now_run_out_of_retries_on_their_own(infino: InfinoServer) -> None:
    """A record refused for now every time is dropped after its own max_retries; the others
    of its batch are sent."""
    exporter, _ = batching_exporter(infino, max_retries=2)
    original = infino._bulk
    stubborn: list[str] = []

    def always_refuse_one(dataset: str, body: bytes) -> dict[str, Any]:
        if not stubborn:
            stubborn.append(_ids(body)[0])
        infino.item_statuses[stubborn[0]] = collections.deque([503])
        return original(dataset, body)

    infino._bulk = always_refuse_one  # type: ignore[method-assign]
    for name in ("x", "y"):
        exporter.submit(trace(name))
    assert exporter.flush(10.0)
    stats = exporter.stats()
    assert stats.sent == 1 and stats.dropped["retries_exhausted"] == 1
    assert infino.bulk_sizes == [2, 1, 1] and stats.retries == 2
    assert balanced(stats)
    exporter.shutdown()


def test_a_batch_fills_by_count(infino: InfinoServer) -> None:
    """With a long delay, traces go in requests of max_records as soon as that many wait;
    the rest when flushed."""
    exporter, _ = batching_exporter(infino, max_batch_records=5)
    for number in range(12):
        assert exporter.submit(trace(f"t{number}"))
    assert wait_until(lambda: len(infino.ids(DATASET)) == 10, timeout=10.0)
    assert infino.bulk_sizes == [5, 5]
    assert exporter.flush(10.0)
    assert infino.bulk_sizes == [5, 5, 2]
    exporter.shutdown()


def test_a_batch_is_bounded_by_bytes(infino: InfinoServer) -> None:
    """No request carries more than max_bytes of records, whatever max_records allows."""
    exporter, destination = batching_exporter(infino, max_batch_records=100, max_batch_bytes=4096)
    sizes: list[int] = []
    original = infino._bulk

    def measured(dataset: str, body: bytes) -> dict[str, Any]:
        sizes.append(len(body))
        return original(dataset, body)

    infino._bulk = measured  # type: ignore[method-assign]
    for number in range(30):
        exporter.submit(trace(f"t{number}", description="x" * 400))
    assert exporter.flush(10.0)
    assert len(infino.ids(DATASET)) == 30
    assert len(sizes) >= 4 and max(sizes) <= destination.limits.max_bytes
    exporter.shutdown()


def test_flush_sends_a_batch_still_filling(infino: InfinoServer) -> None:
    """flush() does not wait for a batch to fill or for its delay: one request, at once."""
    exporter, _ = batching_exporter(infino, max_batch_records=100)
    for number in range(3):
        exporter.submit(trace(f"t{number}"))
    assert exporter.flush(10.0)
    assert infino.bulk_sizes == [3]
    exporter.shutdown()


def test_shutdown_sends_a_batch_still_filling(infino: InfinoServer) -> None:
    """shutdown() sends what waits for its batch to fill, within its deadline."""
    exporter, _ = batching_exporter(infino, max_batch_records=100)
    for number in range(4):
        exporter.submit(trace(f"t{number}"))
    assert exporter.shutdown(5.0)
    assert infino.bulk_sizes == [4]
    assert exporter.stats().sent == 4


def test_shutdown_deadline_counts_a_batch_it_could_not_send(infino: InfinoServer) -> None:
    """Against an endpoint that stays down, shutdown returns at its deadline and counts the
    waiting batch as lost to ``shutdown``."""
    infino.down = True
    exporter, _ = batching_exporter(
        infino,
        max_batch_records=100,
        max_retries=100,  # retries never run out before the deadline
        retry_backoff_base=0.2,
        retry_backoff_max=0.2,
    )
    for number in range(3):
        exporter.submit(trace(f"t{number}"))
    assert exporter.shutdown(0.5) is False
    stats = exporter.stats()
    assert stats.dropped["shutdown"] == 3 and stats.sent == 0
    assert balanced(stats)


def test_one_trace_per_request_keeps_its_own_stats(infinium_collector: LocalCollector) -> None:
    """The Infinium destination (one trace per request) reports under its name what the
    top level says."""
    exporter = make_exporter(infinium_collector)
    exporter.submit(trace("one"))
    assert exporter.flush(10.0)
    stats = exporter.stats()
    mine = stats.destinations["infinium"]
    assert (mine.sent, mine.retries, mine.bytes_sent) == (1, 0, stats.bytes_sent)
    exporter.shutdown()


# --- the batcher's waiting, under an injected clock -------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _dispatch(clock: _Clock) -> tuple[Dispatch, Admission]:
    ledger = Ledger(threading.RLock())
    admission = Admission(ledger, max_items=100, max_bytes=1 << 20)
    return Dispatch(admission, None, Deadline(), lambda: False, clock=clock), admission


def _add(dispatch: Dispatch, task: TaskData) -> None:
    with dispatch.ledger.lock:
        dispatch.admission.inbox.append(task)
        dispatch.admit_locked()


def test_a_batch_waits_at_most_max_delay() -> None:
    """A lone trace waits for others until max_delay has passed since it was seen; the next
    trace admitted after that goes with it."""
    clock = _Clock()
    dispatch, _ = _dispatch(clock)
    limits = BatchLimits(max_records=10, max_bytes=1 << 20, max_delay=60.0)
    taken: list[list[Item] | None] = []
    done = threading.Event()

    def worker() -> None:
        taken.append(dispatch.take_batch(limits))
        done.set()

    _add(dispatch, trace("first"))
    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    assert wait_until(lambda: dispatch.idle == 1, timeout=10.0)  # waiting for the batch
    clock.now += 30.0
    _add(dispatch, trace("second"))  # wakes it: 30 s of 60, it waits on
    assert wait_until(lambda: dispatch.idle == 1 and len(dispatch.ledger.queue) == 2, 10.0)
    assert not done.is_set()
    clock.now += 30.0
    _add(dispatch, trace("third"))
    assert done.wait(10.0)
    (batch,) = taken
    assert batch is not None
    assert [item.task.name for item in batch] == ["first", "second", "third"]
    assert len(dispatch.ledger.in_flight) == 3


def test_a_batch_goes_when_max_bytes_wait() -> None:
    """Traces counted at max_bytes or more make a batch without waiting for the delay (the
    requests are cut by their records' own bytes, see test_a_batch_is_bounded_by_bytes),
    and a batch takes no more than max_records of them."""
    clock = _Clock()
    dispatch, _ = _dispatch(clock)
    for name in ("a", "b", "c"):
        _add(dispatch, trace(name))
    one = dispatch.ledger.queue[0].size
    limits = BatchLimits(max_records=10, max_bytes=2 * one, max_delay=60.0)
    batch = dispatch.take_batch(limits)  # due at once: no thread, no clock moved
    assert batch is not None and [item.task.name for item in batch] == ["a", "b", "c"]
    assert not dispatch.ledger.queue
    _add(dispatch, trace("d"))
    _add(dispatch, trace("e"))
    limits = BatchLimits(max_records=1, max_bytes=1 << 20, max_delay=60.0)
    batch = dispatch.take_batch(limits)
    assert batch is not None and [item.task.name for item in batch] == ["d"]
