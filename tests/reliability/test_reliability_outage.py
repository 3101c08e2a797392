"""Reliability 2, outage: the collector is down for 5 s while traces keep coming."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from exporters import balanced, wait_until
from reliability_support import check_collector, idle, settings_for

from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.model import TaskData

OUTAGE = 5.0
TRACES = 250


@pytest.mark.slow
@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "memory-only"])
def test_an_outage_loses_nothing_with_a_spool_and_only_counted_traces_without(
    infinium_collector: LocalCollector, tmp_path: Path, spooled: bool
) -> None:
    """Down for 5 s, then up: with a spool every trace arrives once; without one, what did not
    arrive is exactly what the exporter counted as dropped (by reason)."""
    collector = infinium_collector
    settings = settings_for(
        collector,
        tmp_path if spooled else None,
        max_retries=2,
        retry_backoff_max=0.2,
        max_queue_size=50,
    )
    expected = [f"o{i:03}" for i in range(TRACES)]
    exporter = Exporter(settings)
    try:
        for name in expected[:10]:  # delivered before the outage
            assert exporter.submit(TaskData(name, "before", "2026-01-01T00:00:00Z", 0.1))
        # Settled on both sides before the outage starts: an answer cut off by set_down()
        # would make a legitimate duplicate.
        assert wait_until(lambda: exporter.stats().sent == 10, timeout=10)
        collector.set_down()
        down_at = time.monotonic()
        # The rest trickle in during the outage (about 50 a second): the queue of 50 fills,
        # retries run out.
        for index, name in enumerate(expected[10:]):
            exporter.submit({"name": name, "description": "during the outage"})
            time.sleep(max(0.0, down_at + index * (OUTAGE - 0.5) / TRACES - time.monotonic()))
        during = exporter.stats()
        time.sleep(max(0.0, down_at + OUTAGE - time.monotonic()))
        collector.set_up()
        assert wait_until(lambda: idle(exporter), timeout=30)
        stats = exporter.stats()
    finally:
        exporter.shutdown(2)
    assert balanced(during) and balanced(stats)
    assert stats.submitted == TRACES
    assert during.sent == 10  # nothing got through while the collector was down
    if spooled:
        assert (stats.sent, stats.dropped_total, stats.spooled) == (TRACES, 0, 0)
        assert during.spooled > 0  # queue full and retries exhausted: kept, not dropped
        check_collector(collector, stats.sent, expected=expected)
    else:
        assert stats.dropped_total > 0
        assert stats.dropped["queue_full"] + stats.dropped["retries_exhausted"] == (
            stats.dropped_total
        )
        counts = check_collector(collector, stats.sent)
        lost = set(expected) - set(counts)
        assert len(lost) == stats.dropped_total == TRACES - stats.sent
