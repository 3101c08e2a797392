"""The Celery recipe: a real prefork worker with embedded beat, on the filesystem broker, stopped
by SIGTERM (warm shutdown) right after its tasks ran: every task's trace arrives or is kept."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from exit_support import RECIPES, child_env, names, replay_spill, wait_until

from infinium_logging.collector import LocalCollector

TASKS = 40
SHUTDOWN_TIMEOUT = 2.0


@pytest.mark.slow
def test_worker_and_beat_lose_no_trace_at_warm_shutdown(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """TASKS tasks queued, a worker (two prefork children, beat embedded) runs them and the
    heartbeats beat sends, then SIGTERM: it exits 0, and each task's trace and a heartbeat are
    at the collector (after replaying anything kept in the exit spill)."""
    env = child_env(
        infinium_collector,
        tmp_path / "cache",
        INFINIUM_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
        CELERY_BROKER_DIR=str(tmp_path / "broker"),
    )
    queue = f"from celery_app import summarise\nfor i in range({TASKS}): summarise.delay(i)"
    subprocess.run([sys.executable, "-c", queue], cwd=RECIPES, env=env, check=True, timeout=60)
    output = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-B"]
    command += ["-s", str(tmp_path / "beat-schedule"), "--pool", "prefork", "-c", "2"]
    command += ["--loglevel", "INFO"]
    with output.open("w") as sink:
        worker = subprocess.Popen(
            command,
            cwd=RECIPES,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            # Every queued task and at least one heartbeat have run: their traces are submitted.
            wait_until(
                lambda: output.read_text().count("succeeded") > TASKS, 60, "the tasks to run"
            )
            signalled = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=40)
            took = time.monotonic() - signalled
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    log = output.read_text()
    assert worker.returncode == 0, log
    assert "Warm shutdown" in log
    assert took < SHUTDOWN_TIMEOUT + 1 + 8  # plus Celery's own warm shutdown on a busy machine
    replay_spill(infinium_collector, tmp_path / "cache")
    arrived = names(infinium_collector)
    assert {f"summarise {n}" for n in range(TASKS)} <= arrived
    assert "heartbeat" in arrived
