"""The command line: demo, check and send, as a user runs them."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infinium_logging.cli import CHECK_EXIT, main
from infinium_logging.collector import LocalCollector
from infinium_logging.model import TaskData, encode_task
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

NOW = "2026-11-22T08:51:00.000000Z"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, infinium_collector: LocalCollector) -> LocalCollector:
    """INFINIUM_* pointing at a collector, and nothing else of the caller's environment."""
    for name in list(os.environ):
        if name.startswith("INFINIUM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INFINIUM_BASE_URL", infinium_collector.base_url)
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    monkeypatch.setenv("INFINIUM_MAX_RETRIES", "0")
    return infinium_collector


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def test_demo_runs_and_shows_what_was_received(tmp_path: Path) -> None:
    """The README's first command: exit 0, the table, and nothing on stderr."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    done = subprocess.run(
        [sys.executable, "-m", "infinium_logging", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ | {"TMPDIR": str(tmp_path)},  # the demo keeps its database for the user
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert "The collector received 4 traces" in out
    assert "Classify support ticket #4821" in out
    assert "ok, recovered from 1 error(s)" in out
    assert "failed: RuntimeError" in out
    assert "Steps of 'Refund duplicate charge for ticket #4821'" in out
    assert "Exporter: 4 sent, 0 dropped." in out
    assert f"{tmp_path}/infinium-demo-" in out
    assert "traces.sqlite3" in out


def test_demo_keep_leaves_the_collector_up_until_sigterm(tmp_path: Path) -> None:
    """--keep prints how to point an app at the collector and stops cleanly on SIGTERM."""
    child = subprocess.Popen(
        [sys.executable, "-m", "infinium_logging", "demo", "--keep"],
        env=os.environ | {"TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    base_url = next(
        line.split("=", 1)[1].strip() for line in lines if line.startswith("INFINIUM_BASE_URL=")
    )
    with socket.create_connection(
        ("127.0.0.1", int(base_url.split(":")[2].split("/")[0])), timeout=5
    ):
        pass  # still listening
    child.send_signal(signal.SIGTERM)
    assert child.wait(20) == 0
    child.stdout.close()
    assert child.stderr is not None
    assert child.stderr.read() == ""
    child.stderr.close()


def test_check_accepts_good_credentials_and_masks_the_secret(
    env: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """Credentials accepted: exit 0, settings printed, the secret never shown."""
    assert main(["check"]) == CHECK_EXIT["ok"]
    out = capsys.readouterr().out
    assert "OK: the credentials were accepted." in out
    assert TEST_AGENT_SECRET not in out
    assert f"<set, {len(TEST_AGENT_SECRET)} characters>" in out
    assert env.accepted_count == 0  # no trace was created


def test_check_reports_refused_credentials(
    env: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """401: exit 3 and which variables to check."""
    assert main(["check", "--agent-secret", "wrong-secret-123"]) == CHECK_EXIT["auth"]
    err = capsys.readouterr().err
    assert "refused (HTTP 401)" in err
    assert "INFINIUM_AGENT_SECRET" in err
    assert "wrong-secret-123" not in err


def test_check_reports_nothing_listening(
    env: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """Connection refused: exit 4 and a hint."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    assert (
        main(["check", "--base-url", f"http://127.0.0.1:{port}/api/v1"])
        == CHECK_EXIT["unreachable"]
    )
    assert "check INFINIUM_BASE_URL" in capsys.readouterr().err


def test_check_reports_a_timeout(
    env: LocalCollector, silent_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that never answers: exit 6 within the timeout."""
    code = main(
        ["check", "--base-url", f"http://127.0.0.1:{silent_port}/api/v1", "--timeout", "0.3"]
    )
    assert code == CHECK_EXIT["timeout"]
    assert "timed out" in capsys.readouterr().err


def test_check_reports_a_tls_failure(
    env: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """https to a plain-http server: exit 5 with a TLS hint."""
    url = env.base_url.replace("http://", "https://")
    assert main(["check", "--base-url", url, "--timeout", "5"]) == CHECK_EXIT["tls"]
    assert "TLS" in capsys.readouterr().err


def test_check_reports_bad_configuration(
    env: LocalCollector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad variable: exit 2 naming it."""
    monkeypatch.setenv("INFINIUM_TIMEOUT", "soon")
    assert main(["check"]) == CHECK_EXIT["config"]
    assert "INFINIUM_TIMEOUT='soon'" in capsys.readouterr().err


def _trace(name: str) -> dict[str, object]:
    fields: dict[str, object] = json.loads(
        encode_task(TaskData(name, "sent from a file", NOW, 1.0))
    )
    return fields


def test_send_file_of_json_lines(
    env: LocalCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON lines are validated then sent; each trace id is printed."""
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(json.dumps(_trace(f"t{i}")) for i in range(3)) + "\n")
    assert main(["send", str(path)]) == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == 3
    assert sorted(r.trace_id for r in env.traces()) == sorted(ids)


def test_send_keeps_sending_when_its_output_has_no_reader(
    env: LocalCollector, tmp_path: Path
) -> None:
    """``send FILE | head -1``: the trace ids have no reader after the first, yet every trace
    is sent, and nothing about a broken pipe reaches the user."""
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(json.dumps(_trace(f"t{i}")) for i in range(5)) + "\n")
    child = subprocess.Popen(
        [sys.executable, "-m", "infinium_logging", "send", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader is gone before the first id is printed
    err = child.stderr.read()
    child.stderr.close()
    assert child.wait(30) == 0, err
    assert err == ""
    assert sorted(t.task.name for t in env.traces()) == [f"t{i}" for i in range(5)]


def test_a_command_whose_reader_goes_away_exits_1_quietly(env: LocalCollector) -> None:
    """``check | head -1``: the command stops with exit code 1 and no traceback."""
    child = subprocess.Popen(
        [sys.executable, "-m", "infinium_logging", "check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    err = child.stderr.read()
    child.stderr.close()
    assert child.wait(30) == 1
    assert err == ""


def test_send_json_array_from_stdin(
    env: LocalCollector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """'-' reads standard input; a JSON array is a list of traces."""
    data = json.dumps([_trace("a"), _trace("b")]).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["send", "-"]) == 0
    assert len(capsys.readouterr().out.split()) == 2
    assert sorted(t.task.name for t in env.traces()) == ["a", "b"]


def test_send_refuses_invalid_input_without_sending(
    env: LocalCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One invalid trace: exit 2, a path-precise message, nothing sent."""
    bad = _trace("bad")
    bad["duration"] = "long"
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(_trace("good")) + "\n" + json.dumps(bad) + "\n")
    assert main(["send", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: duration: expected float, got str" in err
    assert env.request_count == 0


def test_send_reports_bad_json_with_its_line(
    env: LocalCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unparseable JSON names its line."""
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(_trace("good")) + "\n{oops\n")
    assert main(["send", str(path)]) == 2
    assert f"{path}:2: invalid JSON" in capsys.readouterr().err


def test_send_counts_failures(
    env: LocalCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace the server refuses makes the exit status 1; the others are still sent."""
    env.fail_next(1, 400)
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(json.dumps(_trace(f"t{i}")) for i in range(2)))
    assert main(["send", str(path)]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.split()) == 1
    assert "1 of 2 trace(s) failed" in captured.err


@pytest.mark.parametrize("command", ["demo", "serve", "check", "send", "spool", "replay"])
def test_every_command_has_complete_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--help works for every command and describes it."""
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: infinium-logging {command}" in out
    assert len(out) > 300
