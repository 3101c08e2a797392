"""Interpreter exit with an exporter: never hangs, delivers what it can, safe from logging.shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest

import infinium_logging
from infinium_logging import workers as workers_module
from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.model import TaskData
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

REPO_ROOT = str(Path(infinium_logging.__file__).resolve().parent.parent)

#: Preamble of every child: an atexit hook registered first runs last, so it sees how long
#: everything after the end of the script (our own exit hook included) took.
PRELUDE = """
import atexit, sys, time
_ended = []
atexit.register(lambda: print(f"EXIT_TOOK {time.monotonic() - _ended[0]:.3f}", flush=True))
from infinium_logging.exporter import Exporter
from infinium_logging.model import TaskData
def trace(name):
    return TaskData(name, "described", "2026-01-01T00:00:00Z", 1.0)
"""


def run_child(
    tmp_path: Path, body: str, timeout: float = 30.0
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run PRELUDE + body in a fresh interpreter; return the result and the exit duration."""
    script = tmp_path / "child.py"
    script.write_text(PRELUDE + textwrap.dedent(body) + "\n_ended.append(time.monotonic())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    took = [line for line in result.stdout.splitlines() if line.startswith("EXIT_TOOK ")]
    assert took, f"child did not finish cleanly: {result.stdout!r} {result.stderr!r}"
    return result, float(took[-1].split()[1])


def logging_child(base_url: str, body: str) -> str:
    """A child's code: ``log`` (logger "app", at INFO) with an InfiniumHandler on the default
    exporter, configured from the environment to send to ``base_url``; then ``body``."""
    setup = f"""
import logging, os
os.environ.update(INFINIUM_AGENT_ID={TEST_AGENT_ID!r}, INFINIUM_AGENT_SECRET={TEST_AGENT_SECRET!r},
                  INFINIUM_BASE_URL={base_url!r})
from infinium_logging import InfiniumHandler
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(InfiniumHandler())
"""
    return setup + textwrap.dedent(body)


def exporter_line(base_url: str, **settings: object) -> str:
    values = {
        "agent_id": TEST_AGENT_ID,
        "agent_secret": TEST_AGENT_SECRET,
        "base_url": base_url,
        "enable_rate_limiting": False,
        **settings,
    }
    args = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return f"exporter = Exporter({args})\n"


@pytest.mark.slow
def test_exit_with_the_server_down_ends_within_the_shutdown_timeout(tmp_path: Path) -> None:
    """Nothing listening: the child still exits within shutdown_timeout plus a small epsilon."""
    with LocalCollector() as gone:
        url = gone.base_url
    body = exporter_line(url, shutdown_timeout=1.0, retry_backoff_base=0.3, max_retries=50)
    body += "for i in range(20):\n    exporter.submit(trace(f't{i}'))\n"
    result, took = run_child(tmp_path, body)
    assert result.returncode == 0
    assert took <= 1.0 + 0.5
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_exit_with_a_hanging_server_ends_within_the_shutdown_timeout(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """Requests that never get an answer do not hold the interpreter past the deadline."""
    infinium_collector.hang_next(1000)
    body = exporter_line(infinium_collector.base_url, shutdown_timeout=1.0, timeout=30.0)
    body += "for i in range(10):\n    exporter.submit(trace(f't{i}'))\n"
    body += "time.sleep(0.2)\n"  # let the requests start hanging
    result, took = run_child(tmp_path, body)
    assert result.returncode == 0
    assert took <= 1.0 + 0.5
    assert infinium_collector.faults.get("hang", 0) >= 1
    assert "Traceback" not in result.stderr


def test_traces_pending_at_exit_are_delivered(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """A program that submits and simply ends still delivers (the exit hook flushes)."""
    body = exporter_line(infinium_collector.base_url, shutdown_timeout=10.0)
    body += "for i in range(50):\n    exporter.submit(trace(f't{i}'))\n"
    result, _took = run_child(tmp_path, body)
    assert result.returncode == 0
    assert infinium_collector.wait_for(50, timeout=5)
    names = sorted(t.task.name for t in infinium_collector.traces())
    assert names == sorted(f"t{i}" for i in range(50))


def test_a_trace_logged_by_an_atexit_handler_is_delivered(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """An atexit handler of the application's that logs a trace (its first) still delivers it:
    the exit hook runs after the application's own, and sends from the exiting thread when no
    sender thread can be started any more (Python 3.12+ refuses new threads at exit)."""
    body = logging_child(
        infinium_collector.base_url,
        """
        atexit.register(lambda: log.info("said at exit", extra={"infinium": True}))
        """,
    )
    result, _took = run_child(tmp_path, body)
    assert result.returncode == 0, result.stderr
    assert infinium_collector.wait_for(1, timeout=5)
    assert [t.task.name for t in infinium_collector.traces()] == ["said at exit"]


def test_the_readmes_sigterm_recipe_delivers_what_is_queued(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """SIGTERM made an ordinary exit, as the README shows: the exit hook runs and what was
    queued is delivered (Python's default action would end the process at once)."""
    body = logging_child(
        infinium_collector.base_url,
        """
        import signal
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        for i in range(20):
            log.info("event %d", i, extra={"infinium": True})
        _ended.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the signal ends the process before this does
        """,
    )
    result, _took = run_child(tmp_path, body)
    assert result.returncode == 128 + 15, result.stderr
    assert infinium_collector.wait_for(20, timeout=5)
    assert len(infinium_collector.traces()) == 20


def test_with_no_sender_thread_to_be_had_shutdown_sends_from_its_own_thread(
    infinium_collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What happens at interpreter exit on Python 3.12+, here on any version: thread start
    fails, the traces wait, and shutdown sends them itself within its deadline."""

    class Refused(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

    exporter = Exporter(
        agent_id=TEST_AGENT_ID,
        agent_secret=TEST_AGENT_SECRET,
        base_url=infinium_collector.base_url,
        enable_rate_limiting=False,
    )
    # Only the exporter's own threads are refused (the collector needs its own).
    shim = types.SimpleNamespace(**{**vars(threading), "Thread": Refused})
    with monkeypatch.context() as patch:
        patch.setattr(workers_module, "threading", shim)
        for i in range(3):
            assert exporter.submit(TaskData(f"t{i}", "d", "2026-01-01T00:00:00Z", 1.0))
        assert exporter.stats().sent == 0
        assert exporter.shutdown(10)
    stats = exporter.stats()
    assert (stats.sent, stats.queued, sum(stats.dropped.values())) == (3, 0, 0)
    assert sorted(t.task.name for t in infinium_collector.traces()) == ["t0", "t1", "t2"]


def test_a_task_never_exited_is_sent_at_exit_as_abandoned(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """``task(...).__enter__()`` with no exit: the process ends, and the trace is sent with what
    it recorded and a TaskAbandoned error, inner task first, as a nested step of the outer."""
    body = logging_child(
        infinium_collector.base_url,
        """
        from infinium_logging import task
        task("forgotten").__enter__()
        log.info("in it")
        task("inner").__enter__()
        log.info("deeper")
        """,
    )
    result, _took = run_child(tmp_path, body)
    assert result.returncode == 0, result.stderr
    assert infinium_collector.wait_for(2, timeout=5)
    traces = {t.task.name: t.task for t in infinium_collector.traces()}
    assert sorted(traces) == ["forgotten", "inner"]
    outer = traces["forgotten"]
    assert [s.description for s in outer.steps or []][:1] == ["in it"]
    assert [s.action for s in outer.steps or []][1:] == ["subtask"]
    assert {e.error_type for e in outer.errors or []} == {"TaskAbandoned"}
    assert {e.message for e in outer.errors or []} == {
        "the task was still open when the process exited"
    }
    assert [s.description for s in traces["inner"].steps or []] == ["deeper"]


def test_shutdown_from_logging_shutdown_is_safe(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """A handler whose close() shuts the exporter down: logging.shutdown() neither hangs nor errs.

    The drop summary the exporter logs from inside that close() goes to the
    other handlers and not back into the closing one.
    """
    infinium_collector.hang_next(1000)
    body = exporter_line(infinium_collector.base_url, shutdown_timeout=0.5, timeout=30.0)
    body += textwrap.dedent(
        """
        import logging
        class ShippingHandler(logging.Handler):
            def emit(self, record):
                if record.name.startswith("infinium_logging"):
                    return
                exporter.submit(trace(record.getMessage()))
            def close(self):
                exporter.shutdown()
                super().close()
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        logging.getLogger().addHandler(ShippingHandler())
        for i in range(5):
            logging.getLogger("app").info("event %d", i)
        time.sleep(0.2)
        started = time.monotonic()
        logging.shutdown()
        print(f"LOGGING_SHUTDOWN_TOOK {time.monotonic() - started:.3f}", flush=True)
        print("STATS", exporter.stats().dropped["shutdown"], flush=True)
        """
    )
    result, took = run_child(tmp_path, body)
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert float(lines["LOGGING_SHUTDOWN_TOOK"]) <= 0.5 + 0.5
    assert lines["STATS"] == "5"
    assert "dropped 5 trace(s)" in result.stderr
    assert took < 0.5


@pytest.mark.parametrize("owned", [False, True], ids=["default-exporter", "handler-own-exporter"])
def test_logging_shutdown_then_exit_waits_for_stuck_traces_once(
    tmp_path: Path, infinium_collector: LocalCollector, owned: bool
) -> None:
    """A script that calls logging.shutdown() itself, its traces stuck on a hanging server:
    the handler's flush waits shutdown_timeout once; neither the handler's close() (of an
    exporter it made) nor the exit hook then waits for the same traces again."""
    infinium_collector.hang_next(1000)
    url = infinium_collector.base_url
    body = textwrap.dedent(
        f"""
        import logging, os
        os.environ.update(INFINIUM_AGENT_ID={TEST_AGENT_ID!r},
                          INFINIUM_AGENT_SECRET={TEST_AGENT_SECRET!r}, INFINIUM_BASE_URL={url!r},
                          INFINIUM_SHUTDOWN_TIMEOUT="1", INFINIUM_TIMEOUT="30",
                          INFINIUM_ENABLE_RATE_LIMITING="false", INFINIUM_EXIT_SPOOL="false")
        from infinium_logging import InfiniumHandler
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)  # to see the drop said
        log = logging.getLogger("app")
        log.setLevel(logging.INFO)
        log.addHandler(InfiniumHandler(**({{"shutdown_timeout": 1.0}} if {owned!r} else {{}})))
        log.info("stuck", extra={{"infinium": True}})
        time.sleep(0.2)  # let the request start hanging
        started = time.monotonic()
        logging.shutdown()
        print(f"LOGGING_SHUTDOWN_TOOK {{time.monotonic() - started:.3f}}", flush=True)
        """
    )
    result, took = run_child(tmp_path, body)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert 1.0 <= float(lines["LOGGING_SHUTDOWN_TOOK"]) < 1.7
    assert took < 0.5
    assert "dropped 1 trace(s)" in result.stderr  # still counted, and said


def test_exit_without_any_submit_starts_nothing(tmp_path: Path) -> None:
    """An exporter that never got a trace starts no thread and costs nothing at exit."""
    body = exporter_line("http://127.0.0.1:9/api/v1")
    body += textwrap.dedent(
        """
        import threading
        print("THREADS", sorted(t.name for t in threading.enumerate()), flush=True)
        """
    )
    result, took = run_child(tmp_path, body)
    assert "THREADS ['MainThread']" in result.stdout
    assert took < 0.5


def test_shutdown_timeout_comes_from_the_environment(tmp_path: Path) -> None:
    """INFINIUM_SHUTDOWN_TIMEOUT bounds the exit too."""
    with LocalCollector() as gone:
        url = gone.base_url
    body = textwrap.dedent(
        f"""
        import os
        os.environ.update(INFINIUM_AGENT_ID={TEST_AGENT_ID!r}, INFINIUM_AGENT_SECRET={TEST_AGENT_SECRET!r},
                          INFINIUM_BASE_URL={url!r}, INFINIUM_SHUTDOWN_TIMEOUT="0.5",
                          INFINIUM_RETRY_BACKOFF_BASE="0.2", INFINIUM_MAX_RETRIES="100")
        exporter = Exporter()
        assert exporter.settings.shutdown_timeout == 0.5
        started = time.monotonic()
        exporter.submit(trace("t"))
        """
    )
    started = time.monotonic()
    result, took = run_child(tmp_path, body)
    assert result.returncode == 0
    assert took <= 0.5 + 0.5
    assert time.monotonic() - started < 20
