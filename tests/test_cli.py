"""The command line: demo, check and send, as a user runs them."""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infinium_logging import _redact_scan
from infinium_logging._cli_check import CHECK_EXIT
from infinium_logging.cli import main
from infinium_logging.collector import LocalCollector
from infinium_logging.model import TaskData, encode_task, utc_now_iso
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


class _SameAnswer(BaseHTTPRequestHandler):
    """Answers every request with the server's ``status`` and a small HTML page."""

    server: _WebServer

    def do_GET(self) -> None:
        body = b"<html><body><h1>Not here</h1></body></html>"
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _WebServer(ThreadingHTTPServer):
    """A web server that is not the Infinium API: one answer for every path."""

    daemon_threads = True

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(("127.0.0.1", 0), _SameAnswer)


@pytest.fixture(params=[404, 200], ids=["404-everywhere", "200-everywhere"])
def web_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a local web server answering every path with the same status and page."""
    server = _WebServer(request.param)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    server.shutdown()
    server.server_close()
    thread.join(5)


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
    assert "three tasks" in out and "one tagged event: four traces" in out
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
        line.split("=", 1)[1].strip()
        for line in lines
        if line.startswith("export INFINIUM_BASE_URL=")
    )
    assert f"See the traces in a browser at {base_url.removesuffix('api/v1')}\n" in lines
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
    # dev installs the fast extra: check says the scan is one pass, and with what.
    assert "Redaction: secrets, one pass per trace (Hyperscan " in out


def test_check_says_that_traces_go_to_infino_too(
    env: LocalCollector, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With INFINIUM_INFINO_* set, check says every trace also goes to Infino, and where (its
    secret key never shown); a bad Infino variable is named, and Infinium is still checked."""
    monkeypatch.setenv("INFINIUM_INFINO_ENDPOINT", "https://api.infino.example")
    monkeypatch.setenv("INFINIUM_INFINO_ACCESS_KEY", "IAKCHECK000000000000")
    monkeypatch.setenv("INFINIUM_INFINO_SECRET_KEY", "check-secret-DO-NOT-PRINT-0123456789")
    monkeypatch.setenv("INFINIUM_INFINO_STEPS_DATASET", "agent-steps")
    assert main(["check"]) == CHECK_EXIT["ok"]
    out = capsys.readouterr().out
    assert (
        "Infino: every trace also goes to https://api.infino.example (infinium-traces, agent-steps)"
    ) in out
    assert "check-secret-DO-NOT-PRINT" not in out
    monkeypatch.setenv("INFINIUM_INFINO_DATASET", "Bad Name")
    assert main(["check"]) == CHECK_EXIT["ok"]
    out = capsys.readouterr().out
    assert "Infino: not usable: Invalid INFINIUM_INFINO_DATASET='Bad Name'" in out
    assert "OK: the credentials were accepted." in out


def test_check_says_how_to_make_the_redaction_scan_one_pass(
    env: LocalCollector, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Hyperscan (a plain install), check names the extra that makes the scan one pass;
    with redaction off it says nothing of it."""
    monkeypatch.setattr(_redact_scan, "available", lambda: None)
    assert main(["check"]) == CHECK_EXIT["ok"]
    assert "pip install 'infinium-logging[fast]'" in capsys.readouterr().out
    monkeypatch.setenv("INFINIUM_REDACT", "off")
    assert main(["check"]) == CHECK_EXIT["ok"]
    assert "Redaction" not in capsys.readouterr().out


def test_check_reports_refused_credentials(
    env: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """401: exit 3 and which variables to check."""
    assert main(["check", "--agent-secret", "wrong-secret-123"]) == CHECK_EXIT["auth"]
    err = capsys.readouterr().err
    assert "refused (HTTP 401)" in err
    assert "INFINIUM_AGENT_SECRET" in err
    assert "wrong-secret-123" not in err


def test_check_says_plainly_what_could_not_be_reached(
    env: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """Connection refused: exit 4, a message naming host:port and the OS error (and no class of
    the HTTP client), and a hint."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    assert (
        main(["check", "--base-url", f"http://127.0.0.1:{port}/api/v1"])
        == CHECK_EXIT["unreachable"]
    )
    err = capsys.readouterr().err
    assert f"could not connect to 127.0.0.1:{port}: Connection refused" in err
    assert "check INFINIUM_BASE_URL" in err
    assert "Connection(" not in err
    assert "_Tracked" not in err


@pytest.mark.parametrize("path", ["", "/api/v2", "/api/v1/agents"])
def test_check_refuses_a_collector_url_without_the_api_root(
    env: LocalCollector, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base URL that misses the API root (every trace sent there would be 'no such
    endpoint'): a configuration error naming the URL and the expected root, never 'OK'."""
    url = env.url + path
    assert main(["check", "--base-url", url]) == CHECK_EXIT["config"]
    captured = capsys.readouterr()
    assert "OK" not in captured.out
    assert f"{url} is not the Infinium API" in captured.err
    assert "HTTP 404" in captured.err
    assert "/api/v1" in captured.err
    assert TEST_AGENT_SECRET not in captured.out + captured.err
    assert env.accepted_count == 0


def test_check_refuses_a_web_server_that_is_not_the_api(
    env: LocalCollector, web_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A web server that answers every path alike (404 pages, or a site that serves its page
    for any path) is not the API: exit 2, whatever credentials are given."""
    assert main(["check", "--base-url", web_server]) == CHECK_EXIT["config"]
    captured = capsys.readouterr()
    assert "OK" not in captured.out
    assert f"{web_server} is not the Infinium API" in captured.err
    assert "INFINIUM_BASE_URL" in captured.err


def test_check_warns_of_unknown_infinium_variables(
    env: LocalCollector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt INFINIUM_* variable is named, with the setting it resembles, but its value is
    never shown and the exit status is unchanged."""
    monkeypatch.setenv("INFINIUM_TIMEOUTT", "value-of-the-typo-1")
    monkeypatch.setenv("INFINIUM_FROBNICATE", "value-of-the-typo-2")
    assert main(["check"]) == CHECK_EXIT["ok"]
    captured = capsys.readouterr()
    assert "OK: the credentials were accepted." in captured.out
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 2
    assert "INFINIUM_FROBNICATE" in warnings[0]
    assert "did you mean" not in warnings[0]
    assert "INFINIUM_TIMEOUTT" in warnings[1]
    assert "did you mean INFINIUM_TIMEOUT?" in warnings[1]
    assert "value-of-the-typo" not in captured.out + captured.err


def test_check_warns_of_a_misspelt_variable_also_when_the_settings_fail(
    env: LocalCollector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The typo is what makes the secret missing: the warning comes with the exit status 2."""
    monkeypatch.delenv("INFINIUM_AGENT_SECRET")
    monkeypatch.setenv("INFINIUM_AGENT_SECERT", TEST_AGENT_SECRET)
    assert main(["check"]) == CHECK_EXIT["config"]
    captured = capsys.readouterr()
    assert "INFINIUM_AGENT_SECERT" in captured.err
    assert "did you mean INFINIUM_AGENT_SECRET?" in captured.err
    assert "Missing agent_secret" in captured.err
    assert TEST_AGENT_SECRET not in captured.out + captured.err


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
    """https to a plain-http server: exit 5, saying that the server speaks plain HTTP (not that
    its certificate is wrong)."""
    url = env.base_url.replace("http://", "https://")
    assert main(["check", "--base-url", url, "--timeout", "5"]) == CHECK_EXIT["tls"]
    err = capsys.readouterr().err
    assert f"{env.host}:{env.port} does not speak TLS" in err
    assert "INFINIUM_BASE_URL should start with http://" in err
    assert "certificate" not in err


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


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "PYTHONUNBUFFERED"])
def test_a_command_whose_reader_goes_away_exits_1_quietly(
    env: LocalCollector, unbuffered: bool
) -> None:
    """``check | head -1``: the command stops with exit code 1 and no traceback, whether its
    output is buffered (Python's default for a pipe: the failure then comes at the end) or
    not."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        environ["PYTHONUNBUFFERED"] = "1"
    # The credentials probe answers late: by then the reader has surely gone, whatever the
    # load on the machine, and the rest of the output finds no reader (not a race).
    env.latency = 1.0
    child = subprocess.Popen(
        [sys.executable, "-m", "infinium_logging", "check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    err = child.stderr.read()
    child.stderr.close()
    assert child.wait(30) == 1
    assert err == ""
    # As ``| head -1`` does it: the first line read, then the reader gone.
    piped = subprocess.run(
        [
            "bash",
            "-c",
            f"{shlex.quote(sys.executable)} -m infinium_logging check | head -1; "
            'echo "status ${PIPESTATUS[0]}" >&2',
        ],
        capture_output=True,
        text=True,
        env=environ,
        timeout=30,
        check=False,
    )
    assert piped.stdout.count("\n") == 1
    assert piped.stderr == "status 1\n"


def test_send_json_array_from_stdin(
    env: LocalCollector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """'-' reads standard input; a JSON array is a list of traces."""
    data = json.dumps([_trace("a"), _trace("b")]).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["send", "-"]) == 0
    assert len(capsys.readouterr().out.split()) == 2
    assert sorted(t.task.name for t in env.traces()) == ["a", "b"]


def test_send_dates_a_trace_without_current_datetime_now(
    env: LocalCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace written by hand need not carry ``current_datetime``: it is sent dated now, as
    ``Exporter.send`` dates a dict; one that carries it keeps its own."""
    undated = {"name": "by hand", "description": "written in an editor", "duration": 1.0}
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(undated) + "\n" + json.dumps(_trace("dated")) + "\n")
    before = utc_now_iso()
    assert main(["send", str(path)]) == 0, capsys.readouterr().err
    sent = {t.task.name: t.task.current_datetime for t in env.traces()}
    assert before <= sent["by hand"] <= utc_now_iso()
    assert sent["dated"] == NOW


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


def test_send_says_nothing_was_sent_when_export_is_disabled(
    env: LocalCollector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """INFINIUM_DISABLED on: exit 2 saying so (it exited 0, "all sent"), as ``replay`` does."""
    monkeypatch.setenv("INFINIUM_DISABLED", "true")
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(_trace("t")) + "\n")
    assert main(["send", str(path)]) == 2
    captured = capsys.readouterr()
    assert "INFINIUM_DISABLED is on: 1 valid trace(s), nothing was sent" in captured.err
    assert captured.out == "" and env.request_count == 0


def test_send_reports_bad_json_with_its_line(
    env: LocalCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unparseable JSON names its line."""
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(_trace("good")) + "\n{oops\n")
    assert main(["send", str(path)]) == 2
    assert f"{path}:2: invalid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["whole file", "second line"])
def test_send_refuses_json_nested_too_deeply(
    env: LocalCollector, tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON nested deeper than the decoder goes is invalid input (exit 2), not a crash."""
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "deep.json"
    if where == "whole file":
        path.write_text(deep)
        expected = f"{path}: invalid JSON: nested too deeply"
    else:
        path.write_text(json.dumps(_trace("good")) + "\n" + deep + "\n")
        expected = f"{path}:2: invalid JSON: nested too deeply"
    assert main(["send", str(path)]) == 2
    assert expected in capsys.readouterr().err
    assert env.request_count == 0


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


@pytest.mark.parametrize("command", ["spool", "replay"])
def test_spool_commands_refuse_a_directory_that_does_not_exist(
    env: LocalCollector, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped spool directory: exit 2 naming it, and nothing is created."""
    missing = tmp_path / "no-such-spool"
    assert main([command, "--spool-dir", str(missing)]) == 2
    captured = capsys.readouterr()
    assert f"the spool directory {missing} does not exist" in captured.err
    assert "Nothing" not in captured.out
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["spool", "replay"])
def test_spool_commands_refuse_a_file_as_directory(
    env: LocalCollector,
    tmp_path: Path,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """INFINIUM_SPOOL_DIR naming a file: exit 2 naming it."""
    path = tmp_path / "a-file"
    path.write_text("not a spool")
    monkeypatch.setenv("INFINIUM_SPOOL_DIR", str(path))
    assert main([command]) == 2
    assert f"the spool directory {path} is not a directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [path]


def test_demo_whose_reader_goes_away_exits_1_quietly(tmp_path: Path) -> None:
    """``demo | head -2``: the demo's log lines (written by a logging handler) find no reader;
    the demo stops with exit status 1 and nothing on stderr (no '--- Logging error ---')."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    child = subprocess.Popen(
        [sys.executable, "-m", "infinium_logging", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ | {"TMPDIR": str(tmp_path)},
    )
    assert child.stdout is not None and child.stderr is not None
    first = [child.stdout.readline() for _ in range(2)]
    child.stdout.close()
    err = child.stderr.read()
    child.stderr.close()
    assert child.wait(60) == 1, err
    assert first[0].startswith("Local collector on http://127.0.0.1:")
    assert err == ""
