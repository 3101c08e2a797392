"""Every example runs, against a collector, so that none of them rots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infinium_logging.collector import LocalCollector
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    env.update(extra)
    return env


def test_there_are_examples_for_every_way_of_use() -> None:
    """The documented examples exist."""
    names = {p.stem for p in SCRIPTS}
    assert {
        "stdlib_handler",
        "dictconfig",
        "structlog_chain",
        "structlog_bridge",
        "asyncio_tasks",
        "send_batch",
        "interpreted_result",
        "otel_genai",
    } <= names


def _no_internal_errors(stderr: str) -> None:
    # An example may log an exception on purpose; these two only come from a failure of ours.
    assert "--- Logging error ---" not in stderr
    assert "Exception in thread" not in stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_example_sends_to_a_configured_collector(
    script: Path, infinium_collector: LocalCollector
) -> None:
    """Pointed at a running collector (as after `serve`), the example delivers traces there."""
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=EXAMPLES,
        env=_env(
            INFINIUM_BASE_URL=infinium_collector.base_url,
            INFINIUM_AGENT_ID=TEST_AGENT_ID,
            INFINIUM_AGENT_SECRET=TEST_AGENT_SECRET,
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _no_internal_errors(done.stderr)
    assert infinium_collector.wait_for(1, timeout=10)
    assert all(t.agent_id == TEST_AGENT_ID for t in infinium_collector.traces())


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_example_runs_on_its_own(script: Path) -> None:
    """With nothing configured, the example starts its own collector and shows what it got."""
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=EXAMPLES,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _no_internal_errors(done.stderr)
    assert "trace" in done.stdout.lower()
