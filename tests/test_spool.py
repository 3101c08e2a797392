"""The durable spool: records survive restarts and kill -9, and are never handed out twice."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from infinium_logging.spool import MAGIC, Spool, read_segment, survey

AGENT = "4f1c2b9e-8d7a-4e61-9f3b-2a5c6d7e8f90"


def payloads(spool: Spool) -> list[bytes]:
    return [payload for _, _, payload in spool.take_backlog(10_000)]


def test_pending_records_survive_a_restart_in_order(tmp_path: Path) -> None:
    """Unsettled records are handed out again by the next spool on the directory, oldest first."""
    first = Spool(str(tmp_path), AGENT)
    refs = [first.append(f"trace-{i}".encode()) for i in range(10)]
    for ref in refs[::2]:
        first.ack(ref)
    assert first.stats().pending_records == 5
    first.close()
    second = Spool(str(tmp_path), AGENT)
    assert payloads(second) == [f"trace-{i}".encode() for i in range(1, 10, 2)]
    assert second.stats().pending_records == 5
    second.close()


def test_settled_segments_are_deleted(tmp_path: Path) -> None:
    """Once every record of a sealed segment is settled, its files go away."""
    spool = Spool(str(tmp_path), AGENT, segment_bytes=64 * 1024)
    refs = [spool.append(b"x" * 10_000) for _ in range(20)]  # several segments
    assert spool.stats().segments > 1
    for ref in refs:
        spool.ack(ref)
    spool.close()
    assert [p.name for p in (tmp_path / AGENT).iterdir() if p.suffix in (".log", ".ack")] == []


def test_kill_9_loses_nothing_written(tmp_path: Path) -> None:
    """A process killed with SIGKILL leaves its records for the next process to adopt."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from infinium_logging.spool import Spool
        spool = Spool({str(tmp_path)!r}, {AGENT!r})
        for i in range(500):
            ref = spool.append(b"rec-%d" % i)
            if i < 100:
                spool.ack(ref)
        print("ready", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"ready"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    survivor = Spool(str(tmp_path), AGENT)
    assert payloads(survivor) == [b"rec-%d" % i for i in range(100, 500)]
    survivor.close()


def test_live_owner_keeps_its_segments(tmp_path: Path) -> None:
    """A second spool on the same directory never adopts segments a live owner holds."""
    owner = Spool(str(tmp_path), AGENT)
    owner.append(b"mine")
    other = Spool(str(tmp_path), AGENT)
    assert payloads(other) == []
    assert other.adopt() == 0
    owner.close()
    assert other.adopt() == 1
    assert payloads(other) == [b"mine"]
    other.close()


def test_truncated_tail_and_bad_checksum_are_skipped_and_counted(tmp_path: Path) -> None:
    """Corruption never stops recovery: the damaged records are counted, the rest delivered."""
    spool = Spool(str(tmp_path), AGENT)
    for i in range(3):
        spool.append(b"good-%d" % i)
    spool.close()
    segment = next((tmp_path / AGENT).glob("*.log"))
    data = bytearray(segment.read_bytes())
    second = data.index(b"good-1")
    data[second] ^= 0xFF  # bad checksum in the middle record
    data += MAGIC + b"\x00\x00\x00\x00\x40"  # a torn header at the end
    segment.write_bytes(bytes(data))
    recovered = Spool(str(tmp_path), AGENT)
    assert payloads(recovered) == [b"good-0", b"good-2"]
    assert recovered.stats().corrupt == 2
    recovered.close()


def test_read_segment_resyncs_after_garbage() -> None:
    """Garbage between records is skipped up to the next valid record."""

    def record(payload: bytes) -> bytes:
        return struct.pack(">2sBII", MAGIC, 0, len(payload), zlib.crc32(payload)) + payload

    data = record(b"a") + b"garbage\xa7" + record(b"b")
    records, corrupt = read_segment(data)
    assert [p for _, _, p in records] == [b"a", b"b"]
    assert corrupt == 1


def test_bound_evicts_oldest_and_counts(tmp_path: Path) -> None:
    """Past max_bytes the oldest records go, counted as evicted."""
    spool = Spool(str(tmp_path), AGENT, max_bytes=64 * 1024, segment_bytes=16 * 1024)
    for i in range(40):
        spool.append(b"%04d" % i + b"x" * 4000)
    stats = spool.stats()
    assert stats.pending_bytes <= 64 * 1024 + 16 * 1024
    assert stats.evicted > 0
    assert stats.evicted + stats.pending_records == 40
    spool.close()
    again = Spool(str(tmp_path), AGENT, max_bytes=64 * 1024, segment_bytes=16 * 1024)
    left = payloads(again)
    assert left[-1].startswith(b"0039")  # newest kept
    assert len(left) == stats.pending_records
    again.close()


def test_evictions_are_logged_at_most_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A long outage at the bound evicts a segment at every rotation: the first eviction is
    logged at once, the next ones a minute later, together, with their count."""
    caplog.set_level(logging.WARNING, logger="infinium_logging.spool")
    with freeze_time("2026-11-22 10:00:00") as clock:
        spool = Spool(str(tmp_path), AGENT, max_bytes=64 * 1024, segment_bytes=16 * 1024)
        for i in range(80):
            spool.append(b"%04d" % i + b"x" * 4000)
        first = [r.getMessage() for r in caplog.records]
        assert len(first) == 1
        assert first[0].startswith("spool over 65536 bytes: evicted ")
        clock.tick(61)
        spool.append(b"x" * 20_000)
        spool.append(b"y" * 20_000)
        messages = [r.getMessage() for r in caplog.records]
        evicted = spool.stats().evicted
        spool.close()
    assert len(messages) == 2
    assert messages[1].endswith("since the last report")
    counts = [int(m.split("evicted ")[1].split()[0]) for m in messages]
    assert sum(counts) <= evicted  # the rest is reported at the next one
    assert counts[1] > 0


def test_permissions_are_private(tmp_path: Path) -> None:
    """The directory is 0700 and the files 0600: traces may hold customer data."""
    spool = Spool(str(tmp_path / "deep" / "spool"), AGENT)
    spool.append(b"x")
    root = tmp_path / "deep" / "spool" / AGENT
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for path in root.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    spool.close()


def test_release_hands_back_and_ack_settles(tmp_path: Path) -> None:
    """A released record comes back once through take_backlog; an acked one never does."""
    spool = Spool(str(tmp_path), AGENT)
    a = spool.append(b"a")
    b = spool.append(b"b")
    spool.release(a)
    spool.release(b)
    spool.ack(b)
    assert [p for _, _, p in spool.take_backlog(10)] == [b"a"]
    assert spool.take_backlog(10) == []
    spool.close()


def test_fork_child_does_not_take_parents_records(tmp_path: Path) -> None:
    """After fork, the child writes its own segments and never hands out the parent's records."""
    spool = Spool(str(tmp_path), AGENT)
    spool.append(b"parent")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            spool.after_fork_in_child()
            spool.append(b"child")
            got = [p for _, _, p in spool.take_backlog(10)]
            os.write(write_end, repr(got).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as handle:
        assert handle.read() == b"[]"
    assert os.waitstatus_to_exitcode(status) == 0
    spool.close()
    survivor = Spool(str(tmp_path), AGENT)
    assert sorted(payloads(survivor)) == [b"child", b"parent"]
    survivor.close()


def test_a_short_write_is_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record whose one-call write stops short is finished with further writes: whole,
    checksummed, and readable by the next spool."""
    real = os.pwritev

    def short(fd: int, buffers: Any, offset: int) -> int:
        return real(fd, [bytes(buffers[0])[:5]], offset)  # only part of the header gets out

    monkeypatch.setattr("infinium_logging.spool_files._writev", short)
    first = Spool(str(tmp_path), AGENT)
    first.append(b"a record written in pieces")
    first.append(b"and the one after it")
    first.close()
    second = Spool(str(tmp_path), AGENT)
    assert payloads(second) == [b"a record written in pieces", b"and the one after it"]
    assert second.stats().corrupt == 0
    second.close()


def test_a_segment_being_created_is_never_taken_for_an_orphan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's adoption pass, run between a new segment's creation and its lock,
    leaves it alone: the record written to it is on disk, where the next start finds it."""
    writer = Spool(str(tmp_path), AGENT, adopt=False)
    other = Spool(str(tmp_path), AGENT, adopt=False)
    real = fcntl.flock
    armed = [True]

    def adoption_strikes_first(fd: int, operation: int) -> None:
        if armed[0] and operation == fcntl.LOCK_EX | fcntl.LOCK_NB:
            armed[0] = False
            other.adopt()
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", adoption_strikes_first)
    writer.append(b"written while another process adopts")
    monkeypatch.undo()
    assert not armed[0]
    assert other.stats().adopted == 0
    writer.close()
    other.close()
    assert [s.records for s in survey(str(tmp_path))] == [1]
    survivor = Spool(str(tmp_path), AGENT)
    assert payloads(survivor) == [b"written while another process adopts"]
    survivor.close()


def test_a_segment_whose_creator_died_before_using_it_is_removed(tmp_path: Path) -> None:
    """A half-created segment (no record, nobody holding it) is cleaned up once it is clearly
    abandoned; a young one may still be on its way and is left alone."""
    root = tmp_path / AGENT
    root.mkdir(mode=0o700)
    abandoned, young = root / "seg-1-1-1.new", root / "seg-2-2-1.new"
    abandoned.touch()
    young.touch()
    os.utime(abandoned, (time.time() - 3600, time.time() - 3600))
    spool = Spool(str(tmp_path), AGENT)
    assert not abandoned.exists()
    assert young.exists()
    spool.close()


def test_failed_delivery_marks_are_reported_once_a_minute_not_per_trace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk fails the mark of every trace delivered: one warning with the count, then
    one a minute; the records stay pending, for the next start to send again."""
    caplog.set_level(logging.WARNING, logger="infinium_logging.spool")
    spool = Spool(str(tmp_path), AGENT)
    with freeze_time("2026-01-01T00:00:00Z") as frozen:
        refs = [spool.append(b"rec-%d" % i) for i in range(12)]
        segment = spool._active
        assert segment is not None
        real_fd = segment.ack_fd
        segment.ack_fd = os.open(os.devnull, os.O_RDONLY)  # writes fail, as on a full disk
        try:
            for ref in refs[:10]:
                spool.ack(ref)
            frozen.tick(61)
            spool.ack(refs[10])
        finally:
            os.close(segment.ack_fd)
            segment.ack_fd = real_fd
    messages = [r.getMessage() for r in caplog.records if "delivered trace" in r.getMessage()]
    assert len(messages) == 2
    assert messages[0].startswith("could not record 1 delivered trace(s) in the spool")
    second = "could not record 10 delivered trace(s) in the spool since the last report"
    assert second in messages[1]
    spool.close()
    again = Spool(str(tmp_path), AGENT)
    assert len(payloads(again)) == 12  # none marked delivered: all sent again
    again.close()
