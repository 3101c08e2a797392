"""Reliability 5, fork: a parent and forked children share one spool; every trace arrives once."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.queues
import os
from pathlib import Path
from typing import Any

import pytest
from exporters import balanced
from reliability_support import check_collector, settings_for

from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.handler import InfiniumHandler
from infinium_logging.spool import survey

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHILDREN = 4
EACH = 100


def log_traces(prefix: str, first: int, count: int) -> None:
    log = logging.getLogger("reliability.fork")
    for i in range(first, first + count):
        log.info("work %d", i, extra={"infinium": {"name": f"{prefix}-{i:03}"}})


def child(exporter: Exporter, index: int, results: multiprocessing.queues.SimpleQueue[Any]) -> None:
    """Log 100 traces, wait for them, report the child's own accounts (exit delivers the rest)."""
    log_traces(f"child{index}", 0, EACH)
    delivered = exporter.flush(30)
    stats = exporter.stats()
    results.put(
        {
            "delivered": delivered,
            "submitted": stats.submitted,
            "sent": stats.sent,
            "dropped": stats.dropped_total,
            "spooled": stats.spooled,
            "adopted": stats.adopted,
            "balanced": balanced(stats),
        }
    )


@pytest.mark.slow
def test_a_parent_and_four_forked_children_deliver_500_traces_once(
    infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """The parent logs 100 traces around the forks (some still queued when it forks) and each
    of 4 children (multiprocessing, fork) logs 100: all 500 arrive, each exactly once, and the
    spool is empty afterwards."""
    collector = infinium_collector
    collector.latency = 0.005  # keeps some of the parent's traces queued at each fork
    exporter = Exporter(settings_for(collector, tmp_path, workers=2))
    handler = InfiniumHandler(exporter=exporter)
    log = logging.getLogger("reliability.fork")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    context = multiprocessing.get_context("fork")
    results: multiprocessing.queues.SimpleQueue[Any] = context.SimpleQueue()
    try:
        log_traces("parent", 0, 50)
        at_fork = exporter.stats()
        children = [
            context.Process(target=child, args=(exporter, n, results)) for n in range(CHILDREN)
        ]
        for process in children:
            process.start()
        log_traces("parent", 50, 50)
        for process in children:
            process.join(60)
        reports = [results.get() for _ in range(CHILDREN)]
        assert exporter.flush(30)
        stats = exporter.stats()
    finally:
        log.removeHandler(handler)
        exporter.shutdown(5)
        results.close()
    assert at_fork.queued + at_fork.in_flight > 0  # the children inherited pending traces
    assert [p.exitcode for p in children] == [0] * CHILDREN
    assert all(r["delivered"] and r["balanced"] for r in reports)
    assert [(r["submitted"], r["sent"], r["dropped"], r["adopted"]) for r in reports] == [
        (EACH, EACH, 0, 0)
    ] * CHILDREN
    assert balanced(stats)
    assert (stats.submitted, stats.sent, stats.dropped_total, stats.adopted) == (100, 100, 0, 0)
    expected = [f"parent-{i:03}" for i in range(100)]
    expected += [f"child{n}-{i:03}" for n in range(CHILDREN) for i in range(EACH)]
    counts = check_collector(
        collector, stats.sent + sum(r["sent"] for r in reports), expected=expected
    )
    assert max(counts.values()) == 1
    assert survey(str(tmp_path)) == []
