"""Shared by the exit, signal and recipe tests: children pointed at a collector, spills counted."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import infinium_logging
from infinium_logging.collector import LocalCollector
from infinium_logging.durability import replay_spool
from infinium_logging.settings import Settings
from infinium_logging.spill import default_spool_dir
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

REPO_ROOT = Path(infinium_logging.__file__).resolve().parent.parent
RECIPES = REPO_ROOT / "examples" / "recipes"


def child_env(collector: LocalCollector | None, cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a child: no outside INFINIUM_*, the collector's, its own cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(RECIPES), env.get("PYTHONPATH", "")])
    env["XDG_CACHE_HOME"] = str(cache)
    if collector is not None:
        env.update(
            INFINIUM_BASE_URL=collector.base_url,
            INFINIUM_AGENT_ID=TEST_AGENT_ID,
            INFINIUM_AGENT_SECRET=TEST_AGENT_SECRET,
        )
    env.update(extra)
    return env


def run_script(
    tmp_path: Path, body: str, env: dict[str, str], timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``body`` as a script in a fresh interpreter."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def spill_settings(collector: LocalCollector) -> Settings:
    """The settings children of :func:`child_env` run with (for finding their spill)."""
    return Settings(
        agent_id=TEST_AGENT_ID, agent_secret=TEST_AGENT_SECRET, base_url=collector.base_url
    )


def spill_dir(collector: LocalCollector, cache: Path) -> Path:
    """Where a child with ``XDG_CACHE_HOME=cache`` spills its traces for ``collector``."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        return Path(default_spool_dir(spill_settings(collector)))
    finally:
        if old is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = old


def replay_spill(collector: LocalCollector, cache: Path) -> int:
    """Send what children left in their spill for ``collector``; the number of records sent."""
    directory = spill_dir(collector, cache)
    if not (directory / TEST_AGENT_ID).is_dir():
        return 0
    settings = spill_settings(collector).replace(
        spool_dir=str(directory), enable_rate_limiting=False
    )
    report = replay_spool(settings)
    assert report.failed == 0, report
    return report.sent


def names(collector: LocalCollector) -> set[str]:
    """The names of the traces the collector stored (duplicates folded)."""
    return {received.task.name for received in collector.traces()}


def free_port() -> int:
    """A port free on 127.0.0.1 now (for servers that cannot be told to pick one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds saying ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
