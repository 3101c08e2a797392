"""Redaction of the exit spill: what exit leaves undelivered is written to disk redacted."""

from __future__ import annotations

from pathlib import Path

from exit_support import child_env, run_script, spill_dir
from test_redact_delivery import CARRIER, leaks

from infinium_logging.collector import LocalCollector
from infinium_logging.testing import TEST_AGENT_ID

EVENTS = 40

SCRIPT = f"""
import logging
from infinium_logging import InfiniumHandler
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(InfiniumHandler())
for i in range({EVENTS}):
    log.info("event %d %s", i, {CARRIER!r}, extra={{"infinium": {{"name": f"s{{i:02}}"}}}})
"""


def test_the_exit_spill_never_holds_a_seeded_secret(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """A script whose exit deadline is too short for its traces, each logged with a secret of
    every kind: the traces it spills to the cache directory hold none of them (nor does what
    it sent)."""
    cache = tmp_path / "cache"
    result = run_script(
        tmp_path, SCRIPT, child_env(infinium_collector, cache, INFINIUM_SHUTDOWN_TIMEOUT="0.3")
    )
    assert result.returncode == 0, result.stderr
    agent = spill_dir(infinium_collector, cache) / TEST_AGENT_ID
    held = b"".join(p.read_bytes() for p in agent.iterdir() if p.suffix == ".log")
    assert held, "exit left traces to spill"
    assert leaks(held) == []
    assert leaks(result.stderr) == []
    for trace in infinium_collector.traces():
        assert leaks(trace.body) == []
