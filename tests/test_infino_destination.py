"""InfinoDestination behind the destination seam: records, bodies, signed posts, per-record
results, and a Delivery through it."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest
from exporters import trace
from infino_server import ACCESS_KEY, SECRET_KEY, InfinoServer, running

from infinium_logging.delivery import Deadline, Delivery
from infinium_logging.destination import Destination
from infinium_logging.errors import ValidationError
from infinium_logging.infino_destination import InfinoDestination, record_ids
from infinium_logging.infino_settings import InfinoSettings
from infinium_logging.model import ExecutionStep
from infinium_logging.retry import RetryPolicy
from infinium_logging.throttle import TokenBucket


@pytest.fixture
def infino() -> Iterator[InfinoServer]:
    """A local Infino endpoint."""
    yield from running()


def _settings(infino: InfinoServer) -> InfinoSettings:
    return InfinoSettings(
        endpoint=infino.url,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        steps_dataset="steps",
        max_batch_records=50,
        linger=0.5,
    )


def test_it_is_a_destination(infino: InfinoServer) -> None:
    """It satisfies the seam's protocol, with its batch limits from the settings."""
    destination: Destination = InfinoDestination(_settings(infino))
    assert destination.name == "infino"
    assert destination.limits.max_records == 50 and destination.limits.max_delay == 0.5
    assert InfinoDestination(_settings(infino), steps=True).name == "infino-steps"


def test_records_are_the_same_for_the_same_trace(infino: InfinoServer) -> None:
    """encode() gives the same bytes (and _id) for the same trace, whenever it runs."""
    destination = InfinoDestination(_settings(infino))
    assert destination.encode(trace("a")) == destination.encode(trace("a"))
    assert record_ids(destination.encode(trace("a"))) != record_ids(destination.encode(trace("b")))


def test_a_trace_without_steps_has_no_steps_record(infino: InfinoServer) -> None:
    """The steps destination has nothing for a trace without steps."""
    with pytest.raises(ValidationError):
        InfinoDestination(_settings(infino), steps=True).encode(trace("bare"))


def test_results_per_record_of_a_steps_body(infino: InfinoServer) -> None:
    """A record of several step rows is sent when all are stored, retried when one is refused
    for now, rejected (with Infino's reason) when one is refused for good."""
    destination = InfinoDestination(_settings(infino), steps=True)
    traces = [
        trace(name, steps=[ExecutionStep(1, "a", "x"), ExecutionStep(2, "b", name)])
        for name in ("ok", "busy", "bad")
    ]
    records = [destination.encode(t) for t in traces]
    busy_id = record_ids(records[1])[1]
    infino.item_statuses[busy_id] = collections.deque([503])
    infino.refuse = lambda doc: "mapper_parsing_exception" if doc["description"] == "bad" else None
    response = destination.post(destination.frame(records), timeout=5.0)
    verdicts = [(r.verdict, r.reason) for r in destination.results(response, 3)]
    assert verdicts == [("sent", ""), ("retry", ""), ("reject", "mapper_parsing_exception")]
    assert len(infino.ids("steps")) == 4  # all but the two refused rows


def test_a_delivery_through_it_retries_a_503_with_a_fresh_signature(infino: InfinoServer) -> None:
    """The seam's Delivery makes the attempts; each is signed again and checked by botocore."""
    destination = InfinoDestination(_settings(infino))
    infino.fail_next.append((503, {}))
    delivery = Delivery(
        destination,
        RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02),
        TokenBucket(100.0, 10),
        Deadline(),
        5.0,
    )
    outcome = delivery.deliver(destination.frame([destination.encode(trace("t"))]))
    assert outcome.reason == "sent"
    assert [status for _, _, status in infino.requests] == [503, 200]
    assert infino.bad_signatures == 0
