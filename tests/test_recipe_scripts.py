"""The scripts recipe as a user runs it: a real process whose run is one trace, delivered at
a normal exit, at an error exit and when SIGTERM stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from infinium_logging.collector import LocalCollector
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "script.py"


def _env(collector: LocalCollector | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    if collector is not None:
        env |= {
            "INFINIUM_BASE_URL": collector.base_url,
            "INFINIUM_AGENT_ID": TEST_AGENT_ID,
            "INFINIUM_AGENT_SECRET": TEST_AGENT_SECRET,
        }
    return env


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_run_is_one_trace_sent_at_exit(
    infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """No flush in the script: the exit hook delivers the run's trace, a step per source."""
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("one two three\n", encoding="utf-8")
    second.write_text("four\n", encoding="utf-8")
    done = _run(str(first), str(second), env=_env(infinium_collector))
    assert done.returncode == 0, done.stderr
    assert f"{first}: 3 words" in done.stdout
    assert infinium_collector.wait_for(1, timeout=10)
    (trace,) = [t.task for t in infinium_collector.traces()]
    assert trace.name == "Summarise files"
    assert [s.description for s in trace.steps or []] == [
        f"Reading {first}",
        f"Reading {second}",
        "Summarised 2 source(s)",
    ]
    assert not trace.errors


def test_a_failed_run_exits_1_and_its_trace_carries_the_error(
    infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """The exception that ended the run is the trace's non-recoverable error."""
    done = _run(str(tmp_path / "missing.txt"), env=_env(infinium_collector))
    assert done.returncode == 1
    assert "No such file or directory" in done.stderr
    assert infinium_collector.wait_for(1, timeout=10)
    (trace,) = [t.task for t in infinium_collector.traces()]
    errors = trace.errors or []
    assert [(e.error_type, e.recoverable) for e in errors] == [("FileNotFoundError", False)]


def test_sigterm_is_an_ordinary_exit_and_the_trace_is_sent(
    infinium_collector: LocalCollector,
) -> None:
    """Stopped while it waits for input, the script exits 143 and its trace still arrives,
    with the exit status as its error."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "-"],
        env=_env(infinium_collector),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("a line of input\n")
    process.stdin.flush()
    assert process.stdout.readline() == "reading <stdin>\n"  # inside the task, blocked on stdin
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert infinium_collector.wait_for(1, timeout=10)
    (trace,) = [t.task for t in infinium_collector.traces()]
    assert [s.description for s in trace.steps or []] == ["Reading <stdin>"]
    assert [e.error_type for e in trace.errors or []] == ["SystemExit"]


def test_the_script_runs_on_its_own() -> None:
    """With nothing configured it starts a local collector and shows the trace it got."""
    done = _run(env=_env())
    assert done.returncode == 0, done.stderr
    assert "trace 'Summarise files': 2 steps" in done.stdout


def test_the_recipe_pages_minimal_configuration_runs_as_printed(
    infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """The page's first Python block, copied verbatim: one trace, a step per argument."""
    page = SCRIPT.parents[2] / "docs" / "recipes" / "scripts.md"
    text = page.read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    copied = tmp_path / "tool.py"
    copied.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(copied), "a.txt", "b.txt"],
        env=_env(infinium_collector),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert infinium_collector.wait_for(1, timeout=10)
    (trace,) = [t.task for t in infinium_collector.traces()]
    assert trace.name == "Summarise files"
    assert [s.description for s in trace.steps or []] == ["Reading a.txt", "Reading b.txt"]
