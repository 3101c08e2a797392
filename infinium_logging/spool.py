"""The durable spool: write-ahead segment files so traces survive outages, restarts and kill -9.

Layout: ``<spool_dir>/<agent_id>/seg-<pid>-<time>-<n>.log`` holds records, each
``MAGIC | kind | length | crc32 | payload``; a sibling ``.ack`` file lists the
offsets of records that are settled (delivered, or dropped for good).  A process
holds an ``flock`` on each segment it owns for as long as it lives, so a
segment whose lock can be taken belongs to a dead process and is adopted (under
a directory lock) by exactly one survivor: two processes never send the same
record.  Files are written with ``os.write`` (no user-space buffer), so a
killed process loses nothing the kernel has; ``fsync=True`` also survives
power loss.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = ["RecordRef", "Spool", "SpoolStats", "read_segment"]

_log = logging.getLogger("infinium_logging.spool")

MAGIC: Final = b"\xa7\x1f"
_HEADER: Final = struct.Struct(">2sBII")  # magic, kind, payload length, crc32 of payload
_ACK: Final = struct.Struct(">Q")
_MAX_RECORD: Final = 64 * 1024 * 1024
_SEGMENT_SUFFIX: Final = ".log"
_ACK_SUFFIX: Final = ".ack"


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where one record lives: its segment and offset."""

    segment: str
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """What the spool holds and what it had to give up."""

    pending_records: int
    pending_bytes: int
    segments: int
    evicted: int
    corrupt: int


class _Segment:
    """One segment file this process owns, with its lock and its settled offsets."""

    def __init__(self, path: str, fd: int, ack_fd: int) -> None:
        self.path = path
        self.fd = fd
        self.ack_fd = ack_fd
        self.size = os.fstat(fd).st_size
        self.live: dict[int, int] = {}  # offset -> record size, for records not yet settled
        self.sealed = False

    def close(self) -> None:
        for fd in (self.fd, self.ack_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def read_segment(data: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    """Parse a segment's bytes: ``([(offset, kind, payload), ...], corrupt_count)``.

    A record with a bad checksum or a truncated tail is skipped and counted;
    parsing resumes at the next place where a valid record starts.
    """
    records: list[tuple[int, int, bytes]] = []
    corrupt = 0
    offset = 0
    end = len(data)
    while offset + _HEADER.size <= end:
        magic, kind, length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        if (
            magic == MAGIC
            and length <= _MAX_RECORD
            and start + length <= end
            and zlib.crc32(data[start : start + length]) == crc
        ):
            records.append((offset, kind, data[start : start + length]))
            offset = start + length
            continue
        corrupt += 1
        following = data.find(MAGIC, offset + 1)
        if following < 0:
            break
        offset = following
    else:
        if offset < end:
            corrupt += 1  # a torn header at the very end
    return records, corrupt


class Spool:
    """Append-only, per-process segment files with acknowledgements.

    Thread-safe.  The exporter appends a record before ``submit`` returns,
    settles it with :meth:`ack` once the platform accepted it (or it was
    dropped for good), and hands back records it could not deliver now with
    :meth:`release`; :meth:`take_backlog` returns released and adopted records
    for another attempt, oldest first.
    """

    def __init__(
        self,
        directory: str,
        agent_id: str,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        fsync: bool = False,
        segment_bytes: int | None = None,
    ) -> None:
        self.root = os.path.join(os.path.abspath(os.path.expanduser(directory)), agent_id)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes or max(64 * 1024, min(16 * 1024 * 1024, max_bytes // 8))
        self._lock = threading.Lock()
        self._segments: dict[str, _Segment] = {}
        self._active: _Segment | None = None
        self._backlog: deque[RecordRef] = deque()
        self._pending_bytes = 0
        self._pending_records = 0
        self._evicted = 0
        self._corrupt = 0
        self._counter = 0
        self._pid = os.getpid()
        self._closed = False
        old_umask = os.umask(0o077)
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        finally:
            os.umask(old_umask)
        os.chmod(self.root, 0o700)
        self.adopt()

    # -- writing ----------------------------------------------------------------------------

    def append(self, payload: bytes, kind: int = 0) -> RecordRef:
        """Write one record and return where it is.  Raises ``OSError`` if the disk refuses."""
        record = _HEADER.pack(MAGIC, kind, len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            segment = self._active
            if segment is None or segment.size + len(record) > self.segment_bytes:
                segment = self._rotate()
            offset = segment.size
            _write_all(segment.fd, record)
            if self.fsync:
                os.fsync(segment.fd)
            segment.size += len(record)
            segment.live[offset] = len(record)
            self._pending_bytes += len(record)
            self._pending_records += 1
            ref = RecordRef(segment.path, offset, len(record))
            if self._pending_bytes > self.max_bytes:
                self._evict_oldest(keep=segment)
            return ref

    def ack(self, ref: RecordRef) -> None:
        """Settle a record: it will not be sent again."""
        with self._lock:
            segment = self._segments.get(ref.segment)
            if segment is None or ref.offset not in segment.live:
                return  # evicted meanwhile, or already settled
            size = segment.live.pop(ref.offset)
            self._pending_bytes -= size
            self._pending_records -= 1
            if not segment.live and segment is not self._active:
                self._remove(segment)
                return
            try:
                _write_all(segment.ack_fd, _ACK.pack(ref.offset))
                if self.fsync:
                    os.fsync(segment.ack_fd)
            except OSError:
                _log.warning("could not record a delivered trace in the spool", exc_info=True)

    def release(self, ref: RecordRef) -> None:
        """Hand a record back for a later attempt (queue full, retries exhausted, shutdown)."""
        with self._lock:
            segment = self._segments.get(ref.segment)
            if segment is not None and ref.offset in segment.live:
                self._backlog.append(ref)

    def take_backlog(self, limit: int) -> list[tuple[RecordRef, int, bytes]]:
        """Up to ``limit`` handed-back or adopted records, oldest first, as (ref, kind, payload)."""
        taken: list[tuple[RecordRef, int, bytes]] = []
        with self._lock:
            while self._backlog and len(taken) < limit:
                ref = self._backlog.popleft()
                segment = self._segments.get(ref.segment)
                if segment is None or ref.offset not in segment.live:
                    continue
                try:
                    data = os.pread(segment.fd, ref.size, ref.offset)
                except OSError:
                    continue
                records, corrupt = read_segment(data)
                if corrupt or not records:
                    self._corrupt += 1
                    self._forget(segment, ref.offset)
                    continue
                _, kind, payload = records[0]
                taken.append((ref, kind, payload))
        return taken

    def backlog_size(self) -> int:
        """How many records wait in the backlog."""
        with self._lock:
            return len(self._backlog)

    # -- recovery ---------------------------------------------------------------------------

    def adopt(self) -> int:
        """Take over segments left by dead processes (or an earlier run); return records found."""
        found = 0
        lock_path = os.path.join(self.root, ".lock")
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            for name in sorted(os.listdir(self.root)):
                if not name.endswith(_SEGMENT_SUFFIX):
                    continue
                path = os.path.join(self.root, name)
                with self._lock:
                    if path in self._segments:
                        continue
                found += self._adopt_one(path)
        finally:
            os.close(lock_fd)
        return found

    def _adopt_one(self, path: str) -> int:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return 0  # a live process owns it
            raise
        acked: set[int] = set()
        ack_path = path[: -len(_SEGMENT_SUFFIX)] + _ACK_SUFFIX
        try:
            with open(ack_path, "rb") as handle:
                raw = handle.read()
            whole = len(raw) - len(raw) % _ACK.size
            acked = {_ACK.unpack_from(raw, i)[0] for i in range(0, whole, _ACK.size)}
        except FileNotFoundError:
            pass
        data = _read_all(fd)
        records, corrupt = read_segment(data)
        ack_fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        segment = _Segment(path, fd, ack_fd)
        segment.sealed = True
        count = 0
        with self._lock:
            self._corrupt += corrupt
            for offset, _kind, payload in records:
                if offset in acked:
                    continue
                size = _HEADER.size + len(payload)
                segment.live[offset] = size
                self._pending_bytes += size
                self._pending_records += 1
                self._backlog.append(RecordRef(path, offset, size))
                count += 1
            self._segments[path] = segment
            if not segment.live:
                self._remove(segment)
            elif self._pending_bytes > self.max_bytes:
                self._evict_oldest(keep=None)
        if count:
            _log.info("spool: adopted %d pending trace(s) from %s", count, os.path.basename(path))
        return count

    # -- housekeeping -----------------------------------------------------------------------

    def _rotate(self) -> _Segment:
        if self._active is not None:
            self._active.sealed = True
            if not self._active.live:
                self._remove(self._active)
        self._counter += 1
        name = f"seg-{os.getpid()}-{time.time_ns()}-{self._counter}"
        path = os.path.join(self.root, name + _SEGMENT_SUFFIX)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        ack_fd = os.open(
            os.path.join(self.root, name + _ACK_SUFFIX),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o600,
        )
        segment = _Segment(path, fd, ack_fd)
        self._segments[path] = segment
        self._active = segment
        return segment

    def _evict_oldest(self, keep: _Segment | None) -> None:
        """Drop whole oldest segments until under the bound; their records count as evicted."""
        for segment in sorted(self._segments.values(), key=lambda s: _age(s.path)):
            if self._pending_bytes <= self.max_bytes:
                return
            if segment is keep:
                continue
            self._evicted += len(segment.live)
            _log.warning(
                "spool over %d bytes: evicted %d oldest trace(s)", self.max_bytes, len(segment.live)
            )
            self._remove(segment)

    def _forget(self, segment: _Segment, offset: int) -> None:
        size = segment.live.pop(offset, 0)
        if size:
            self._pending_bytes -= size
            self._pending_records -= 1

    def _remove(self, segment: _Segment) -> None:
        self._pending_bytes -= sum(segment.live.values())
        self._pending_records -= len(segment.live)
        segment.live.clear()
        self._segments.pop(segment.path, None)
        if segment is self._active:
            self._active = None
        for path in (segment.path, segment.path[: -len(_SEGMENT_SUFFIX)] + _ACK_SUFFIX):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        segment.close()

    def stats(self) -> SpoolStats:
        """Pending records and bytes, segments, evicted and corrupt counts."""
        with self._lock:
            return SpoolStats(
                self._pending_records,
                self._pending_bytes,
                len(self._segments),
                self._evicted,
                self._corrupt,
            )

    def pending_refs(self) -> Iterator[RecordRef]:
        """Every record not yet settled, oldest segment first."""
        with self._lock:
            segments = sorted(self._segments.values(), key=lambda s: _age(s.path))
            refs = [
                RecordRef(s.path, offset, size)
                for s in segments
                for offset, size in sorted(s.live.items())
            ]
        return iter(refs)

    def close(self) -> None:
        """Release every file and lock; what is pending stays on disk for the next start."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for segment in list(self._segments.values()):
                if not segment.live:
                    self._remove(segment)
                else:
                    segment.close()
            self._segments.clear()
            self._active = None
            self._backlog.clear()

    def after_fork_in_child(self) -> None:
        """In a forked child: the parent's segments stay the parent's; start afresh, adopt nothing.

        The inherited descriptors share the parent's locks, so they are closed
        without unlocking (closing a duplicate leaves the parent's lock alone).
        """
        self._lock = threading.Lock()
        for segment in self._segments.values():
            segment.close()
        self._segments = {}
        self._active = None
        self._backlog = deque()
        self._pending_bytes = 0
        self._pending_records = 0
        self._pid = os.getpid()


def _age(path: str) -> tuple[int, int]:
    """Sort key: a segment's creation time and counter, from its name."""
    parts = os.path.basename(path)[: -len(_SEGMENT_SUFFIX)].split("-")
    try:
        return int(parts[2]), int(parts[3])
    except (IndexError, ValueError):
        return 0, 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)
