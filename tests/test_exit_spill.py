"""The exit spill: what exit cannot send goes to a private per-user cache directory, one folder
per base URL and agent, and the agent's next exporter sends it by itself."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from exit_support import child_env, names, run_script, spill_dir, spill_settings, wait_until

from infinium_logging import spill
from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.settings import Settings
from infinium_logging.testing import TEST_AGENT_ID

EVENTS = 40

SCRIPT = f"""
import logging
from infinium_logging import InfiniumHandler
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(InfiniumHandler())
for i in range({EVENTS}):
    log.info("event %d", i, extra={{"infinium": {{"name": f"s{{i:02}}"}}}})
"""


def test_the_next_exporter_of_the_agent_sends_what_exit_left(
    tmp_path: Path, infinium_collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script whose exit deadline is too short for its traces: they land in
    ``$XDG_CACHE_HOME/infinium-logging/spool/<base URL>/<agent>``, private to the user; an
    Exporter of the same agent made later sends them all, without being asked."""
    cache = tmp_path / "cache"
    result = run_script(
        tmp_path,
        SCRIPT,
        child_env(infinium_collector, cache, INFINIUM_SHUTDOWN_TIMEOUT="0.3"),
    )
    assert result.returncode == 0, result.stderr
    before = len(names(infinium_collector))
    assert before < EVENTS
    directory = spill_dir(infinium_collector, cache)
    assert directory.parent == cache / "infinium-logging" / "spool"
    agent = directory / TEST_AGENT_ID
    assert any(p.suffix == ".log" for p in agent.iterdir())
    for folder in (cache / "infinium-logging", directory.parent, directory, agent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    exporter = Exporter(spill_settings(infinium_collector).replace(enable_rate_limiting=False))
    try:
        wait_until(lambda: len(names(infinium_collector)) == EVENTS, 30, "the spill replayed")
    finally:
        exporter.shutdown(timeout=1.0)
    assert names(infinium_collector) == {f"s{i:02}" for i in range(EVENTS)}
    wait_until(lambda: not any(p.suffix == ".log" for p in agent.iterdir()), 10, "records acked")


def test_one_folder_per_base_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two base URLs never share a spill (a trace goes back where it was meant to go); a
    relative XDG_CACHE_HOME is ignored, as the XDG specification says."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    one = Settings(agent_id=TEST_AGENT_ID, agent_secret="x" * 16, base_url="http://127.0.0.1:1")
    two = one.replace(base_url="http://127.0.0.1:2")
    assert spill.default_spool_dir(one) != spill.default_spool_dir(two)
    assert spill.default_spool_dir(one).startswith(str(tmp_path / "infinium-logging" / "spool"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    assert spill.default_spool_dir(one).startswith(str(Path.home() / ".cache"))


def test_off_when_asked_or_when_a_spool_is_configured(tmp_path: Path) -> None:
    """``exit_spool=False``, a configured spool (it already holds everything) and a disabled
    exporter: nothing to spill."""
    base = Settings(agent_id=TEST_AGENT_ID, agent_secret="x" * 16)
    for settings in (
        base.replace(exit_spool=False),
        base.replace(spool_dir=str(tmp_path)),
        base.replace(disabled=True),
    ):
        assert spill._where(settings) is None
    assert spill._where(base) is not None


def test_exit_stays_within_the_deadline_with_a_spill(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """Writing the spill costs milliseconds: the script ends within its deadline plus a
    second (the interpreter's start is measured apart)."""
    # Registered before the library's exit hook, so it runs after it.
    body = (
        "import atexit, time\n"
        "atexit.register(lambda: print('TOOK', time.monotonic() - ended, flush=True))\n"
        + SCRIPT
        + "ended = time.monotonic()\n"
    )
    result = run_script(
        tmp_path, body, child_env(infinium_collector, tmp_path / "c", INFINIUM_SHUTDOWN_TIMEOUT="1")
    )
    assert result.returncode == 0, result.stderr
    took = float(result.stdout.split("TOOK")[1])
    assert 0.5 < took < 1 + 1  # it did wait for the throttle, and not much longer


def test_without_a_writable_disk_what_is_left_is_counted_as_before(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """A cache directory that cannot be created (here under /proc): the exit is not held up,
    what is left is counted as ``shutdown`` and said, and the reason is logged."""
    body = "import logging, sys\nlogging.basicConfig(stream=sys.stderr)\n" + SCRIPT
    env = child_env(infinium_collector, tmp_path / "unused", INFINIUM_SHUTDOWN_TIMEOUT="0.3")
    env["XDG_CACHE_HOME"] = "/proc/no-such-cache"
    result = run_script(tmp_path, body, env)
    assert result.returncode == 0, result.stderr
    assert "could not open the exit spool in /proc/no-such-cache" in result.stderr
    assert "shutdown=" in result.stderr


def test_replay_command_sends_the_exit_spill(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """``infinium-logging replay`` without a spool directory sends what exits left in the
    user's cache directory for the agent and base URL."""
    cache = tmp_path / "cache"
    env = child_env(infinium_collector, cache, INFINIUM_SHUTDOWN_TIMEOUT="0.3")
    assert run_script(tmp_path, SCRIPT, env).returncode == 0
    assert len(names(infinium_collector)) < EVENTS
    done = subprocess.run(
        [sys.executable, "-m", "infinium_logging", "replay"],
        env={**env, "INFINIUM_ENABLE_RATE_LIMITING": "false"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert str(spill_dir(infinium_collector, cache)) in done.stdout
    assert names(infinium_collector) == {f"s{i:02}" for i in range(EVENTS)}
