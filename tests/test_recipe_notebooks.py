"""The notebook recipe, run in a real IPython shell (what a Jupyter kernel runs cells in):
the set-up cell run again adds no second handler and sends nothing twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infinium_logging.collector import LocalCollector
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "notebook.py"

# Runs in a child process: IPython's shell is a process-wide singleton.
_KERNEL = """
import re
import sys
from IPython.core.interactiveshell import InteractiveShell

text = open(sys.argv[1], encoding="utf-8").read()
cells = re.split(r"^(?=# %%)", text, flags=re.M)[1:]  # before the first mark: the docstring
shell = InteractiveShell.instance()
setup, work, look = cells
for _ in range(3):
    assert shell.run_cell(setup).success
assert shell.run_cell(work).success
interrupted = shell.run_cell(
    "with task('Interrupted cell'):\\n    log.info('Started')\\n    raise KeyboardInterrupt"
)
assert not interrupted.success
assert shell.run_cell(look).success
shell.run_cell(
    "print('infinium handlers:', sum(isinstance(h, InfiniumHandler) "
    "for h in logging.getLogger().handlers))"
)
"""


def _run_kernel(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _KERNEL, str(NOTEBOOK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    return env | extra


def test_rerunning_the_setup_cell_sends_each_trace_once(
    infinium_collector: LocalCollector,
) -> None:
    """Set-up cell three times, then the work: one handler, one trace per event, and a cell
    interrupted inside a task() sends that task with the KeyboardInterrupt as its error."""
    done = _run_kernel(
        _env(
            INFINIUM_BASE_URL=infinium_collector.base_url,
            INFINIUM_AGENT_ID=TEST_AGENT_ID,
            INFINIUM_AGENT_SECRET=TEST_AGENT_SECRET,
        )
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "infinium handlers: 1" in done.stdout
    assert infinium_collector.wait_for(3, timeout=10)
    traces = {t.task.name: t.task for t in infinium_collector.traces()}
    assert sorted(traces) == ["Interrupted cell", "Loaded the accounts", "Score churn risk"]
    assert len(infinium_collector.traces()) == 3
    assert [s.description for s in traces["Score churn risk"].steps or []] == [
        "Asked the model to score the accounts",
        "Flagged the risky ones",
    ]
    errors = traces["Interrupted cell"].errors or []
    assert [e.error_type for e in errors] == ["KeyboardInterrupt"]


def test_the_notebook_runs_on_its_own_in_the_shell() -> None:
    """With nothing configured, the set-up cell starts a local collector (once, however often
    it runs) and the last cell lists what it received."""
    done = _run_kernel(_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trace 'Loaded the accounts': 0 steps" in done.stdout
    assert "trace 'Score churn risk': 2 steps" in done.stdout
    assert "--- Logging error ---" not in done.stderr
