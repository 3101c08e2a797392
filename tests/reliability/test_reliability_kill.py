"""Reliability 3, kill -9: what a killed process logged is delivered by the next one."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from exporters import balanced, wait_until
from reliability_support import check_collector, child_env, idle, settings_for, settings_literal

from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.spool import survey

EVENTS = 500
KILL_AFTER = 200


@pytest.mark.slow
def test_a_process_killed_mid_stream_loses_nothing_it_logged(
    infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """A child logs 500 tagged events through the stdlib handler with a spool and the collector
    down, and is killed with SIGKILL mid-stream; a new process on the same spool delivers every
    trace the child had logged, each once."""
    collector = infinium_collector
    collector.set_down()
    settings = settings_for(collector, tmp_path, max_retries=1, retry_backoff_max=0.5)
    script = textwrap.dedent(
        f"""
        import logging, sys, time
        from infinium_logging.exporter import Exporter
        from infinium_logging.handler import InfiniumHandler
        from infinium_logging.settings import Settings
        exporter = Exporter({settings_literal(settings)})
        log = logging.getLogger("agent")
        log.setLevel(logging.INFO)
        log.addHandler(InfiniumHandler(exporter=exporter))
        for i in range({EVENTS}):
            log.info("step %d", i, extra={{"infinium": {{"name": f"k{{i:03}}"}}, "i": i}})
            print("logged", i, flush=True)  # the logging call has returned
            time.sleep(0.004)
        print("finished", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    watchdog = threading.Timer(60.0, child.kill)  # a stuck child must not hang the suite
    watchdog.start()
    logged: list[int] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("logged "):
                logged.append(int(line.split()[1]))
                if len(logged) == KILL_AFTER:
                    child.send_signal(signal.SIGKILL)
                    break
        # Lines the child wrote before the signal landed are events it logged too.
        rest, errors = child.communicate(timeout=30)
    finally:
        watchdog.cancel()
    logged += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("logged ")]
    assert child.returncode == -signal.SIGKILL
    assert "finished" not in rest, "the kill came after the end of the stream"
    assert "Traceback" not in errors
    assert logged == list(range(len(logged)))
    [left] = survey(str(tmp_path))
    assert left.live_records == 0  # the dead child holds nothing
    assert len(logged) <= left.records <= len(logged) + 1  # +1: logged, not yet printed

    collector.set_up()
    survivor = Exporter(settings)  # constructed, nothing submitted: the spool starts it
    try:
        assert collector.wait_for(len(logged), timeout=30)
        assert wait_until(lambda: idle(survivor), timeout=30)
        stats = survivor.stats()
    finally:
        survivor.shutdown(5)
    assert balanced(stats)
    assert (stats.submitted, stats.dropped_total, stats.spooled) == (0, 0, 0)
    assert stats.adopted == stats.sent == left.records
    counts = check_collector(collector, stats.sent)
    assert {f"k{i:03}" for i in logged} <= set(counts)
    assert set(counts) <= {f"k{i:03}" for i in range(EVENTS)}
    assert max(counts.values()) == 1  # nothing reached the collector twice
    assert survey(str(tmp_path)) == []
