"""Reliability 4, exit: a process ends normally while the server hangs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from exporters import balanced, wait_until
from reliability_support import (
    STATS_PRINTER,
    check_collector,
    child_accounted,
    idle,
    reported,
    run_child,
    settings_for,
    settings_literal,
)

from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.spool import survey

EVENTS = 20
SHUTDOWN_TIMEOUT = 1.0
#: Allowance for interpreter teardown on a busy machine (the deadline itself is exact).
EPSILON = 0.75


@pytest.mark.slow
@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "memory-only"])
def test_exit_with_a_hanging_server_keeps_its_deadline_and_its_accounts(
    infinium_collector: LocalCollector, tmp_path: Path, spooled: bool
) -> None:
    """The child exits within shutdown_timeout; what it could not deliver is left in the spool
    (delivered by the next start) with a spool, and counted as dropped without one."""
    collector = infinium_collector
    collector.hang_next(10_000)
    spool_dir = tmp_path / "spool" if spooled else None
    # Memory-only means no disk at all: no exit spill either (tests/test_exit_spill.py).
    settings = settings_for(
        collector,
        spool_dir,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        timeout=30.0,
        workers=2,
        exit_spool=spooled,
    )
    script = textwrap.dedent(
        f"""
        import atexit, logging, time
        {textwrap.indent(STATS_PRINTER, "        ").strip()}
        ended = []
        # Registered before the library's own exit hook (made when it is imported), so they
        # run after it: STATS, then EXIT_TOOK.
        atexit.register(lambda: print("EXIT_TOOK", time.monotonic() - ended[0], flush=True))
        atexit.register(lambda: print_stats("STATS", exporter))
        from infinium_logging.exporter import Exporter
        from infinium_logging.handler import InfiniumHandler
        from infinium_logging.settings import Settings
        exporter = Exporter({settings_literal(settings)})
        log = logging.getLogger("agent")
        log.setLevel(logging.INFO)
        log.addHandler(InfiniumHandler(exporter=exporter))
        for i in range({EVENTS}):
            log.info("event %d", i, extra={{"infinium": {{"name": f"x{{i:02}}"}}}})
        time.sleep(0.3)  # the first requests are out, hanging
        ended.append(time.monotonic())
        """
    )
    result = run_child(script)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    took = reported(result.stdout, "EXIT_TOOK")
    assert took <= SHUTDOWN_TIMEOUT + EPSILON
    child = reported(result.stdout, "STATS")
    assert child_accounted(child)
    assert child["submitted"] == EVENTS
    assert child["sent"] == 0
    assert collector.faults["hang"] >= 1
    assert collector.accepted_count == 0  # a hanging request stores nothing

    if not spooled:
        assert child["dropped"]["shutdown"] == EVENTS
        check_collector(collector, 0)
        return
    assert child["spooled"] == EVENTS
    assert sum(child["dropped"].values()) == 0
    [left] = survey(str(spool_dir))
    assert (left.records, left.orphaned_records) == (EVENTS, EVENTS)

    collector.reset_faults()  # the server answers again
    with Exporter(settings) as survivor:
        assert wait_until(lambda: idle(survivor) and survivor.stats().sent == EVENTS, 30)
        stats = survivor.stats()
    assert balanced(stats)
    assert (stats.adopted, stats.sent, stats.dropped_total) == (EVENTS, EVENTS, 0)
    check_collector(collector, stats.sent, expected=[f"x{i:02}" for i in range(EVENTS)])
    assert survey(str(spool_dir)) == []
