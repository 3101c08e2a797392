"""The gunicorn recipe (--preload, logconfig_dict) with sync and uvicorn workers, stopped by
SIGTERM to the master: every request's trace arrives or is kept for the next start."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import urllib3
from exit_support import RECIPES, child_env, free_port, names, replay_spill, wait_until

from infinium_logging.collector import LocalCollector

SHUTDOWN_TIMEOUT = 2.0
REQUESTS = 100


@pytest.mark.slow
@pytest.mark.parametrize("worker", ["sync", "uvicorn"])
def test_no_trace_is_lost_when_gunicorn_is_stopped(
    tmp_path: Path, infinium_collector: LocalCollector, worker: str
) -> None:
    """Requests, then SIGTERM to the master at once: gunicorn exits 0 as it would without the
    library, within shutdown_timeout + 1 s of its workers' own shutdown; every trace either
    arrived or is in the exit spill, which a replay delivers."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn_conf.py"]
    command += ["-b", f"127.0.0.1:{port}", "--control-socket", str(tmp_path / "ctl")]
    if worker == "uvicorn":
        command += ["-k", "uvicorn.workers.UvicornWorker", "fastapi_app:app"]
    else:
        command += ["wsgi_app:app"]
    cache = tmp_path / "cache"
    server = subprocess.Popen(
        command,
        cwd=RECIPES,
        env=child_env(infinium_collector, cache, INFINIUM_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with urllib3.PoolManager(retries=False, timeout=5.0) as http:

            def up() -> bool:
                assert server.poll() is None, server.communicate()
                try:
                    return http.request("GET", f"http://127.0.0.1:{port}/health").status == 200
                except urllib3.exceptions.HTTPError:
                    return False

            wait_until(up, 30, "gunicorn to answer")
            for number in range(REQUESTS):
                answer = http.request("GET", f"http://127.0.0.1:{port}/orders/{number}")
                assert answer.status == 200
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=40)
        took = time.monotonic() - signalled
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert took < SHUTDOWN_TIMEOUT + 1 + 5  # plus the workers' own shutdown on a busy machine
    replay_spill(infinium_collector, cache)
    assert names(infinium_collector) == {f"order {n}" for n in range(REQUESTS)}
