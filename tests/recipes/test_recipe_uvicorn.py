"""The FastAPI recipe under a real uvicorn: SIGTERM and Ctrl+C after a burst of requests lose
nothing (delivered, or kept in the exit spill that the next start sends)."""

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


def serve(
    collector: LocalCollector, cache: Path, workers: int
) -> tuple[subprocess.Popen[str], int]:
    """Start ``uvicorn fastapi_app:app --log-config uvicorn_logging.json`` and wait until it
    answers."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "fastapi_app:app",
            "--log-config",
            "uvicorn_logging.json",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=RECIPES,
        env=child_env(collector, cache, INFINIUM_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    http = urllib3.PoolManager(retries=False, timeout=2.0)

    def up() -> bool:
        assert server.poll() is None, server.communicate()
        try:
            return http.request("GET", f"http://127.0.0.1:{port}/health").status == 200
        except urllib3.exceptions.HTTPError:
            return False

    try:
        wait_until(up, 30, "uvicorn to answer")
    except BaseException:
        server.kill()
        raise
    finally:
        http.clear()
    return server, port


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "signum", "requests"),
    [(1, signal.SIGTERM, 200), (1, signal.SIGINT, 100), (2, signal.SIGTERM, 100)],
    ids=["sigterm", "sigint", "sigterm-2-workers"],
)
def test_no_trace_is_lost_when_uvicorn_is_stopped(
    tmp_path: Path,
    infinium_collector: LocalCollector,
    workers: int,
    signum: signal.Signals,
    requests: int,
) -> None:
    """Requests, then the signal at once: uvicorn ends as it would without the library (by the
    signal, for one worker), within its graceful shutdown plus shutdown_timeout + 1 s; every
    request's trace either arrived or is in the exit spill, which a replay delivers."""
    cache = tmp_path / "cache"
    server, port = serve(infinium_collector, cache, workers)
    try:
        with urllib3.PoolManager(retries=False, timeout=10.0) as http:
            for number in range(requests):
                answer = http.request("GET", f"http://127.0.0.1:{port}/orders/{number}")
                assert answer.status == 200
        signalled = time.monotonic()
        server.send_signal(signum)
        _, stderr = server.communicate(timeout=30)
        took = time.monotonic() - signalled
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    if workers == 1:
        # uvicorn raises the signal again once it is done: SIGTERM's default action ends the
        # process; the KeyboardInterrupt of SIGINT it catches itself (exit status 0), the
        # library leaves SIGINT alone.
        assert server.returncode == (-signum if signum == signal.SIGTERM else 0), stderr
    assert "Traceback" not in stderr.replace("KeyboardInterrupt", "") or signum == signal.SIGINT
    # The deadline plus a second, plus what uvicorn's own shutdown and a busy machine take.
    assert took < SHUTDOWN_TIMEOUT + 1 + 5
    if requests == 200:
        # The throttle (bursts of 20, then 10/s) held some back: the spill is what is tested.
        assert len(names(infinium_collector)) < requests
    replay_spill(infinium_collector, cache)
    assert names(infinium_collector) == {f"order {n}" for n in range(requests)}
