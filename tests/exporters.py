"""What the exporter tests share: settings aimed at a collector, a trace, the accounting
invariant, polling, a forked child's report."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.ledger import ExporterStats
from infinium_logging.model import TaskData
from infinium_logging.settings import Settings
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

#: Fast retries, no throttle, short timeouts: the suite must stay within the CI budget.
FAST: dict[str, Any] = {
    "agent_id": TEST_AGENT_ID,
    "agent_secret": TEST_AGENT_SECRET,
    "enable_rate_limiting": False,
    "retry_backoff_base": 0.01,
    "retry_backoff_max": 0.05,
    "timeout": 5.0,
    "shutdown_timeout": 5.0,
    "auth_backoff": 0.0,
    "workers": 2,
}


def settings_for(
    collector: LocalCollector, spool_dir: Path | None = None, **overrides: Any
) -> Settings:
    """:data:`FAST` settings aimed at ``collector``, with the given spool (or none)."""
    values = {**FAST, "base_url": collector.base_url}
    values["spool_dir"] = None if spool_dir is None else str(spool_dir)
    values.update(overrides)
    return Settings(**values)


def make_exporter(
    collector: LocalCollector, spool_dir: Path | None = None, **overrides: Any
) -> Exporter:
    """An exporter with :func:`settings_for` settings (``on_result`` among the overrides)."""
    on_result = overrides.pop("on_result", None)
    return Exporter(settings_for(collector, spool_dir, **overrides), on_result=on_result)


def trace(name: str = "task", **fields: Any) -> TaskData:
    """A minimal valid trace."""
    return TaskData(
        name, fields.pop("description", "described"), "2026-01-01T00:00:00Z", 1.0, **fields
    )


def balanced(stats: ExporterStats) -> bool:
    """The accounting invariant: every trace the exporter took (submitted, or adopted from a
    spool) is in exactly one place."""
    return stats.submitted + stats.adopted == (
        stats.sent
        + stats.dropped_total
        + stats.queued
        + stats.in_flight
        + stats.spooled
        + stats.sampled_out
    )


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def fork_and_report(child: Any, timeout: float = 20.0) -> dict[str, Any]:
    """Run ``child()`` in a forked process; return the dict it returns (sent back as JSON).

    A child that does not finish in time is killed and the test fails, so a
    deadlock shows as a failure rather than a hung suite.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(child()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
        pytest.fail("the forked child did not finish: deadlock?")
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    assert status is not None and os.waitstatus_to_exitcode(status) == 0
    return dict(json.loads(b"".join(chunks)))
