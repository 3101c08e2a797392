"""The quick starts of the README and of docs/logging.md, run as printed (a user copies them
verbatim)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infinium_logging.collector import LocalCollector
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

ROOT = Path(__file__).resolve().parent.parent
#: Where the quick starts are printed: the front page, and the page that explains them.
PAGES = [ROOT / "README.md", ROOT / "docs" / "logging.md"]


def _snippet(page: Path, heading: str) -> str:
    """The first Python block after ``heading`` in ``page``."""
    text = page.read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no Python block after {heading!r}"
    return match.group(1)


def _run(
    code: str, collector: LocalCollector, tmp_path: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    env |= {
        "INFINIUM_BASE_URL": collector.base_url,
        "INFINIUM_AGENT_ID": TEST_AGENT_ID,
        "INFINIUM_AGENT_SECRET": TEST_AGENT_SECRET,
        **extra,
    }
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_stdlib_quick_start_sends_both_traces(
    page: Path, infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """Section 1 as printed: one tagged trace, and one task with its two steps and tokens."""
    done = _run(_snippet(page, "### 1. Standard-library logging"), infinium_collector, tmp_path)
    assert done.returncode == 0, done.stderr
    assert infinium_collector.wait_for(2, timeout=10)
    traces = {t.task.name: t.task for t in infinium_collector.traces()}
    assert sorted(traces) == ["Answer ticket", "Classified ticket"]
    assert traces["Classified ticket"].output_summary == "billing"
    answer = traces["Answer ticket"]
    assert [s.action for s in answer.steps or []] == ["tool_use", "llm_inference"]
    assert answer.llm_usage is not None and answer.llm_usage.total_tokens == 812 + 164
    assert answer.output_summary == "Refunded and replied"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_structlog_quick_start_sends_its_trace(
    page: Path, infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """Section 2 as printed: the tagged event is a trace, and the renderer still prints it."""
    done = _run(_snippet(page, "### 2. structlog: one processor"), infinium_collector, tmp_path)
    assert done.returncode == 0, done.stderr
    assert infinium_collector.wait_for(1, timeout=10)
    (trace,) = [t.task for t in infinium_collector.traces()]
    assert (trace.name, trace.output_summary) == ("Classified ticket", "billing")
    assert '"event": "Classified ticket"' in done.stdout
    assert "infinium" not in done.stdout


def _volatile_out(value: object) -> object:
    """``value`` with what changes from run to run (times, versions) blanked, keys in order."""
    if isinstance(value, dict):
        blank = {"current_datetime", "duration", "start_time", "end_time"}
        blank |= {"python_version", "sdk_version", "runtime"}
        return [(k, "*" if k in blank else _volatile_out(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_volatile_out(v) for v in value]
    return value


def test_the_trace_shown_on_the_front_page_is_what_section_1_sends(
    infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """The JSON under "What a trace looks like" is the body section 1's task() delivers: the
    same keys in the same order and the same values, but for times and versions."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index("## What a trace looks like")
    shown = json.loads(text[start:].split("```json\n", 1)[1].split("```", 1)[0])
    code = _snippet(readme, "### 1. Standard-library logging")
    done = _run(code, infinium_collector, tmp_path, INFINIUM_TAGS="team=support")
    assert done.returncode == 0, done.stderr
    assert infinium_collector.wait_for(2, timeout=10)
    (sent,) = [t.body for t in infinium_collector.traces() if t.task.name == "Answer ticket"]
    assert _volatile_out(json.loads(sent)) == _volatile_out(shown)
