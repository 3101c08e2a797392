"""The exporter with a durable spool: write-ahead, keeping instead of dropping, replay, the CLI."""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import pickle
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from exporters import balanced, make_exporter, settings_for, trace
from exporters import wait_until as _wait_until

from infinium_logging.cli import main
from infinium_logging.collector import LocalCollector
from infinium_logging.durability import replay_spool
from infinium_logging.errorinfo import error_from_exc_info
from infinium_logging.events import tagged_trace
from infinium_logging.exporter import Exporter
from infinium_logging.model import ApiResponse, TaskData, encode_task
from infinium_logging.spool import MAGIC, Spool, read_segment, survey
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    """:func:`exporters.wait_until` with more time: spool work goes through the disk."""
    return _wait_until(predicate, timeout)


def drained(exporter: Exporter) -> bool:
    """Nothing queued, in flight or waiting in the spool."""
    stats = exporter.stats()
    return stats.queued == stats.in_flight == stats.spooled == 0


def names(collector: LocalCollector) -> list[str]:
    return sorted(t.task.name for t in collector.traces())


def spool_files(spool_dir: Path) -> list[str]:
    root = spool_dir / TEST_AGENT_ID
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.suffix in (".log", ".ack"))


@pytest.fixture
def collector(infinium_collector: LocalCollector) -> LocalCollector:
    """The shared test collector (a shorter name)."""
    return infinium_collector


# --- write-ahead and settling ---------------------------------------------------------------------


def test_a_trace_is_in_the_spool_before_submit_returns(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """With nothing reachable, both a TaskData and a dict are on disk as soon as submit returns."""
    collector.set_down()
    exporter = make_exporter(
        collector, tmp_path, max_retries=100, retry_backoff_base=1.0, retry_backoff_max=1.0
    )
    try:
        assert exporter.submit(trace("typed"))
        assert exporter.submit({"name": "loose", "description": "d", "duration": "2"})
        [pending] = survey(str(tmp_path))
        assert (pending.agent_id, pending.records, pending.live_records) == (TEST_AGENT_ID, 2, 2)
        assert exporter.stats().spool_pending_records == 2
    finally:
        exporter.shutdown(0.2)
    [left] = survey(str(tmp_path))
    assert (left.records, left.live_records, left.orphaned_records) == (2, 0, 2)


def test_delivered_traces_leave_the_spool(collector: LocalCollector, tmp_path: Path) -> None:
    """Accepted traces are settled in the spool; after shutdown no segment file is left."""
    with make_exporter(collector, tmp_path) as exporter:
        for i in range(20):
            assert exporter.submit(trace(f"t{i}"))
            assert exporter.submit({"name": f"d{i}", "description": "d"})
        assert exporter.flush(10)
        stats = exporter.stats()
    assert (stats.sent, stats.dropped_total, stats.spooled, stats.spool_pending_records) == (
        40,
        0,
        0,
        0,
    )
    assert spool_files(tmp_path) == []
    assert names(collector) == sorted([f"t{i}" for i in range(20)] + [f"d{i}" for i in range(20)])
    root = tmp_path / TEST_AGENT_ID
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


@pytest.mark.parametrize("rejected", [False, True])
def test_a_trace_counts_as_settled_only_once_its_record_is(
    collector: LocalCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rejected: bool
) -> None:
    """Whoever sees a trace sent or dropped for good (stats(), flush()) finds its spool record
    settled too: no moment shows it delivered yet pending in the spool."""
    acking = threading.Event()
    proceed = threading.Event()
    original = Spool.ack

    def held_ack(spool: Spool, ref: Any) -> None:
        acking.set()
        assert proceed.wait(10)
        original(spool, ref)

    monkeypatch.setattr(Spool, "ack", held_ack)
    if rejected:
        collector.fail_next(1, 422)
    with make_exporter(collector, tmp_path, workers=1) as exporter:
        assert exporter.submit(trace("one"))
        assert acking.wait(10)
        during = exporter.stats()
        proceed.set()
        assert exporter.flush(10)
        after = exporter.stats()
    assert (during.sent, during.dropped_total, during.in_flight) == (0, 0, 1)
    assert (after.sent, after.dropped_total) == ((0, 1) if rejected else (1, 0))
    assert after.spool_pending_records == 0


def test_the_spool_directory_is_made_on_the_first_submit(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Constructing an exporter creates nothing on disk; the first trace creates the spool."""
    spool_dir = tmp_path / "not-yet"
    with make_exporter(collector, spool_dir) as exporter:
        assert not spool_dir.exists()
        assert exporter.submit(trace("first"))
        assert (spool_dir / TEST_AGENT_ID).is_dir()
        assert exporter.flush(5)
    assert names(collector) == ["first"]


def test_a_full_queue_keeps_traces_in_the_spool(collector: LocalCollector, tmp_path: Path) -> None:
    """Past max_queue_size, traces wait in the spool instead of being dropped, then arrive."""
    collector.latency = 0.2
    with make_exporter(collector, tmp_path, workers=1, max_queue_size=4) as exporter:
        accepted = [exporter.submit(trace(f"t{i}")) for i in range(30)]
        stats = exporter.stats()
        assert balanced(stats)
        collector.latency = 0.0
        assert wait_until(lambda: drained(exporter))
        final = exporter.stats()
    assert accepted == [True] * 30
    assert stats.dropped["queue_full"] == 0
    assert stats.spooled >= 20
    assert (final.sent, final.dropped_total, final.spooled) == (30, 0, 0)
    assert balanced(final)
    assert names(collector) == sorted(f"t{i}" for i in range(30))


def test_exhausted_retries_keep_the_trace_for_a_later_attempt(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A trace still failing after max_retries is retried later from the spool, not dropped."""
    collector.fail_next(6, 503)
    with make_exporter(collector, tmp_path, workers=1, max_retries=1) as exporter:
        assert exporter.submit(trace("stubborn"))
        assert wait_until(lambda: drained(exporter) and exporter.stats().sent == 1)
        stats = exporter.stats()
    assert stats.dropped_total == 0
    assert stats.retries >= 3
    assert collector.faults["http_503"] == 6
    assert names(collector) == ["stubborn"]


def test_rejected_traces_are_dropped_and_settled_in_the_spool(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A 422 is final: counted as rejected, removed from the spool, never sent again."""
    collector.fail_next(1, 422)
    with make_exporter(collector, tmp_path, workers=1) as exporter:
        assert exporter.submit(trace("refused"))
        assert exporter.submit(trace("fine"))
        assert wait_until(lambda: drained(exporter) and exporter.stats().sent == 1)
        stats = exporter.stats()
    assert (stats.dropped["rejected"], stats.spooled, stats.spool_pending_records) == (1, 0, 0)
    assert spool_files(tmp_path) == []
    assert names(collector) == ["fine"]


def test_refused_credentials_keep_traces_in_the_spool(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A 401 is not a loss with a spool: the trace waits and goes once the credentials pass."""
    collector.fail_next(3, 401)
    with make_exporter(collector, tmp_path, workers=1, auth_backoff=0.05) as exporter:
        assert exporter.submit(trace("patient"))
        assert wait_until(lambda: drained(exporter) and exporter.stats().sent == 1)
        stats = exporter.stats()
    assert stats.dropped["auth"] == 0
    assert collector.faults["http_401"] == 3
    assert names(collector) == ["patient"]


def test_on_result_sees_a_trace_taken_up_from_the_spool(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A record read back from the spool is reported with a TaskData and its trace id."""
    collector.set_down()
    with make_exporter(collector, tmp_path, shutdown_timeout=0.2) as first:
        assert first.submit(trace("later", input_summary="in"))
    collector.set_up()
    seen: list[tuple[Any, ApiResponse]] = []
    with make_exporter(collector, tmp_path, on_result=lambda t, r: seen.append((t, r))):
        assert wait_until(lambda: len(seen) == 1)
    [(task, response)] = seen
    assert isinstance(task, TaskData)
    assert (task.name, task.input_summary, response.success) == ("later", "in", True)
    assert response.trace_id == collector.traces()[0].trace_id


# --- restart --------------------------------------------------------------------------------------


def test_what_shutdown_could_not_deliver_is_sent_by_the_next_start(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Left in the spool at the deadline (not counted lost); the next exporter sends it unasked."""
    collector.set_down()
    first = make_exporter(collector, tmp_path, shutdown_timeout=0.3, max_retries=100)
    for i in range(10):
        assert first.submit(trace(f"t{i}"))
        assert first.submit({"name": f"d{i}", "description": "d", "duration": "2.5"})
    started = time.monotonic()
    assert first.shutdown() is True
    assert time.monotonic() - started < 0.3 + 0.5
    left = first.stats()
    assert (left.spooled, left.dropped_total, left.sent) == (20, 0, 0)
    assert balanced(left)

    collector.set_up()
    second = make_exporter(collector, tmp_path)  # no submit: the spool alone starts it
    try:
        assert collector.wait_for(20, timeout=10)
        assert wait_until(lambda: drained(second))
        stats = second.stats()
    finally:
        second.shutdown()
    assert (stats.adopted, stats.sent, stats.submitted, stats.dropped_total) == (20, 20, 0, 0)
    assert balanced(stats)
    received = {t.task.name: t.task for t in collector.traces()}
    assert sorted(received) == sorted([f"t{i}" for i in range(10)] + [f"d{i}" for i in range(10)])
    assert received["d3"].duration == 2.5  # the dict was read leniently, as in memory
    assert spool_files(tmp_path) == []


def test_a_dict_kept_for_later_is_resent_exactly_as_memory_would_send_it(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A dict that ran out of retries is kept as its coerced wire body: after a restart the
    trace is byte for byte what it would have been (bytes read as text, not base64)."""
    collector.set_down()
    submitted = {"name": "loose", "description": "d", "input_summary": b"caf\xc3\xa9"}
    first = make_exporter(
        collector, tmp_path, max_retries=0, retry_backoff_base=5.0, retry_backoff_max=5.0
    )
    try:
        assert first.submit(submitted)
        assert wait_until(lambda: first.stats().spooled == 1)
    finally:
        first.shutdown(0.1)
    collector.set_up()
    with make_exporter(collector, tmp_path) as second:
        assert wait_until(lambda: second.stats().sent == 1)
    [received] = collector.traces()
    assert (received.task.name, received.task.input_summary) == ("loose", "café")


# Run by a child process, given INFINIUM_* and a pickled value on stdin: it submits the value
# (a dict), or logs a tagged event with it through InfiniumHandler, then dies at once (os._exit:
# no shutdown, no flush) unless told to exit normally (the default exporter then delivers).
_CHILD = """
import logging, os, pickle, sys
from infinium_logging import InfiniumHandler, get_default_exporter
how, value = pickle.load(sys.stdin.buffer)
if how == "submit":
    accepted = get_default_exporter().submit(value)
elif how == "structlog":
    import structlog
    from infinium_logging import InfiniumProcessor
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            InfiniumProcessor(),
        ],
    )
    try:
        raise RuntimeError("card declined")
    except RuntimeError:
        log.exception("Refund ticket-7", infinium=value)
    accepted = get_default_exporter().stats().submitted == 1
else:
    log = logging.getLogger("agent.refunds")
    log.propagate = False
    log.addHandler(InfiniumHandler())
    try:
        raise RuntimeError("card declined")
    except RuntimeError:
        log.exception("Refund %s", "ticket-7", extra={"infinium": value})
    accepted = get_default_exporter().stats().submitted == 1
if os.environ.get("INFINIUM_SPOOL_DIR"):
    os._exit(0 if accepted else 1)
"""


def _child(collector: LocalCollector, how: str, value: Any, spool_dir: Path | None) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    environ |= {
        "INFINIUM_AGENT_ID": TEST_AGENT_ID,
        "INFINIUM_AGENT_SECRET": TEST_AGENT_SECRET,
        "INFINIUM_BASE_URL": collector.base_url,
        "INFINIUM_ENABLE_RATE_LIMITING": "false",
    }
    if spool_dir is not None:
        environ["INFINIUM_SPOOL_DIR"] = str(spool_dir)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=pickle.dumps((how, value)),
        env=environ,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr


def _sent_after_a_crash(
    collector: LocalCollector, tmp_path: Path, how: str, value: Any
) -> tuple[int, bytes]:
    """The kind of the record a process that died at once left in the spool (see _CHILD), and
    the body delivered when the next start read it back."""
    collector.set_down()
    _child(collector, how, value, tmp_path)
    [segment] = (tmp_path / TEST_AGENT_ID).glob("*.log")
    [(_, kind, _)] = read_segment(segment.read_bytes())[0]
    collector.set_up()
    with make_exporter(collector, tmp_path) as second:
        assert wait_until(lambda: second.stats().sent == 1)
    [received] = collector.traces()
    return kind, received.body


def _sent_from_memory(collector: LocalCollector, how: str, value: Any) -> bytes:
    """The body delivered for the same by a process without a spool (after one other)."""
    _child(collector, how, value, None)
    [_, received] = collector.traces()
    return received.body


def test_a_dict_read_back_after_a_crash_is_sent_as_memory_would_send_it(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Bytes, NaN and non-string keys in a submitted dict come back from the spool as they
    were (in the record a crashed process left), so lenient coercion makes the same trace of
    them as it does in memory."""
    submitted = {
        "name": "loose",
        "description": "d",
        "current_datetime": "2026-11-22T10:00:00Z",
        "input_summary": b"caf\xc3\xa9",
        "metadata": {1: "one", "ratio": float("nan"), "seen": ("a", "b")},
    }
    kind, body = _sent_after_a_crash(collector, tmp_path, "submit", submitted)
    assert body == _sent_from_memory(collector, "submit", submitted)
    assert b'"input_summary":"caf\xc3\xa9"' in body
    assert kind == 2  # MessagePack


def test_a_dict_messagepack_cannot_hold_is_kept_as_json(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """An int past 64 bits or a lone surrogate: the record is JSON of the dict's JSON-safe
    copy, and the trace is still delivered after a crash."""
    submitted = {
        "name": "odd \ud800 name",
        "description": "d",
        "current_datetime": "2026-11-22T10:00:00Z",
        "metadata": {"big": 2**70},
    }
    kind, body = _sent_after_a_crash(collector, tmp_path, "submit", submitted)
    assert kind == 1  # JSON
    assert body == _sent_from_memory(collector, "submit", submitted)
    assert b'"name":"odd \xef\xbf\xbd name"' in body


def test_a_logged_event_is_kept_as_captured_and_built_after_a_crash(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A tagged record is written as the handler captured it (its tag's dict, the formatted
    message, the exception, the environment) and built when read back: the trace is the one
    memory would have sent."""
    fields = {
        "description": "Refund a duplicate charge",
        "current_datetime": "2026-11-22T10:00:00Z",
        "input_summary": b"caf\xc3\xa9",
        "environment": {"custom_tags": {"team": "billing"}},
    }
    kind, body = _sent_after_a_crash(collector, tmp_path, "log", fields)
    assert kind == 3  # the captured event
    assert body == _sent_from_memory(collector, "log", fields)
    [received] = [t.task for t in collector.traces()[:1]]
    assert received.name == "Refund ticket-7"
    assert received.input_summary == "café"
    assert received.errors is not None
    assert "card declined" in received.errors[0].message
    assert received.environment is not None
    assert received.environment.custom_tags == {"team": "billing", "logger": "agent.refunds"}


def test_a_structlog_event_is_kept_as_captured_and_built_after_a_crash(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """The same for an event through InfiniumProcessor (its time is TimeStamper's text)."""
    fields = {"description": "Refund a duplicate charge", "input_summary": b"caf\xc3\xa9"}
    kind, _ = _sent_after_a_crash(collector, tmp_path, "structlog", fields)
    assert kind == 3
    [received] = [t.task for t in collector.traces()]
    assert (received.name, received.input_summary) == ("Refund ticket-7", "café")
    assert received.errors is not None
    assert "card declined" in received.errors[0].message
    logged = dt.datetime.fromisoformat(received.current_datetime.replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - logged).total_seconds()) < 60


def test_a_captured_event_messagepack_cannot_hold_is_built_before_it_is_written(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """An int past 64 bits in the tag's dict: the trace is built on the caller's thread and
    written as a dict record instead, and still delivered after a crash."""
    fields = {"current_datetime": "2026-11-22T10:00:00Z", "metadata": {"big": 2**70}}
    kind, body = _sent_after_a_crash(collector, tmp_path, "log", fields)
    assert kind == 1  # JSON of the built trace
    assert body == _sent_from_memory(collector, "log", fields)


def test_a_captured_record_that_does_not_describe_an_event_is_counted_invalid(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Read back, a record of the captured kind that holds something else is dropped as
    invalid (counted), and the records around it are delivered."""
    spool = Spool(str(tmp_path), TEST_AGENT_ID)
    spool.append(encode_task(trace("before")))
    spool.append(msgspec.msgpack.encode(["not", "an", "event"]), 3)
    spool.append(encode_task(trace("after")))
    spool.close()
    with make_exporter(collector, tmp_path) as exporter:
        assert wait_until(lambda: exporter.stats().sent == 2)
        assert wait_until(lambda: exporter.stats().dropped["invalid"] == 1)
        assert balanced(exporter.stats())
    assert names(collector) == ["after", "before"]


def test_an_exporter_without_pending_records_starts_no_thread(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """An existing but empty spool directory does not start the senders at construction."""
    (tmp_path / TEST_AGENT_ID).mkdir(mode=0o700)
    before = {t.name for t in threading.enumerate()}
    with make_exporter(collector, tmp_path) as exporter:
        after = {t.name for t in threading.enumerate()}
        assert not any(n.startswith("infinium-exporter-") for n in after - before)
        assert exporter.stats().submitted == 0


def test_records_a_live_process_holds_are_left_to_it(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Two exporters on one spool: the second never takes the first's pending records."""
    collector.set_down()
    first = make_exporter(
        collector, tmp_path, max_retries=100, retry_backoff_base=1.0, retry_backoff_max=1.0
    )
    second = make_exporter(collector, tmp_path)
    try:
        assert first.submit(trace("mine"))
        assert second.submit(trace("yours"))
        time.sleep(0.1)  # room for the second's adoption pass
        assert second.stats().adopted == 0
    finally:
        first.shutdown(0.1)
        second.shutdown(0.1)
    assert sorted(p.live_records for p in survey(str(tmp_path))) == [0]
    assert survey(str(tmp_path))[0].records == 2


def test_corrupt_records_are_skipped_and_counted(collector: LocalCollector, tmp_path: Path) -> None:
    """A damaged record in an adopted segment is counted; the others are delivered."""
    spool = Spool(str(tmp_path), TEST_AGENT_ID)
    for name in ("a", "b", "c"):
        spool.append(encode_task(trace(name)))
    spool.close()
    segment = next((tmp_path / TEST_AGENT_ID).glob("*.log"))
    data = bytearray(segment.read_bytes())
    data[data.index(b'"b"')] ^= 0xFF  # a bad checksum
    data += MAGIC + b"\x00\x00\x00"  # and a torn tail
    segment.write_bytes(bytes(data))
    with make_exporter(collector, tmp_path) as exporter:
        assert wait_until(lambda: exporter.stats().sent == 2)
        stats = exporter.stats()
    assert (stats.adopted, stats.spool_corrupt, stats.dropped_total) == (2, 2, 0)
    assert names(collector) == ["a", "c"]


# --- limits and disk trouble ----------------------------------------------------------------------


def test_eviction_past_spool_max_bytes_is_counted(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Past spool_max_bytes the oldest waiting traces are evicted, counted as spool_full."""
    collector.set_down()
    exporter = make_exporter(
        collector,
        tmp_path,
        spool_max_bytes=256 * 1024,
        max_queue_size=2,
        workers=1,
        max_retries=100,
        retry_backoff_base=1.0,
        retry_backoff_max=1.0,
    )
    try:
        for i in range(100):
            assert exporter.submit(trace(f"t{i:03}", description="x" * 8000)) in (True, False)
        stats = exporter.stats()
        assert stats.dropped["spool_full"] > 0
        assert stats.spool_pending_bytes <= 256 * 1024 + 64 * 1024
        assert balanced(stats)
        collector.set_up()
        assert wait_until(lambda: drained(exporter), timeout=20)
        final = exporter.stats()
    finally:
        exporter.shutdown(1)
    assert balanced(final)
    assert final.sent + final.dropped["spool_full"] == 100
    arrived = names(collector)
    assert len(arrived) == final.sent == len(set(arrived))
    assert "t099" in arrived  # the newest are kept


def test_a_long_outage_at_the_bound_keeps_the_backlog_index_small(tmp_path: Path) -> None:
    """Records handed back and then evicted do not pile up in the spool's memory."""
    evicted: list[int] = []
    spool = Spool(
        str(tmp_path),
        TEST_AGENT_ID,
        max_bytes=256 * 1024,
        segment_bytes=64 * 1024,
        listener=lambda event, n: evicted.append(n) if event == "evicted" else None,
    )
    try:
        for i in range(3000):
            assert spool.release(spool.append(b"%06d" % i + b"x" * 1000))
        waiting = spool.backlog_size()
        assert sum(evicted) + waiting == 3000
        assert waiting <= 256 * 1024 // 1000
        assert len(spool._backlog) <= waiting + 64 * 1024 // 1000  # at most a segment stale
        first = spool.take_backlog(1)[0][2]
        assert int(first[:6]) == 3000 - waiting  # the oldest survivor comes first
    finally:
        spool.close()


def test_a_spool_that_cannot_be_created_costs_durability_not_traces(
    collector: LocalCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spool_dir that is a file: every trace still goes, in memory; one warning, counted."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    caplog.set_level(logging.WARNING, logger="infinium_logging")
    with make_exporter(collector, blocker) as exporter:
        assert all(exporter.submit(trace(f"t{i}")) for i in range(5))
        assert exporter.flush(5)
        stats = exporter.stats()
    assert (stats.sent, stats.spool_write_errors, stats.dropped_total) == (5, 5, 0)
    warnings = [r for r in caplog.records if "cannot write to the spool" in r.getMessage()]
    assert len(warnings) == 1
    assert TEST_AGENT_SECRET not in caplog.text


def test_a_full_disk_falls_back_to_memory_for_that_trace(
    collector: LocalCollector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ENOSPC on the spool write: submit neither raises nor drops; the trace goes from memory."""
    real_append = Spool.append
    failures = {"left": 3}

    def append(self: Spool, payload: bytes, kind: int = 0) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(self, payload, kind)

    monkeypatch.setattr(Spool, "append", append)
    caplog.set_level(logging.WARNING, logger="infinium_logging")
    with make_exporter(collector, tmp_path) as exporter:
        assert all(exporter.submit(trace(f"t{i}")) for i in range(6))
        assert exporter.flush(5)
        stats = exporter.stats()
    assert (stats.sent, stats.spool_write_errors, stats.dropped_total) == (6, 3, 0)
    assert sum("No space left" in r.getMessage() for r in caplog.records) == 1
    assert names(collector) == [f"t{i}" for i in range(6)]


def test_spool_write_cost_on_the_callers_thread_is_tens_of_microseconds(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Encoding, the redaction scan and the record write for an 11 KB trace stay under a
    millisecond."""
    collector.hang_next(10_000)
    big = trace("big", description="d" * 5000, input_summary="i" * 3000, output_summary="o" * 3000)
    assert 11_000 < len(encode_task(big)) < 12_500
    exporter = make_exporter(
        collector, tmp_path, workers=1, max_queue_size=5000, timeout=30.0, shutdown_timeout=0.1
    )
    try:
        exporter.submit(big)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(200):
                exporter.submit(big)
            best = min(best, (time.perf_counter() - started) / 200)
    finally:
        exporter.shutdown(0.1)
    # The benchmark measures it precisely (tens of microseconds, plus the redaction scan that
    # keeps secrets off the disk); this only guards against a regression by an order of
    # magnitude on a busy machine.
    assert best < 1e-3


# --- replay_spool and the command line --------------------------------------------------------------


def orphan_records(tmp_path: Path, collector: LocalCollector, count: int) -> None:
    """Leave ``count`` traces (half TaskData, half dicts) in the spool, as a dead process would."""
    up = collector.is_up
    collector.set_down()
    with make_exporter(collector, tmp_path, shutdown_timeout=0.1, max_retries=100) as exporter:
        for i in range(count):
            if i % 2:
                exporter.submit({"name": f"o{i:02}", "description": "d", "duration": 1})
            else:
                exporter.submit(trace(f"o{i:02}"))
    if up:
        collector.set_up()


def test_replay_spool_sends_orphans_and_reports(collector: LocalCollector, tmp_path: Path) -> None:
    """replay_spool delivers every orphaned record, counts a rejection, and empties the spool."""
    orphan_records(tmp_path, collector, 12)
    collector.fail_next(1, 422)
    progress: list[tuple[int, int]] = []
    report = replay_spool(
        settings_for(collector, tmp_path), progress=lambda d, t: progress.append((d, t))
    )
    assert (report.found, report.sent, report.rejected, report.failed, report.busy) == (
        12,
        11,
        1,
        0,
        0,
    )
    assert report.last_error is not None and "422" in report.last_error
    assert sorted(progress)[-1] == (12, 12)
    assert len(names(collector)) == 11
    assert survey(str(tmp_path)) == []


def test_replay_spool_builds_captured_events_and_reads_dict_records(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Every kind of record replays: a captured event is built (its message, error and
    environment), a dict is read leniently, and a record of no known kind (a newer format's)
    is not taken: its segment is kept in quarantine once the others are settled."""
    captured = tagged_trace(
        {"description": "Refund", "current_datetime": "2026-11-22T10:00:00Z"},
        "Refund %s",
        ("ticket-7",),
        1.0,
        None,
        error_from_exc_info(RuntimeError("card declined")),
        {"custom_tags": {"team": "billing"}},
    )
    spool = Spool(str(tmp_path), TEST_AGENT_ID)
    spool.append(msgspec.msgpack.encode(captured.spool_form()), 3)
    spool.append(msgspec.msgpack.encode({"name": "as a dict", "duration": "2.5"}), 2)
    spool.append(msgspec.json.encode({"name": "as JSON", "duration": 1}), 1)
    spool.append(b"?", 99)
    spool.close()
    report = replay_spool(settings_for(collector, tmp_path))
    assert (report.found, report.sent, report.rejected) == (3, 3, 0)
    quarantined = tmp_path / TEST_AGENT_ID / "quarantine"
    assert [p.suffix for p in sorted(quarantined.iterdir())] == [".ack", ".log"]
    assert b"?" in next(quarantined.glob("*.log")).read_bytes()
    received = {t.task.name: t.task for t in collector.traces()}
    assert sorted(received) == ["Refund ticket-7", "as JSON", "as a dict"]
    event = received["Refund ticket-7"]
    assert event.errors is not None
    assert "card declined" in event.errors[0].message
    assert event.environment is not None
    assert event.environment.custom_tags == {"team": "billing"}
    assert received["as a dict"].duration == 2.5


def test_replay_spool_stops_at_an_outage_and_keeps_the_rest(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """With the endpoint down, replay stops at the first failure; every record stays."""
    orphan_records(tmp_path, collector, 6)
    collector.set_down()
    report = replay_spool(settings_for(collector, tmp_path, max_retries=1))
    assert (report.found, report.sent, report.failed) == (6, 0, 6)
    [left] = survey(str(tmp_path))
    assert (left.records, left.orphaned_records) == (6, 6)


def test_cli_spool_shows_pending_and_replay_sends_them(
    collector: LocalCollector,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``spool`` lists the orphans per agent without touching them; ``replay`` sends them (0)."""
    orphan_records(tmp_path, collector, 4)
    for name in list(os.environ):
        if name.startswith("INFINIUM_"):
            monkeypatch.delenv(name)
    assert main(["spool", "--spool-dir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    row = next(line for line in shown.splitlines() if line.startswith(TEST_AGENT_ID))
    assert row.split()[1] == "4"  # traces
    assert row.split()[-2:] == ["0", "4"]  # live, orphaned
    assert survey(str(tmp_path))[0].records == 4  # nothing taken over

    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    monkeypatch.setenv("INFINIUM_ENABLE_RATE_LIMITING", "false")
    code = main(
        [
            "replay",
            "--spool-dir",
            str(tmp_path),
            "--base-url",
            collector.base_url,
            "--agent-id",
            TEST_AGENT_ID,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "4 sent, 0 rejected" in out
    assert names(collector) == ["o00", "o01", "o02", "o03"]
    assert main(["spool", "--spool-dir", str(tmp_path)]) == 0
    assert "Nothing pending" in capsys.readouterr().out


def test_cli_replay_exit_status_says_what_failed(
    collector: LocalCollector,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1 when traces could not be sent (they stay), 2 without a spool directory."""
    for name in list(os.environ):
        if name.startswith("INFINIUM_"):
            monkeypatch.delenv(name)
    orphan_records(tmp_path, collector, 3)
    collector.set_down()
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    monkeypatch.setenv("INFINIUM_MAX_RETRIES", "0")
    flags = ["--base-url", collector.base_url, "--agent-id", TEST_AGENT_ID]
    assert main(["replay", "--spool-dir", str(tmp_path), *flags]) == 1
    captured = capsys.readouterr()
    assert "3 not sent (still in the spool)" in captured.out
    assert TEST_AGENT_SECRET not in captured.out + captured.err
    assert survey(str(tmp_path))[0].records == 3
    assert main(["replay", *flags]) == 2
    assert "no spool directory" in capsys.readouterr().err
    assert main(["spool"]) == 2
