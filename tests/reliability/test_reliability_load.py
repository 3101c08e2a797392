"""Reliability 7, load: 100,000 tagged events at full speed against a slow collector."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from reliability_support import (
    STATS_PRINTER,
    check_collector,
    child_accounted,
    child_env,
    reported,
    run_child,
    settings_for,
    settings_literal,
)

from infinium_logging.collector import LocalCollector
from infinium_logging.spool import survey

EVENTS = 100_000
LATENCY = 2.0  # the collector answers each request after two seconds
MAX_QUEUE_BYTES = 4 * 1024 * 1024
#: Headroom for the interpreter itself (allocator arenas, caches, thread stacks).
SLACK = 32 * 1024 * 1024
#: Memory the spool's index holds per record waiting in it (measured: about 260 bytes).
PER_SPOOLED = 400


@pytest.mark.slow
@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "memory-only"])
def test_load_never_waits_on_the_network_stays_bounded_and_accounts_for_every_event(
    infinium_collector: LocalCollector, tmp_path: Path, spooled: bool
) -> None:
    """A child logs 100,000 tagged events as fast as it can while the collector takes a second
    per request: no logging call waits on the network, the resident memory grows by no more
    than the configured queue bound (plus the spool's small per-record index), and every event
    is accounted for as sent, dropped with a reason, or left in the spool."""
    collector = infinium_collector
    collector.latency = LATENCY
    spool_dir = tmp_path / "spool" if spooled else None
    settings = settings_for(
        collector,
        spool_dir,
        workers=2,
        max_queue_size=1000,
        max_queue_bytes=MAX_QUEUE_BYTES,
        shutdown_timeout=1.5,
    )
    script = textwrap.dedent(
        f"""
        import json, logging, resource, time
        from infinium_logging.exporter import Exporter
        from infinium_logging.handler import InfiniumHandler
        from infinium_logging.settings import Settings
        {textwrap.indent(STATS_PRINTER, "        ").strip()}
        def rss():  # resident set size now, in bytes
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize()
        exporter = Exporter({settings_literal(settings)})
        log = logging.getLogger("agent")
        log.setLevel(logging.INFO)
        log.propagate = False
        log.addHandler(InfiniumHandler(exporter=exporter))
        def event(i):
            log.info("tool call %d done", i, extra={{"infinium": {{"name": f"e{{i:06}}"}},
                     "tool": "search", "query": "q" * 200, "hits": i % 17}})
        for i in range(10):  # warm up: threads, the pool, caches, the first spool segment
            event(i)
        base = peak = rss()
        slowest = 0.0
        started = time.perf_counter()
        for i in range(10, {EVENTS}):
            t0 = time.perf_counter()
            event(i)
            slowest = max(slowest, time.perf_counter() - t0)
            if i % 500 == 0:
                peak = max(peak, rss())
        took = time.perf_counter() - started
        peak = max(peak, rss())
        print_stats("LOGGED", exporter)
        print("LOAD", json.dumps({{"base": base, "peak": peak, "slowest": slowest, "took": took}}),
              flush=True)
        exporter.shutdown()
        print_stats("STATS", exporter)
        """
    )
    result = run_child(script, timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    load = reported(result.stdout, "LOAD")
    logged = reported(result.stdout, "LOGGED")
    final = reported(result.stdout, "STATS")

    # The caller never waited on the network: no call took anywhere near one request's latency.
    assert load["slowest"] < LATENCY / 2
    assert load["took"] < EVENTS / 1000 * LATENCY  # not even one wait per 1000 events

    # Memory stayed within the queue's bound (plus the spool's index of what waits there).
    bound = MAX_QUEUE_BYTES + SLACK + (PER_SPOOLED * logged["spooled"] if spooled else 0)
    assert load["peak"] - load["base"] <= bound, (load, logged["spooled"])

    # Every event accounted for, and the collector agrees.
    assert final["submitted"] == EVENTS
    assert child_accounted(logged) and child_accounted(final)
    assert final["queued"] == final["in_flight"] == 0
    if spooled:
        assert sum(final["dropped"].values()) == 0
        assert final["spool_write_errors"] == 0
        [left] = survey(str(spool_dir))
        # A request that succeeds while shutdown closes the spool is counted as sent, and its
        # record stays for the next start (at-least-once: a duplicate): one per sender at most.
        assert 0 <= left.records - final["spooled"] <= settings.workers
        assert final["spooled"] > 90_000
    else:
        assert final["spooled"] == 0
        assert final["dropped"]["queue_full"] > 90_000
    # A request in flight at the shutdown deadline is stored (before the delay) but not
    # counted as sent: at most one per sender thread.
    check_collector(collector, final["sent"], late=settings.workers)
    assert final["sent"] > 0


FIRST_CONVERSIONS = """
import threading
import infinium_logging
from infinium_logging.convert import to_task
trace = {"name": "t", "description": "d", "current_datetime": "2026-01-01T00:00:00Z",
         "duration": 1.0, "steps": [{"step_number": 1, "action": "tool_use", "description": "s",
         "llm_call": {"model": "m", "prompt_tokens": 1}}], "llm_usage": {"total_tokens": 1}}
start = threading.Barrier(4)
def convert():
    start.wait()
    to_task(trace, strict=False)
threads = [threading.Thread(target=convert) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_first_conversions_on_four_threads_at_once_never_crash_the_interpreter() -> None:
    """Fresh interpreters in which four threads convert their first trace at the same instant,
    as the sender threads do under load, all exit cleanly.  msgspec builds a type's conversion
    tables on first use and crashes (SIGSEGV) when threads race to do that; the package builds
    them at import, before any thread can."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_CONVERSIONS],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(12)
    ]
    outcomes = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0] * 12, outcomes
