"""The ``infinium-logging serve`` command, run as users run it: in a subprocess."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
import urllib3

from infinium_logging._cli_base import OPEN_SECRET
from infinium_logging._cli_serve import _print_banner
from infinium_logging.cli import main
from infinium_logging.collector import LocalCollector
from infinium_logging.model import ExecutionStep, LlmCall, LlmUsage, TaskData, encode_task

AGENT = "3d9a7c1e-2b4f-4a6d-8e0c-1f2a3b4c5d6e"
ENV_LINE = re.compile(r"export (INFINIUM_[A-Z_]+)=(.*)")


class Served:
    """A running ``serve`` subprocess and what it printed on start."""

    def __init__(self, process: subprocess.Popen[str], banner: list[str]) -> None:
        self.process = process
        self.banner = banner
        self.env: dict[str, str] = {}
        for line in banner:
            if match := ENV_LINE.fullmatch(line):
                (self.env[match[1]],) = shlex.split(match[2])  # as a shell reads it

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, str]:
        """Send ``sig``; return the exit code and everything written to stderr."""
        self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=10)
        return self.process.returncode, err


@contextmanager
def serve(*args: str) -> Iterator[Served]:
    """Start ``python -m infinium_logging serve --port 0 ARGS`` and read its banner."""
    command = [sys.executable, "-m", "infinium_logging", "serve", "--port", "0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # If the banner never comes, kill the process so that readline() returns.
    watchdog = threading.Timer(20.0, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        banner: list[str] = []
        for line in process.stdout:
            banner.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        watchdog.cancel()
        yield Served(process, banner)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
        process.communicate()


def trace_body(name: str) -> bytes:
    """A trace with one step and token counts."""
    step = ExecutionStep(1, "llm_inference", "ask", llm_call=LlmCall("m", prompt_tokens=30))
    usage = LlmUsage(prompt_tokens=30, completion_tokens=12)
    return encode_task(
        TaskData(
            name, "a CLI test", "2026-01-01T00:00:00.000000Z", 0.5, steps=[step], llm_usage=usage
        )
    )


def test_serve_prints_env_lines_stores_traces_and_stops_on_sigterm(tmp_path: Path) -> None:
    """Open mode: the printed lines point a client at the server, the trace lands in the
    SQLite file and on stderr, and SIGTERM ends it with exit code 0."""
    db = tmp_path / "traces.sqlite3"
    body = trace_body("from the cli test")
    with serve("--db", str(db)) as served, urllib3.PoolManager(retries=False) as pool:
        base_url = served.env["INFINIUM_BASE_URL"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", base_url)
        assert served.banner[0] == f"Infinium local collector listening on {base_url}"
        agent = served.env["INFINIUM_AGENT_ID"]
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", agent)
        assert served.env["INFINIUM_AGENT_SECRET"] == OPEN_SECRET
        assert str(db) in served.banner[1]
        headers = {"x-agent-id": agent, "x-agent-key": served.env["INFINIUM_AGENT_SECRET"]}
        response = pool.request(
            "POST", f"{base_url}/agents/{agent}/trace", body=body, headers=headers
        )
        assert response.status == 200
        trace_id = response.json()["traceId"]
        with sqlite3.connect(db) as reader:
            rows = reader.execute("SELECT trace_id, agent_id, name, body FROM traces").fetchall()
        reader.close()
        assert rows == [(trace_id, agent, "from the cli test", body.decode())]
        code, err = served.stop(signal.SIGTERM)
    assert code == 0
    assert f"trace {trace_id} 'from the cli test': 1 steps, 42 tokens, {len(body)} bytes" in err
    assert "Stopped; 1 traces received." in err


def test_serve_keeps_serving_when_its_output_has_no_reader(tmp_path: Path) -> None:
    """``serve | head -1``: the banner's reader is gone, the collector serves on, and SIGTERM
    stops it with exit code 0 and no broken-pipe traceback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "infinium_logging", "serve", "--port", str(port)]
    command += ["--db", str(tmp_path / "traces.sqlite3")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        process.stdout.close()  # before the banner is written
        base_url = f"http://127.0.0.1:{port}/api/v1"
        with urllib3.PoolManager(retries=urllib3.Retry(connect=100, backoff_factor=0.05)) as pool:
            response = pool.request(
                "POST",
                f"{base_url}/agents/{AGENT}/trace",
                body=trace_body("no reader"),
                headers={"x-agent-id": AGENT, "x-agent-key": OPEN_SECRET},
            )
        assert response.status == 200
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Stopped; 1 traces received." in err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_serve_with_credentials_accepts_only_them_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """Closed mode prints the given credentials, refuses others, and exits 0 on SIGINT."""
    secret = "cli-test-secret"
    db = tmp_path / "closed.sqlite3"
    args = ("--db", str(db), "--agent-id", AGENT, "--agent-secret", secret)
    with serve(*args) as served, urllib3.PoolManager(retries=False) as pool:
        assert (served.env["INFINIUM_AGENT_ID"], served.env["INFINIUM_AGENT_SECRET"]) == (
            AGENT,
            secret,
        )
        url = f"{served.env['INFINIUM_BASE_URL']}/agents/{AGENT}/trace"
        wrong = {"x-agent-id": AGENT, "x-agent-key": "not-the-secret"}
        assert pool.request("POST", url, body=trace_body("x"), headers=wrong).status == 401
        right = {"x-agent-id": AGENT, "x-agent-key": secret}
        assert pool.request("POST", url, body=trace_body("y"), headers=right).status == 200
        code, err = served.stop(signal.SIGINT)
    assert code == 0
    assert "Stopped; 1 traces received." in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("agent_id", "secret", "says"),
    [
        (None, None, "accepting any credentials"),
        (None, "a-secret-123", "accepting any agent id with the secret below"),
        (AGENT, None, "accepting only the agent id below, with any secret"),
        (AGENT, "a-secret-123", "accepting only the credentials below"),
    ],
)
def test_serve_banner_says_which_credentials_it_accepts(
    agent_id: str | None, secret: str | None, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The banner says what the collector checks: only a secret given checks no agent id."""
    with LocalCollector(agent_id=agent_id, agent_secret=secret) as collector:
        args = argparse.Namespace(agent_id=agent_id, agent_secret=secret, db=":memory:")
        _print_banner(collector, args)
    assert says in capsys.readouterr().out


def test_serve_serves_the_prompts_file(tmp_path: Path) -> None:
    """--prompts FILE is what the prompts endpoint serves."""
    prompt_id = "8c2d4e6f-0a1b-4c3d-9e5f-7a8b9c0d1e2f"
    prompts = {prompt_id: {"key": "pk", "versions": [{"version": 1, "name": "n", "content": "c"}]}}
    path = tmp_path / "prompts.json"
    path.write_bytes(msgspec.json.encode(prompts))
    with serve("--db", ":memory:", "--prompts", str(path)) as served:
        assert "memory only" in served.banner[1]
        with urllib3.PoolManager(retries=False) as pool:
            response = pool.request(
                "GET",
                f"{served.env['INFINIUM_BASE_URL']}/prompts/{prompt_id}/v/latest",
                headers={"x-prompt-id": prompt_id, "x-prompt-key": "pk"},
            )
        assert (response.status, json.loads(response.data)["content"]) == (200, "c")
        assert served.stop()[0] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--agent-id", "agent-7"], "expected a UUID, got 'agent-7'"),
        (["serve", "--port", "70000"], "expected a port from 0 to 65535"),
        (["serve", "--port", "http"], "expected a port from 0 to 65535"),
        ([], "required: COMMAND"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Argument mistakes are refused by the parser with exit code 2 and a precise message."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_unreadable_prompts_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prompts file that does not exist is reported before anything starts."""
    missing = tmp_path / "nope.json"
    assert main(["serve", "--db", ":memory:", "--prompts", str(missing)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_busy_port_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that is taken is reported with exit code 1."""
    with LocalCollector() as busy:
        assert main(["serve", "--db", ":memory:", "--port", str(busy.port)]) == 1
    assert f"cannot listen on 127.0.0.1:{busy.port}" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the package version."""
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith("infinium-logging 0.")


def test_console_script_points_at_main() -> None:
    """The installed ``infinium-logging`` command runs ``infinium_logging.cli:main``."""
    scripts = importlib.metadata.entry_points(group="console_scripts", name="infinium-logging")
    assert [script.value for script in scripts] == ["infinium_logging.cli:main"]


def test_serve_refuses_a_secret_the_client_would_refuse(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``serve --agent-secret abc`` would print an INFINIUM_AGENT_SECRET no client accepts
    (8 characters at least): refused at once, the value not repeated."""
    with pytest.raises(SystemExit) as info:
        main(["serve", "--agent-secret", "abc1234"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "at least 8 characters" in err
    assert "abc1234" not in err


def test_serve_prints_the_viewer_url_and_serves_the_page_there(tmp_path: Path) -> None:
    """The banner says where the trace viewer is, and that URL answers with its page."""
    with serve("--db", str(tmp_path / "t.sqlite3")) as served, urllib3.PoolManager() as pool:
        base_url = served.env["INFINIUM_BASE_URL"]
        viewer = base_url.removesuffix("api/v1")
        assert f"See them in a browser at {viewer}" in served.banner
        page = pool.request("GET", viewer)
        assert page.status == 200
        assert page.headers["Content-Type"].startswith("text/html")
        code, err = served.stop()
    assert code == 0
    assert "warning" not in err


def test_serve_warns_when_bound_beyond_this_machine(tmp_path: Path) -> None:
    """--host with an address other machines can reach works, with a warning on stderr."""
    with serve("--host", "0.0.0.0", "--db", str(tmp_path / "t.sqlite3")) as served:
        code, err = served.stop()
    assert code == 0
    assert (
        "infinium-logging serve: warning: listening on 0.0.0.0, not on this machine only: "
        "anyone who can reach it can read every trace in the viewer and send traces"
    ) in err
