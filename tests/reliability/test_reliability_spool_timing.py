"""Reliability 8, hostile timing: the spool under re-entry, interrupted writes, forks and races.

Each fault is injected where it hurts (through a hook on the spool's writer or its
``flock``, a signal raised from inside the spool, a fork while a lock is held), never
left to luck.  Scenarios that hung before run in a child interpreter with a timeout.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from exporters import wait_until
from reliability_support import (
    STATS_PRINTER,
    child_accounted,
    reported,
    run_child,
    settings_for,
    settings_literal,
)

import infinium_logging.spool as spool_module
from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter
from infinium_logging.handler import InfiniumHandler
from infinium_logging.model import MAX_BODY_BYTES
from infinium_logging.sanitise import TRUNCATION_MARK
from infinium_logging.spool import Spool, read_segment
from infinium_logging.testing import TEST_AGENT_ID as AGENT_ID
from infinium_logging.testing import TEST_AGENT_SECRET

AGENT = "4f1c2b9e-8d7a-4e61-9f3b-2a5c6d7e8f90"
QUARANTINE = "quarantine"


def payloads(spool: Spool) -> list[bytes]:
    """Every record the spool's backlog hands out."""
    return [payload for _, _, payload in spool.take_backlog(10_000)]


def orphan(tmp_path: Path, records: list[bytes]) -> None:
    """Leave ``records`` in a segment nobody holds (as a process that ended leaves them)."""
    spool = Spool(str(tmp_path), AGENT, adopt=False)
    for record in records:
        spool.append(record)
    spool.close()


# --- 1. re-entry from a signal handler or a finalizer ---------------------------------------------

_REENTRY_CHILD = """
import gc, json, logging, signal, sys
import infinium_logging.spool as spool_module
from infinium_logging.exporter import Exporter
from infinium_logging.handler import InfiniumHandler
from infinium_logging.settings import Settings
{printer}
exporter = Exporter({settings})
log = logging.getLogger("app")
log.addHandler(InfiniumHandler(exporter=exporter))
log.setLevel(logging.INFO)
log.propagate = False

def log_again():
    log.info("logged from inside the spool", extra={{"infinium": "re-entrant"}})

class Finalized:
    def __init__(self):
        self.cycle = self  # only the garbage collector frees it, wherever it runs
    def __del__(self):
        log_again()

signal.signal(signal.SIGUSR1, lambda signum, frame: log_again())
real = spool_module._write_record
fired = []

def write(*args):
    # Inside Spool.append, with its lock held.
    if not fired:
        fired.append(1)
        if {trigger!r} == "signal":
            signal.raise_signal(signal.SIGUSR1)
        else:
            Finalized()
            gc.collect()
    return real(*args)

spool_module._write_record = write
log.info("the outer event", extra={{"infinium": "outer"}})
print("FLUSHED", json.dumps(exporter.flush(20)), flush=True)
print_stats("STATS", exporter)
exporter.shutdown(5)
"""


@pytest.mark.parametrize("trigger", ["signal", "finalizer"])
def test_an_event_logged_from_inside_the_spool_neither_hangs_nor_is_lost(
    infinium_collector: LocalCollector, tmp_path: Path, trigger: str
) -> None:
    """A tagged event logged by a signal handler, or by a ``__del__`` the garbage collector
    runs, while the same thread is inside ``Spool.append`` does not wait on the spool's lock
    (the process hung for good): it is delivered from memory, counted as a spool write error,
    and the event being written when it came is delivered too."""
    collector = infinium_collector
    settings = settings_for(collector, tmp_path)
    script = _REENTRY_CHILD.format(
        printer=STATS_PRINTER, settings=settings_literal(settings), trigger=trigger
    )
    done = run_child(script, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert reported(done.stdout, "FLUSHED") is True
    stats = reported(done.stdout, "STATS")
    assert child_accounted(stats), stats
    assert (stats["sent"], stats["spool_write_errors"]) == (2, 1)
    assert sorted(t.task.name for t in collector.traces()) == ["outer", "re-entrant"]


_DEFAULT_REENTRY_CHILD = """
import json, logging, os, signal
os.environ.update({env!r})
import infinium_logging._default as default
from infinium_logging.handler import InfiniumHandler
log = logging.getLogger("app")
log.addHandler(InfiniumHandler())  # the default exporter, configured from the environment
log.setLevel(logging.INFO)
log.propagate = False
real = default.settings_or_off
fired = []

def settings_or_off(*args, **kwargs):
    # Reading the environment to create the default exporter, its lock held.
    if not fired:
        fired.append(1)
        signal.raise_signal(signal.SIGUSR1)
    return real(*args, **kwargs)

default.settings_or_off = settings_or_off
signal.signal(
    signal.SIGUSR1, lambda signum, frame: log.info("again", extra={{"infinium": "re-entrant"}})
)
log.info("the outer event", extra={{"infinium": "outer"}})
print("FIRED", json.dumps(bool(fired)), flush=True)
print("FLUSHED", json.dumps(default.get_default_exporter().flush(20)), flush=True)
"""


def test_an_event_logged_while_the_default_exporter_is_set_up_does_not_hang(
    infinium_collector: LocalCollector,
) -> None:
    """A signal handler that logs while the first event is reading the environment for the
    default exporter (its lock held) does not wait on that lock: both events are delivered."""
    collector = infinium_collector
    env = {
        "INFINIUM_AGENT_ID": AGENT_ID,
        "INFINIUM_AGENT_SECRET": TEST_AGENT_SECRET,
        "INFINIUM_BASE_URL": collector.base_url,
    }
    done = run_child(_DEFAULT_REENTRY_CHILD.format(env=env), timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert reported(done.stdout, "FIRED") is True
    assert reported(done.stdout, "FLUSHED") is True
    assert sorted(t.task.name for t in collector.traces()) == ["outer", "re-entrant"]


_ACK_REENTRY_CHILD = """
import json, signal
import infinium_logging.spool as spool_module
from infinium_logging.sanitise import TRUNCATION_MARK
from infinium_logging.model import MAX_BODY_BYTES
from infinium_logging.spool import Spool, read_segment
from infinium_logging.testing import TEST_AGENT_ID as AGENT_ID
from infinium_logging.testing import TEST_AGENT_SECRET
spool = Spool({directory!r}, {agent!r})
first, second = spool.append(b"first"), spool.append(b"second")
outcome = {{}}

def handler(signum, frame):
    # Runs while the main thread is inside Spool.ack, its lock held.
    try:
        spool.append(b"from the handler")
    except OSError as exc:
        outcome["append"] = exc.errno
    spool.ack(second)
    outcome["stats"] = spool.stats().pending_records

real = spool_module._write_all
def write_all(*args):
    if not outcome:
        signal.raise_signal(signal.SIGUSR1)
    return real(*args)

signal.signal(signal.SIGUSR1, handler)
spool_module._write_all = write_all
spool.ack(first)
print("OUTCOME", json.dumps(outcome), flush=True)
print("PENDING", json.dumps(spool.stats().pending_records), flush=True)
spool.close()
"""


def test_a_signal_handler_calling_the_spool_inside_ack_does_not_hang(tmp_path: Path) -> None:
    """A signal handler that appends and acknowledges while its thread is inside ``Spool.ack``:
    the append is refused at once (EDEADLK: the caller keeps the trace in memory), the
    acknowledgement is done when the outer call ends, and a reading answers meanwhile."""
    script = _ACK_REENTRY_CHILD.format(directory=str(tmp_path), agent=AGENT)
    done = run_child(script, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = reported(done.stdout, "OUTCOME")
    assert outcome == {"append": errno.EDEADLK, "stats": 1}
    assert reported(done.stdout, "PENDING") == 0
    again = Spool(str(tmp_path), AGENT)
    assert payloads(again) == []  # both settled, nothing half-written left behind
    again.close()


# --- 2. an exception in the middle of a write ---------------------------------------------------


def _whole_then_interrupted(real: Any) -> Any:
    def write(*args: Any) -> None:
        real(*args)
        raise KeyboardInterrupt  # after the write, before the spool noted where it ended

    return write


def _torn_then_interrupted(real: Any) -> Any:
    def write(fd: int, header: bytes, payload: bytes, *offset: int) -> None:
        real(fd, header, payload[: len(payload) // 2], *offset)
        raise KeyboardInterrupt  # half the record out, as a signal handler raising would

    return write


@pytest.mark.parametrize("fault", [_whole_then_interrupted, _torn_then_interrupted])
def test_an_exception_mid_write_never_shifts_the_records_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: Any
) -> None:
    """A BaseException raised inside a record's write (Ctrl-C, a soft time limit) leaves the
    spool consistent: the records written after it keep their places, so acknowledging them
    settles exactly them (before, every later position shifted: acknowledged traces were sent
    again, others lost, intact ones read back as garbage)."""
    spool = Spool(str(tmp_path), AGENT)
    records = [b"record-%02d" % i + b"." * 100 for i in range(25)]
    refs = [spool.append(record) for record in records[:5]]
    monkeypatch.setattr(spool_module, "_write_record", fault(vars(spool_module)["_write_record"]))
    with pytest.raises(KeyboardInterrupt):
        spool.append(b"interrupted" + b"!" * 300)
    monkeypatch.undo()
    refs += [spool.append(record) for record in records[5:]]
    for ref in refs[::2]:
        spool.ack(ref)
    assert all(spool.holds(ref) for ref in refs[1::2])
    spool.close()
    again = Spool(str(tmp_path), AGENT)
    assert payloads(again) == records[1::2]
    assert again.stats().corrupt == 0
    again.close()


# --- 3. a fork while the directory's lock is held -----------------------------------------------


def _adopting_in_a_thread(tmp_path: Path) -> tuple[Spool, threading.Thread, threading.Event, Any]:
    """A spool whose adoption pass (in a thread) stops while it holds the directory's lock,
    until the returned ``go`` is set."""
    orphan(tmp_path, [b"left by a dead process"])
    holding, go = threading.Event(), threading.Event()

    def listener(event: str, count: int) -> None:
        if event == "adopted":
            holding.set()
            go.wait(30)

    adopter = Spool(str(tmp_path), AGENT, adopt=False, listener=listener)
    thread = threading.Thread(target=adopter.adopt)
    thread.start()
    assert holding.wait(30)
    return adopter, thread, go, holding


def test_a_child_forked_during_adoption_does_not_keep_the_directory_locked(
    tmp_path: Path,
) -> None:
    """A process forked while another thread holds the spool directory's lock (adopting a dead
    process's segments): once the parent's pass ends, the lock is free, although the child
    lives on (it kept it for its whole life, and ``replay`` waited forever)."""
    adopter, thread, go, _ = _adopting_in_a_thread(tmp_path)
    read_end, write_end = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: lives until the parent closes the pipe
        try:
            os.close(write_end)
            os.write(ready_write, b"r")
            os.read(read_end, 1)
        finally:
            os._exit(0)
    os.close(read_end)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"r"
        # The child holds no descriptor of the spool's: not the directory's lock, not the
        # segment being adopted (it would keep them locked after the parent's death).
        held = []
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                held.append(os.readlink(f"/proc/{pid}/fd/{name}"))
            except OSError:
                continue
        assert not [path for path in held if path.startswith(str(tmp_path))]
        go.set()
        thread.join(30)
        probe = os.open(tmp_path / AGENT / ".lock", os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while held
        finally:
            os.close(probe)
    finally:
        go.set()
        os.close(write_end)
        os.close(ready_read)
        os.waitpid(pid, 0)
        adopter.close()


def test_adoption_waits_boundedly_and_names_the_holder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While another adoption pass holds the directory, a new spool (what ``replay`` opens)
    waits ``lock_wait`` seconds, then fails with a message naming the directory and the pid
    of the process holding it, instead of waiting forever; a running exporter's adoption
    pass (``adopt()``) also says so as a warning."""
    caplog.set_level(logging.WARNING, logger="infinium_logging.spool")
    adopter, thread, go, _ = _adopting_in_a_thread(tmp_path)
    other = Spool(str(tmp_path), AGENT, adopt=False)
    try:
        with pytest.raises(TimeoutError) as raised:
            Spool(str(tmp_path), AGENT, lock_wait=0.1)
        message = str(raised.value)
        assert str(tmp_path / AGENT) in message
        assert f"locked by process {os.getpid()}" in message
        assert not caplog.records  # the caller is told; nothing is logged
        with pytest.raises(TimeoutError):
            other.adopt(wait=0.05)
        [warning] = [r.getMessage() for r in caplog.records]
        assert str(tmp_path / AGENT) in warning
        assert "tried again later" in warning
    finally:
        other.close()
        go.set()
        thread.join(30)
        adopter.close()


# --- 4. adoption racing the owner's removal of a settled segment --------------------------------


def test_a_segment_settled_between_its_opening_and_its_lock_is_not_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adopter delayed between opening a segment and locking it, while its live owner
    settles every record and removes it, takes nothing over: it would have sent all of
    those delivered records again (their delivery marks went with the segment)."""
    owner = Spool(str(tmp_path), AGENT, segment_bytes=64 * 1024)
    refs = [owner.append(b"%04d" % i + b"x" * 1000) for i in range(70)]  # two segments
    first = refs[0].segment
    done = [r for r in refs if r.segment == first]
    assert 0 < len(done) < len(refs)
    adopter = Spool(str(tmp_path), AGENT, adopt=False)
    real = fcntl.flock
    armed = [True]

    def delayed(fd: int, operation: int) -> None:
        locking = operation == fcntl.LOCK_EX | fcntl.LOCK_NB
        if armed[0] and locking and os.fstat(fd).st_ino == os.stat(first).st_ino:
            armed[0] = False
            for ref in done:  # meanwhile, the owner settles them all
                owner.ack(ref)
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", delayed)
    adopter.adopt()
    monkeypatch.undo()
    assert not armed[0]
    assert not os.path.exists(first)
    assert (adopter.stats().adopted, payloads(adopter)) == (0, [])
    adopter.close()
    owner.close()


# --- 5. files this version cannot read --------------------------------------------------------


def test_a_segment_of_an_unknown_format_is_kept_in_quarantine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A segment written by a newer format (another magic), and one holding a record of a kind
    this version does not know, are set aside in ``quarantine/`` with their delivery marks,
    counted and warned about, never deleted; the known records beside them are adopted."""
    caplog.set_level(logging.WARNING, logger="infinium_logging.spool")
    root = tmp_path / AGENT
    root.mkdir(mode=0o700)
    newer = b"\xb8\x20" + b"\x00" * 9 + b"a record of a newer format"
    (root / "seg-1-1-1.log").write_bytes(newer)
    writer = Spool(str(tmp_path), AGENT, adopt=False)
    writer.append(b"known", 0)
    writer.append(b"unknown", 7)
    writer.close()
    reader = Spool(str(tmp_path), AGENT, kinds=(0, 1, 2, 3))
    taken = reader.take_backlog(10)
    assert [payload for _, _, payload in taken] == [b"known"]
    reader.ack(taken[0][0])
    assert reader.stats().quarantined == 2
    reader.close()
    kept = root / QUARANTINE
    assert (kept / "seg-1-1-1.log").read_bytes() == newer
    assert sorted(p.suffix for p in kept.iterdir()) == [".ack", ".ack", ".log", ".log"]
    assert not list(root.glob("*.log"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("cannot read" in w and QUARANTINE in w for w in warnings)


def test_an_unreadable_ack_file_skips_its_segment_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One ``.ack`` file that cannot be read skips its segment (counted, one WARNING however
    many passes meet it, its records left on disk); every other segment is adopted (before,
    the error ended each adoption pass: nothing was delivered)."""
    caplog.set_level(logging.DEBUG, logger="infinium_logging.spool")
    for batch in range(3):
        orphan(tmp_path, [b"%d-%d" % (batch, i) for i in range(10)])
    segments = sorted((tmp_path / AGENT).glob("*.log"))
    assert len(segments) == 3
    broken = segments[1].with_suffix(".ack")
    broken.unlink()
    broken.mkdir()  # reading it fails (a permission mode would not stop root)
    spool = Spool(str(tmp_path), AGENT)
    spool.adopt()
    assert len(payloads(spool)) == 20
    assert spool.stats().unreadable == 2
    spool.close()
    assert segments[1].exists()
    warnings = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert str(segments[1]) in warnings[0].getMessage()


# --- 6. finalizers run by the garbage collector on a sender thread ------------------------------


class _LogsWhenCollected:
    """Garbage only the collector frees (it refers to itself); logs a tagged event then."""

    def __init__(self, log: logging.Logger, name: str) -> None:
        self.log, self.name, self.cycle = log, name, self

    def __del__(self) -> None:
        self.log.info("collected", extra={"infinium": self.name})


@pytest.mark.parametrize("spooled", [False, True])
def test_events_logged_by_finalizers_on_a_sender_thread_are_recorded(
    infinium_collector: LocalCollector, tmp_path: Path, spooled: bool
) -> None:
    """A garbage collection that runs on a sender thread (here forced from ``on_result``)
    runs the application's ``__del__`` methods there: the events they log are delivered,
    not dropped as the exporter's own logging (they vanished, counted nowhere)."""
    collector = infinium_collector
    log = logging.getLogger(f"app.finalizers.{spooled}")
    log.setLevel(logging.INFO)
    log.propagate = False
    collected: list[bool] = []

    def on_result(task: Any, response: Any) -> None:
        if not collected:  # on the sender thread, exporting
            collected.append(True)
            _LogsWhenCollected(log, "from a finalizer")
            gc.collect()

    exporter = Exporter(settings_for(collector, tmp_path if spooled else None), on_result=on_result)
    handler = InfiniumHandler(exporter=exporter)
    log.addHandler(handler)
    try:
        log.info("first", extra={"infinium": "first"})
        assert wait_until(lambda: len(collector.traces()) == 2, 20)
        assert exporter.flush(10)
        stats = exporter.stats()
        assert (stats.sent, stats.dropped_total) == (2, 0)
    finally:
        log.removeHandler(handler)
        handler.close()
        exporter.shutdown(5)
    assert sorted(t.task.name for t in collector.traces()) == ["first", "from a finalizer"]


# --- 8. huge values: cut when captured -----------------------------------------------------------


def test_a_huge_logged_value_is_cut_at_capture_and_the_record_stays_bounded(
    infinium_collector: LocalCollector, tmp_path: Path
) -> None:
    """With a spool, an event whose tag carries an 8 MB value is written as captured (its
    record under the 1 MiB body limit, the value cut and marked as ``fit_task`` marks a
    shrunk trace) instead of being built and encoded whole on the caller's thread; the trace
    delivered carries the mark."""
    collector = infinium_collector
    collector.set_down()
    exporter = Exporter(settings_for(collector, tmp_path, max_retries=0))
    log = logging.getLogger("app.huge")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = InfiniumHandler(exporter=exporter)
    log.addHandler(handler)
    try:
        fields = {"description": "a retrieved document", "input_summary": "x" * 8_000_000}
        log.info("huge", extra={"infinium": fields})
        [segment] = (tmp_path / AGENT_ID).glob("*.log")
        # The first record is the one written before log.info returned (a sender that already
        # failed to deliver it may have added the trace's exact body after it).
        records = read_segment(segment.read_bytes())[0]
        assert records[0][1] == 3  # as captured: built by a sender, not on the caller's thread
        assert all(len(payload) <= MAX_BODY_BYTES for _, _, payload in records)
        collector.set_up()
        assert wait_until(lambda: exporter.stats().sent == 1, 30)
    finally:
        log.removeHandler(handler)
        handler.close()
        exporter.shutdown(5)
    [received] = collector.traces()
    assert received.task.input_summary is not None
    assert received.task.input_summary.endswith(TRUNCATION_MARK)
    assert received.task.environment is not None
    assert received.task.environment.custom_tags is not None
    assert received.task.environment.custom_tags["truncated"] == "true"


@pytest.mark.parametrize("where", ["nested", "field"])
def test_a_huge_nested_value_or_field_is_cut_at_capture_too(
    infinium_collector: LocalCollector, tmp_path: Path, where: str
) -> None:
    """The same for an 8 MB value nested inside the tag (a step's preview) or given as the
    event's own field (a custom tag): the record written before ``log.info`` returns stays
    under the body limit (it was 8 MB before), and the trace delivered is cut as always."""
    collector = infinium_collector
    collector.set_down()
    exporter = Exporter(settings_for(collector, tmp_path, max_retries=0))
    log = logging.getLogger(f"app.huge.{where}")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = InfiniumHandler(exporter=exporter)
    log.addHandler(handler)
    huge = "y" * 8_000_000
    try:
        if where == "nested":
            tag = {"steps": [{"step_number": 1, "action": "read", "description": "d",
                              "output_preview": huge}]}  # fmt: skip
            log.info("huge", extra={"infinium": tag})
        else:
            log.info("huge", extra={"infinium": {}, "document": huge})
        [segment] = (tmp_path / AGENT_ID).glob("*.log")
        records = read_segment(segment.read_bytes())[0]
        assert records[0][1] == 3
        assert all(len(payload) <= MAX_BODY_BYTES for _, _, payload in records)
        collector.set_up()
        assert wait_until(lambda: exporter.stats().sent == 1, 30)
    finally:
        log.removeHandler(handler)
        handler.close()
        exporter.shutdown(5)
    [received] = collector.traces()
    if where == "nested":
        [step] = received.task.steps or []
        assert step.output_preview is not None and len(step.output_preview) <= 500
    else:
        assert received.task.environment is not None
        tags = received.task.environment.custom_tags or {}
        assert 0 < len(tags["document"]) <= 1000
