"""End to end: the stdlib handler -> the default exporter -> Infinium and Infino, through an
outage, a kill -9 and a restart; and the infino_sdk logger never recorded."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporters import wait_until
from infino_server import ACCESS_KEY, SECRET_KEY, InfinoServer, running
from sinks import ListSink

from infinium_logging import _default, infino_default
from infinium_logging.collector import LocalCollector
from infinium_logging.handler import InfiniumHandler
from infinium_logging.infino import InfinoSink
from infinium_logging.tasks import task
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

DATASET = "infinium-traces"
REPO_ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.fixture
def infino(monkeypatch: pytest.MonkeyPatch) -> Iterator[InfinoServer]:
    """A local Infino endpoint; INFINIUM_INFINO_* point at it (no other INFINIUM_* set), and
    the default exporter and Infino sink are forgotten afterwards."""
    for name in list(os.environ):
        if name.startswith("INFINIUM_"):
            monkeypatch.delenv(name)
    _default._reset_default()
    for server in running():
        monkeypatch.setenv("INFINIUM_INFINO_ENDPOINT", server.url)
        monkeypatch.setenv("INFINIUM_INFINO_ACCESS_KEY", ACCESS_KEY)
        monkeypatch.setenv("INFINIUM_INFINO_SECRET_KEY", SECRET_KEY)
        try:
            yield server
        finally:
            infino_default._reset()
            _default._reset_default()


@pytest.fixture
def logger(stdlib_logger: logging.Logger) -> Iterator[logging.Logger]:
    """The test's logger with the handler on the default exporter."""
    handler = InfiniumHandler()
    stdlib_logger.addHandler(handler)
    yield stdlib_logger
    stdlib_logger.removeHandler(handler)


def _log_traces(log: logging.Logger, count: int) -> None:
    for number in range(count):
        log.info("done %d", number, extra={"infinium": {"name": f"trace-{number:03}"}})


def test_both_destinations_through_an_outage_without_duplicates(
    infino: InfinoServer,
    infinium_collector: LocalCollector,
    monkeypatch: pytest.MonkeyPatch,
    logger: logging.Logger,
) -> None:
    """With Infinium and Infino configured, every trace reaches both; both down for a while
    (Infino answering 503, the collector refusing) delays them but loses and doubles nothing."""
    monkeypatch.setenv("INFINIUM_BASE_URL", infinium_collector.base_url)
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    monkeypatch.setenv("INFINIUM_ENABLE_RATE_LIMITING", "false")
    monkeypatch.setenv("INFINIUM_RETRY_BACKOFF_BASE", "0.05")
    monkeypatch.setenv("INFINIUM_RETRY_BACKOFF_MAX", "0.2")
    monkeypatch.setenv("INFINIUM_MAX_RETRIES", "50")
    infino.down = True
    infinium_collector.set_down()
    _log_traces(logger, 20)
    assert wait_until(lambda: infino.requests and infino.requests[-1][2] == 503, timeout=10.0)
    infino.down = False
    assert infinium_collector.traces() == []
    infinium_collector.set_up()
    exporter = _default.get_default_exporter()
    assert exporter.flush(30.0)
    assert infinium_collector.wait_for(20, timeout=10.0)
    names = sorted(t.task.name for t in infinium_collector.traces())
    assert names == [f"trace-{n:03}" for n in range(20)]
    stored = infino.documents(DATASET)
    assert sorted(doc["name"] for doc in stored) == names
    assert len(infino.ids(DATASET)) == 20
    assert set(infino.writes.values()) == {1}
    assert infino.bad_signatures == 0
    stats = exporter.stats()
    assert stats.sent == 20 and stats.destinations["infinium"].sent == 20
    infino_stats = stats.destinations["infino"]
    assert infino_stats.sent == 20 and infino_stats.retries >= 1, infino_stats
    assert infino_stats.dropped == {} and infino_stats.queued == 0


def test_only_infino_without_infinium_credentials(
    infino: InfinoServer, logger: logging.Logger
) -> None:
    """With no Infinium agent configured, the default exporter is the Infino sink's and sends
    to Infino only; a task() goes there too, its steps included."""
    _log_traces(logger, 3)
    with task("with steps"):
        logger.info("first step")
        logger.info("second step")
    sink = infino_default.default_infino()
    assert sink is not None and sink.flush(10.0)
    docs = {doc["name"]: doc for doc in infino.documents(DATASET)}
    assert set(docs) == {"trace-000", "trace-001", "trace-002", "with steps"}, sink.stats()
    assert docs["with steps"]["step_count"] == 2
    assert "second step" in docs["with steps"]["steps"]
    # No Infinium exporter: the default exporter is the Infino sink's, with Infino's
    # destinations alone.
    assert _default.peek_default_exporter() is sink.exporter
    assert set(sink.exporter.stats().destinations) == {"infino"}


def test_infino_alone_keeps_the_sample_rate(
    infino: InfinoServer, monkeypatch: pytest.MonkeyPatch, logger: logging.Logger
) -> None:
    """``INFINIUM_SAMPLE_RATE`` applies with Infino alone too: a share of the traces reach
    it, the rest are counted as sampled out."""
    monkeypatch.setenv("INFINIUM_SAMPLE_RATE", "0.5")
    _log_traces(logger, 40)
    sink = infino_default.default_infino()
    assert sink is not None and sink.flush(10.0)
    stored = len(infino.documents(DATASET))
    assert 0 < stored < 40
    assert sink.exporter.stats().sampled_out == 40 - stored


def test_the_sink_as_an_explicit_exporter(
    infino: InfinoServer, stdlib_logger: logging.Logger
) -> None:
    """An InfinoSink works wherever exporter= is taken."""
    sink = InfinoSink(linger=0.05)
    log = stdlib_logger
    handler = InfiniumHandler(exporter=sink)
    log.addHandler(handler)
    try:
        log.info("x", extra={"infinium": {"name": "explicit"}})
        assert sink.flush(10.0)
    finally:
        log.removeHandler(handler)
        sink.shutdown()
    assert [doc["name"] for doc in infino.documents(DATASET)] == ["explicit"]


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO])
def test_the_infino_sdk_logger_is_never_recorded(level: int) -> None:
    """infino-sdk logs its secret key at DEBUG: its records never become traces or steps."""
    sink = ListSink()
    handler = IniniumHandlerOnRoot(sink)
    sdk_logger = logging.getLogger("infino_sdk.client")
    old = sdk_logger.level
    sdk_logger.setLevel(logging.DEBUG)
    try:
        with task("app work", exporter=sink):
            sdk_logger.log(level, "signing with secret %s", SECRET_KEY)
            record = logging.LogRecord("infino_sdk", level, __file__, 1, SECRET_KEY, (), None)
            record.infinium = True
            handler.handler.handle(record)
    finally:
        sdk_logger.setLevel(old)
        handler.close()
    (trace,) = sink.tasks
    assert not trace.steps
    assert SECRET_KEY not in repr(trace)


class IniniumHandlerOnRoot:
    """The handler on the root logger, as an application sets it up, removed by close()."""

    def __init__(self, sink: ListSink) -> None:
        self.handler = InfiniumHandler(exporter=sink, level=logging.DEBUG)
        self.root = logging.getLogger()
        self.old_level = self.root.level
        self.root.setLevel(logging.DEBUG)
        self.root.addHandler(self.handler)

    def close(self) -> None:
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.old_level)


@pytest.mark.slow
def test_kill_9_then_restart_delivers_every_spooled_trace_once(
    infino: InfinoServer, tmp_path: Path
) -> None:
    """A child logging to Infino only, with a spool and Infino down, is killed with SIGKILL;
    a new sink on the same spool delivers every trace the child logged, each once."""
    infino.down = True
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    env.update(
        PYTHONPATH=REPO_ROOT + os.pathsep + env.get("PYTHONPATH", ""),
        INFINIUM_INFINO_ENDPOINT=infino.url,
        INFINIUM_INFINO_ACCESS_KEY=ACCESS_KEY,
        INFINIUM_INFINO_SECRET_KEY=SECRET_KEY,
        INFINIUM_SPOOL_DIR=str(tmp_path),
    )
    script = textwrap.dedent(
        """
        import logging, time
        from infinium_logging.handler import InfiniumHandler
        log = logging.getLogger("agent")
        log.setLevel(logging.INFO)
        log.addHandler(InfiniumHandler())
        for i in range(200):
            log.info("step", extra={"infinium": {"name": f"k{i:03}"}})
            print("logged", i, flush=True)
            time.sleep(0.002)
        print("finished", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(60.0, child.kill)
    watchdog.start()
    logged: list[int] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("logged "):
                logged.append(int(line.split()[1]))
                if len(logged) == 80:
                    child.send_signal(signal.SIGKILL)
                    break
        rest, errors = child.communicate(timeout=30)
    finally:
        watchdog.cancel()
    logged += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("logged ")]
    assert child.returncode == -signal.SIGKILL
    assert "Traceback" not in errors
    infino.down = False
    sink = InfinoSink(spool_dir=str(tmp_path), linger=0.05)
    try:
        # A sender adopts what the dead process left, as the Infinium exporter's do.
        assert wait_until(lambda: sink.stats().adopted >= len(logged), timeout=30.0)
        assert wait_until(lambda: len(infino.ids(DATASET)) >= len(logged), timeout=30.0)
        assert sink.flush(10.0)
    finally:
        sink.shutdown()
    names = sorted(doc["name"] for doc in infino.documents(DATASET))
    assert names[: len(logged)] == [f"k{i:03}" for i in logged]
    assert len(names) == len(set(names))
    assert set(infino.writes.values()) == {1}


def test_the_default_exporter_itself_sends_to_both(
    infino: InfinoServer, infinium_collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``get_default_exporter().submit()`` (no handler involved) sends to Infino too, and its
    ``flush()`` waits for both destinations."""
    monkeypatch.setenv("INFINIUM_BASE_URL", infinium_collector.base_url)
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    monkeypatch.setenv("INFINIUM_ENABLE_RATE_LIMITING", "false")
    exporter = _default.get_default_exporter()
    for number in range(3):
        assert exporter.submit({"name": f"direct-{number}", "description": "d", "duration": 0.5})
    assert exporter.flush(30.0)
    assert sorted(doc["name"] for doc in infino.documents(DATASET)) == [
        "direct-0", "direct-1", "direct-2"
    ]  # fmt: skip
    assert sorted(t.task.name for t in infinium_collector.traces()) == [
        "direct-0", "direct-1", "direct-2"
    ]  # fmt: skip
