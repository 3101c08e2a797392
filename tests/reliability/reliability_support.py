"""Shared pieces of the reliability suite: settings, child processes, the accounting invariant."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from exporters import settings_for as _settings_for

import infinium_logging
from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.settings import Settings

REPO_ROOT = str(Path(infinium_logging.__file__).resolve().parent.parent)

#: The reliability suite's senders: more of them, and a short pause after refused credentials.
RELIABLE: dict[str, Any] = {"auth_backoff": 0.05, "workers": 4}


def settings_for(
    collector: LocalCollector, spool_dir: Path | None = None, **overrides: Any
) -> Settings:
    """The suite's settings: the exporter tests' fast ones, with :data:`RELIABLE`."""
    return _settings_for(collector, spool_dir, **{**RELIABLE, **overrides})


def idle(exporter: Exporter) -> bool:
    """Nothing queued, in flight, or waiting in the spool for another attempt."""
    stats = exporter.stats()
    return stats.queued == stats.in_flight == stats.spooled == 0


def accepted_names(collector: LocalCollector) -> list[str]:
    """Names of every trace the collector stored, duplicates included."""
    return [t.task.name for t in collector.traces()]


def check_collector(
    collector: LocalCollector,
    sent: int,
    *,
    expected: Iterable[str] | None = None,
    late: int = 0,
) -> collections.Counter[str]:
    """The collector's own record agrees with what the exporter(s) counted as sent.

    A trace arrives twice only where the collector reset the connection after
    storing it (it counts those in ``faults["drop_after_accept"]``); ``late``
    allows for requests the collector stored after the client gave up on them
    at a shutdown deadline.  With ``expected``, exactly those traces arrived.
    """
    names = accepted_names(collector)
    counts = collections.Counter(names)
    after_accept = collector.faults.get("drop_after_accept", 0)
    duplicates = len(names) - len(counts)
    assert duplicates <= after_accept + late, (duplicates, after_accept, late)
    assert len(names) == collector.accepted_count
    assert sent <= len(counts) <= sent + after_accept + late, (sent, len(counts), after_accept)
    if expected is not None:
        assert set(counts) == set(expected)
    return counts


def child_env() -> dict[str, str]:
    """The environment of a child interpreter: no INFINIUM_* of ours, the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def settings_literal(settings: Settings) -> str:
    """Python source that rebuilds ``settings`` in a child (the secret is a test value)."""
    values = {
        name: value
        for name, value in settings.masked().items()
        if name not in ("agent_secret", "tags")
    }
    values["agent_secret"] = settings.agent_secret
    return "Settings(**" + repr(values) + ")"


def run_child(script: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter; return what it printed."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=False,
    )


def reported(stdout: str, key: str) -> Any:
    """The JSON value a child printed on a line ``KEY <json>``."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(key + " "):
            return json.loads(line[len(key) + 1 :])
    raise AssertionError(f"the child printed no {key} line: {stdout[-2000:]!r}")


#: Child-side code that prints an exporter's stats as one JSON line.
STATS_PRINTER = """
import json as _json
def print_stats(key, exporter):
    s = exporter.stats()
    print(key, _json.dumps({
        "submitted": s.submitted, "sent": s.sent, "dropped": s.dropped, "queued": s.queued,
        "in_flight": s.in_flight, "spooled": s.spooled, "adopted": s.adopted,
        "spool_write_errors": s.spool_write_errors,
    }), flush=True)
"""


def child_accounted(stats: dict[str, Any]) -> bool:
    """:func:`accounted` for the stats a child printed."""
    dropped = sum(stats["dropped"].values())
    return bool(
        stats["submitted"] + stats["adopted"]
        == stats["sent"] + dropped + stats["queued"] + stats["in_flight"] + stats["spooled"]
    )
