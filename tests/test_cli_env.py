"""What the command line hands to a shell (``export`` lines, ``serve --print-env``) and what
``send`` says about a trace with several problems."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import urllib3

from infinium_logging._cli_base import OPEN_SECRET
from infinium_logging._cli_serve import export_lines
from infinium_logging.cli import main
from infinium_logging.testing import TEST_AGENT_ID

SHELL_VALUE = 'it\'s a "secret" with $HOME, `id` and spaces'


def _shell(script: str, **env: str) -> str:
    """What ``sh -c script`` prints, with INFINIUM_* variables only from ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    done = subprocess.run(
        ["sh", "-c", script],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_export_lines_give_a_shell_the_values_as_they_are() -> None:
    """Quotes, dollars, backquotes and spaces in a value survive `eval` unchanged."""
    lines = export_lines("http://127.0.0.1:8420/api/v1", TEST_AGENT_ID, SHELL_VALUE)
    assert lines.splitlines()[0] == "export INFINIUM_BASE_URL=http://127.0.0.1:8420/api/v1"
    printed = _shell(
        f"eval \"$(cat <<'EOF'\n{lines}\nEOF\n)\"\n"
        'printf "%s\\n" "$INFINIUM_BASE_URL" "$INFINIUM_AGENT_ID" "$INFINIUM_AGENT_SECRET"'
    )
    assert printed.splitlines() == ["http://127.0.0.1:8420/api/v1", TEST_AGENT_ID, SHELL_VALUE]


def test_serve_print_env_returns_to_the_shell_and_keeps_serving(tmp_path: Path) -> None:
    """`$(serve --print-env &)` ends once the lines are printed (serve lets go of its stdout),
    the lines set the variables, and the collector in the background answers at that URL until
    it is sent SIGTERM."""
    log = tmp_path / "collector.log"
    printed = _shell(
        f'out="$({sys.executable} -m infinium_logging serve --port 0 --db :memory: '
        f'--print-env 2>{log} &)"\n'
        'printf "%s\\n" "$out" ---\n'
        'eval "$out"\n'
        'printf "%s\\n" "$INFINIUM_BASE_URL" "$INFINIUM_AGENT_ID" "$INFINIUM_AGENT_SECRET"\n'
        'printf "%s\\n" "$infinium_collector_pid"'
    )
    lines, evaluated = printed.split("---\n")
    base_url, agent_id, secret, pid_text = evaluated.splitlines()
    pid = int(pid_text)
    assert f"infinium_collector_pid={pid}  # kill $infinium_collector_pid" in lines
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", base_url)
        assert secret == OPEN_SECRET
        with urllib3.PoolManager(retries=False) as pool:
            answer = pool.request(
                "GET",
                f"{base_url}/agents/{agent_id}/interpreted-result/{TEST_AGENT_ID}",
                headers={"x-agent-id": agent_id, "x-agent-key": secret},
                timeout=10,
            )
        assert answer.status == 404  # the collector's answer for a trace it never got
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while "Stopped; 0 traces received." not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    said = log.read_text()
    assert f"listening on {base_url} (process {pid}; kill {pid} stops it)" in said
    assert f"See the traces in a browser at {base_url.removesuffix('api/v1')}" in said
    assert "Stopped; 0 traces received." in said


def test_send_reports_every_problem_of_a_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strict validation stops at the first problem; `send` names them all, then sends none."""
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", "never-used-secret")
    trace = {
        "name": "",
        "description": "several problems",
        "current_datetime": "yesterday",
        "duration": -5,
        "bogus": 1,
        "steps": [
            {"step_number": 1, "action": "log", "description": "s", "extra_key": 1},
            {
                "step_number": 2,
                "action": "llm_inference",
                "description": "s",
                "llm_call": {"model": "m", "prompt_tokens": "320"},
            },
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(trace), encoding="utf-8")
    assert main(["send", str(path)]) == 2
    err = capsys.readouterr().err
    for where in (
        "bogus: unknown field",
        "name: ",
        "current_datetime: ",
        "duration: ",
        "steps[1].llm_call.prompt_tokens: expected int, got str",
    ):
        assert f"send: {path}: {where}" in err
    assert "1 invalid trace(s); nothing was sent" in err


def test_send_names_every_missing_or_refused_required_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A required field missing or refused does not end the search: every required field
    missing, at the top and in a step, tool call and error, is named along with the rest."""
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", "never-used-secret")
    trace = {
        "name": 5,
        "current_datetime": "2026-12-07T10:00:00Z",
        "steps": [{"action": "log", "tool_call": {}}],
        "errors": [{}],
    }
    path = tmp_path / "sparse.json"
    path.write_text(json.dumps(trace), encoding="utf-8")
    assert main(["send", str(path)]) == 2
    err = capsys.readouterr().err
    for where in (
        "name: expected str, got int",
        "description: required field missing",
        "duration: required field missing",
        "steps[0].step_number: required field missing",
        "steps[0].description: required field missing",
        "steps[0].tool_call.tool_name: required field missing",
        "errors[0].error_type: required field missing",
        "errors[0].message: required field missing",
    ):
        assert f"send: {path}: {where}" in err
