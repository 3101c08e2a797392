"""Reliability 1, chaos: 503s, 429s and dropped connections; with a spool every trace arrives."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from exporters import balanced, wait_until
from reliability_support import check_collector, idle, settings_for

from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.model import TaskData

THREADS = 4
PER_THREAD = 500


@pytest.mark.slow
def test_chaos_every_trace_arrives_and_only_resets_after_accepting_duplicate(
    infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """2,000 traces from 4 threads through 30% 503, 10% 429 (Retry-After: 1) and 5% dropped
    connections (3% before the collector stored the trace, 2% after): all arrive, and a trace
    arrives twice only when the collector reset the connection after storing it."""
    collector = infinium_collector
    collector.chaos(
        20260,
        p503=0.30,
        p429=0.10,
        p_reset=0.03,
        p_reset_after_accept=0.02,
        retry_after=1,
    )
    # Retry-After is honoured up to retry_backoff_max (0.02 s here): every 429 pauses all the
    # senders, and at 1 s each the test would take minutes.  max_retries=2 makes many traces
    # run out of retries: they must come back from the spool instead of being lost.
    settings = settings_for(
        collector, tmp_path, max_retries=2, max_queue_size=400, retry_backoff_max=0.02
    )
    expected = [f"c{n}-{i}" for n in range(THREADS) for i in range(PER_THREAD)]
    with Exporter(settings) as exporter:

        def produce(n: int) -> None:
            for i in range(PER_THREAD):
                name = f"c{n}-{i}"
                # Half typed traces (encoded on this thread), half dicts (read leniently).
                if i % 2:
                    assert exporter.submit(TaskData(name, "chaos", "2026-01-01T00:00:00Z", 0.5))
                else:
                    assert exporter.submit({"name": name, "description": "chaos"})

        producers = [threading.Thread(target=produce, args=(n,)) for n in range(THREADS)]
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join()
        assert wait_until(lambda: idle(exporter), timeout=90)
        stats = exporter.stats()

    assert balanced(stats)
    assert (stats.submitted, stats.sent, stats.dropped_total, stats.spooled) == (2000, 2000, 0, 0)
    assert stats.dropped["retries_exhausted"] == 0  # with a spool, not a loss
    faults = collector.faults
    assert faults["http_503"] > 0 and faults["http_429"] > 0 and faults["drop"] > 0
    assert faults["drop_after_accept"] > 0
    counts = check_collector(collector, stats.sent, expected=expected)
    assert all(n == 1 for n in counts.values()) or faults["drop_after_accept"] > 0
    assert stats.spool_pending_records == 0
