"""Every failure to deliver is explained once, when it happens (also while the exporter closes),
and reaches stderr when only named loggers are configured (Django's way)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from exit_support import child_env, free_port, run_script

from infinium_logging import failures
from infinium_logging.collector import LocalCollector
from infinium_logging.settings import Settings
from infinium_logging.testing import TEST_AGENT_ID

#: A short script: one trace logged through a named logger (the library's own has no handler
#: that shows anything), then the end; the failure happens while the exporter closes.
SCRIPT = """
import logging
from infinium_logging import InfiniumHandler
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.propagate = False
log.addHandler(InfiniumHandler())
log.info("one", extra={"infinium": True})
"""


def explanations(stderr: str) -> list[str]:
    """The explanations the child wrote to stderr itself."""
    return [line for line in stderr.splitlines() if line.startswith("infinium_logging: ")]


def test_wrong_secret_names_the_variables(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """A refused secret: which variables to check, the status and where."""
    env = child_env(infinium_collector, tmp_path / "cache", INFINIUM_AGENT_SECRET="wrong-secret")
    env["INFINIUM_SHUTDOWN_TIMEOUT"] = "1"
    result = run_script(tmp_path, SCRIPT, env)
    assert result.returncode == 0, result.stderr
    [said] = explanations(result.stderr)
    assert "refused the agent credentials" in said
    assert "INFINIUM_AGENT_SECRET" in said and "INFINIUM_AGENT_ID" in said
    assert infinium_collector.base_url in said
    assert "wrong-secret" not in result.stderr


def test_base_url_without_api_v1_is_explained(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """A base URL missing /api/v1: the server's answer, the URL and the hint."""
    base = infinium_collector.base_url.removesuffix("/api/v1")
    env = child_env(infinium_collector, tmp_path / "cache", INFINIUM_BASE_URL=base)
    result = run_script(tmp_path, SCRIPT, env)
    assert result.returncode == 0, result.stderr
    [said] = explanations(result.stderr)
    assert "rejected a trace (HTTP 404)" in said
    assert f"{base}/agents/{TEST_AGENT_ID}/trace" in said
    assert "usually ends in /api/v1" in said


def test_collector_down_names_host_port_and_error(tmp_path: Path) -> None:
    """Nothing listening: host:port and the error (with its errno), said while closing; the
    trace is kept for the next start."""
    port = free_port()
    env = child_env(
        None,
        tmp_path / "cache",
        INFINIUM_BASE_URL=f"http://127.0.0.1:{port}/api/v1",
        INFINIUM_AGENT_ID=TEST_AGENT_ID,
        INFINIUM_AGENT_SECRET="a-secret-of-sixteen",
        INFINIUM_SHUTDOWN_TIMEOUT="1",
    )
    result = run_script(tmp_path, SCRIPT, env)
    assert result.returncode == 0, result.stderr
    [said] = explanations(result.stderr)
    assert f"127.0.0.1:{port} is unreachable" in said
    assert "Connection refused" in said
    assert "a-secret-of-sixteen" not in result.stderr


def test_retries_exhausted_gives_the_last_error(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """A server failing every attempt: the first failure is said when it happens; the
    periodic drop line names the last error."""
    infinium_collector.fail_next(100, 503)
    env = child_env(
        infinium_collector,
        tmp_path / "cache",
        INFINIUM_MAX_RETRIES="1",
        INFINIUM_RETRY_BACKOFF_BASE="0.01",
        INFINIUM_SHUTDOWN_TIMEOUT="3",
    )
    body = SCRIPT + "import time; time.sleep(1)\n"
    body = "import logging, sys\nlogging.basicConfig(stream=sys.stderr)\n" + body
    result = run_script(tmp_path, body, env)
    assert result.returncode == 0, result.stderr
    assert not explanations(result.stderr)  # the root logger shows them: no second copy
    assert "could not be delivered to 127.0.0.1:" in result.stderr
    assert "after 1 retries: ServerError" in result.stderr
    assert "retries_exhausted=1 (last error: ServerError" in result.stderr


def test_explanations_are_given_once_per_kind() -> None:
    """``tell`` says the first failure of a kind for an owner, and no later one."""
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    catcher = Catch()
    logger = logging.getLogger("infinium_logging.exporter")
    logger.addHandler(catcher)
    try:
        owner = type("Owner", (), {})()
        settings = Settings(agent_id=TEST_AGENT_ID, agent_secret="x" * 16)
        for _ in range(3):
            failures.tell(owner, "max_elapsed", "NetworkError: reset", settings, "dropped")
    finally:
        logger.removeHandler(catcher)
    assert len(seen) == 1
    assert "after 120 s of retries: NetworkError: reset" in seen[0]


@pytest.mark.parametrize("kind", failures.KINDS)
def test_every_kind_has_its_sentence(kind: str) -> None:
    """Each kind of failure reads as its own sentence, ending with what became of the trace."""
    settings = Settings(agent_id=TEST_AGENT_ID, agent_secret="x" * 16)
    said = failures.explain(kind, "SomeError: what went wrong", settings, "dropped")
    assert said.endswith(".")
    assert ("dropped" in said) or kind == "rejected"
