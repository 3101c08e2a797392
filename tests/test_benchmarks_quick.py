"""The benchmarks' quick mode runs end to end and reports every figure, so the harness never rots."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"

#: Rows that compare with the official client (infinium-o2, in the ``bench`` extra).
OFFICIAL_ROWS = {"5", "6 p50", "6 p99", "7b"}
#: Rows that only inform (no target).
INFO_ROWS = {"6 p50", "7c", "13b", "13c"}

#: Every row of the table: figures 1-13, with the sub-rows of 4, 6, 7, 8 and 13.
EXPECTED_ROWS = {
    "1",
    "2",
    "3",
    "3b",
    "4a",
    "4b",
    "4c",
    "5",
    "6 p50",
    "6 p99",
    "7a",
    "7b",
    "7c",
    "8 burst",
    "8 rate",
    "9",
    "10",
    "11",
    "12",
    "13",
    "13b",
    "13c",
}


@pytest.fixture(scope="module", params=["auto", "collector"])
def quick_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One ``benchmarks/run.py --quick`` run in a subprocess, shared by the tests below.

    Once with the default server (nginx when installed) and once with the local
    collector, the fallback wherever nginx is missing, so that neither path rots.
    """
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    completed = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--server", request.param, "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=90,
        check=False,
    )
    return completed, out


def _finite(summary: dict[str, Any] | None) -> bool:
    return summary is not None and all(
        isinstance(summary[key], (int, float)) and math.isfinite(summary[key])
        for key in ("median", "q1", "q3", "min", "max")
    )


def test_quick_mode_exits_zero_and_prints_the_table(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """The quick run succeeds and prints the results table with a PASS/MISS verdict per figure."""
    completed, _ = quick_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| # | figure | ours |" in completed.stdout
    for row in ("| 1 |", "| 5 |", "| 9 |", "| 10 |"):
        assert row in completed.stdout


def test_quick_mode_writes_every_figure_as_json(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """The JSON holds every figure with finite medians and spreads, a target and a verdict."""
    completed, out = quick_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["mode"] == "quick"
    assert document["errors"] == {}
    assert document["server"] in ("nginx", "local collector")
    if "--server" in completed.args and completed.args[completed.args.index("--server") + 1] == (
        "collector"
    ):
        assert document["server"] == "local collector"
    assert document["machine"]["cpus"] >= 1
    rows = {row["id"]: row for row in document["rows"]}
    assert set(rows) == EXPECTED_ROWS
    compared = importlib.util.find_spec("infinium") is not None
    for row_id, row in rows.items():
        assert row["target"], row_id
        assert _finite(row["ours"]), row_id
        if compared or row_id not in OFFICIAL_ROWS:
            assert _finite(row["value"]), row_id
            assert (row["passed"] is None) == (row_id in INFO_ROWS), row_id
        else:
            # Without the official client its comparisons are left out, and say so.
            assert row["value"] is None and row["passed"] is None, row_id
            assert "infinium-o2 not installed" in row["note"], row_id
    assert rows["5"]["extra"]["body_bytes"] > 10_000


def test_the_realistic_trace_is_the_one_the_figures_promise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One trace for every figure: ~11.5 KB on the wire, 10 steps (5 with an LLM call, 3 with a
    tool call, previews ~200 characters), LLM usage of 5 calls, an expected outcome, an
    environment with 5 custom tags, two small sections."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.realistic_trace import our_task, trace_dict  # noqa: PLC0415
    from infinium_logging.convert import to_task  # noqa: PLC0415
    from infinium_logging.model import encode_task  # noqa: PLC0415

    task = our_task()
    body = encode_task(task)
    assert 11_000 <= len(body) <= 12_000
    assert encode_task(to_task(trace_dict())) == body  # the dict the handler figures log
    steps = task.steps or []
    assert len(steps) == 10
    assert sum(step.llm_call is not None for step in steps) == 5
    assert sum(step.tool_call is not None for step in steps) == 3
    previews = [len(p) for s in steps for p in (s.input_preview, s.output_preview) if p]
    assert previews and all(150 <= n <= 250 for n in previews)
    assert task.llm_usage is not None and task.llm_usage.api_calls_count == 5
    assert task.expected_outcome is not None
    assert task.environment is not None and len(task.environment.custom_tags or {}) == 5
    assert list(json.loads(body)["sections"]) == ["time_tracking", "general"]
