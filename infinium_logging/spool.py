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
import math
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import msgspec

__all__ = [
    "PendingSummary",
    "RecordRef",
    "Spool",
    "SpoolListener",
    "SpoolStats",
    "read_segment",
    "survey",
]

_log = logging.getLogger("infinium_logging.spool")

MAGIC: Final = b"\xa7\x1f"
_HEADER: Final = struct.Struct(">2sBII")  # magic, kind, payload length, crc32 of payload
_ACK: Final = struct.Struct(">Q")
#: Largest payload a record may carry (a longer length field is read as corruption).
MAX_RECORD: Final = 64 * 1024 * 1024
_MAX_RECORD: Final = MAX_RECORD
_SEGMENT_SUFFIX: Final = ".log"
_ACK_SUFFIX: Final = ".ack"
#: A segment being created (see ``Spool._rotate``); it holds no record yet.
_FRESH_SUFFIX: Final = ".new"
#: A ``.new`` file older than this that nobody holds was left by a process that died
#: while creating it: it is removed.
_ABANDONED_AFTER: Final = 60.0
_WOULD_BLOCK: Final = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
#: Evictions are logged at most this often (seconds), as the exporter's drops are.
_EVICT_WARN_INTERVAL: Final = 60.0

#: Told, with the spool's lock held, what happened to records nobody holds in memory:
#: ``("adopted", n)`` records taken over from a dead process, ``("evicted", n)`` waiting records
#: dropped past ``max_bytes``, ``("unreadable", n)`` waiting records that could not be read back.
#: It must not call the spool.
SpoolListener = Callable[[str, int], None]


class RecordRef(msgspec.Struct, frozen=True, gc=False):
    """Where one record lives: its segment and offset."""

    # A Struct rather than a frozen dataclass: one is made for every trace written, on the
    # caller's thread, and a frozen dataclass's __init__ costs six times as much.
    segment: str
    offset: int
    size: int


class _Report:
    """Counts of something to warn about: the first at once, then at most once per
    ``_EVICT_WARN_INTERVAL`` with the count since (what fails once per trace must not log
    once per trace)."""

    __slots__ = ("_unreported", "_warned_at")

    def __init__(self) -> None:
        self._unreported = 0
        self._warned_at = -math.inf

    def due(self, count: int) -> tuple[int, str]:
        """Add ``count``; ``(count to report, " since the last report" or "")``, or ``(0, "")``
        when the last report was less than the interval ago."""
        self._unreported += count
        now = time.monotonic()
        if now - self._warned_at < _EVICT_WARN_INTERVAL:
            return 0, ""
        since = "" if self._warned_at == -math.inf else " since the last report"
        count, self._unreported, self._warned_at = self._unreported, 0, now
        return count, since


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """What the spool holds and what it had to give up."""

    pending_records: int
    pending_bytes: int
    segments: int
    evicted: int
    corrupt: int
    #: Pending records waiting in the backlog (handed back or adopted, held by nobody).
    waiting: int = 0
    #: Records taken over from dead processes so far.
    adopted: int = 0


@dataclass(frozen=True, slots=True)
class PendingSummary:
    """What one agent's spool directory holds, read without taking anything over.

    Made by :func:`survey`.
    """

    agent_id: str
    #: Records not yet settled, and their bytes on disk (headers included).
    records: int
    bytes: int
    #: Segment files holding them.
    segments: int
    #: When the oldest segment holding a pending record was created (POSIX time).
    oldest: float | None
    #: Of those, the records and segments a live process holds (it is sending them).
    live_records: int
    live_segments: int
    #: Damaged records found in orphaned segments (they will be skipped).
    corrupt: int

    @property
    def orphaned_records(self) -> int:
        """Pending records no live process holds: the next start (or ``replay``) sends them."""
        return self.records - self.live_records


class _Segment:
    """One segment file this process owns, with its lock and its settled offsets."""

    def __init__(self, path: str, fd: int, ack_fd: int) -> None:
        self.path = path
        self.fd = fd
        self.ack_fd = ack_fd
        self.size = os.fstat(fd).st_size
        self.live: dict[int, int] = {}  # offset -> record size, for records not yet settled
        self.waiting: set[int] = set()  # offsets of live records in the backlog
        self.sealed = False

    def close(self) -> None:
        fd, ack_fd = self.fd, self.ack_fd
        self.fd = self.ack_fd = -1
        for descriptor in (fd, ack_fd):
            if descriptor >= 0:
                try:
                    os.close(descriptor)
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

    ``adopt=False`` opens the directory without taking over dead processes'
    segments yet (call :meth:`adopt` later, off the caller's thread).
    ``listener`` hears about records nobody holds in memory (see
    :data:`SpoolListener`).  After :meth:`close`, :meth:`release` and
    :meth:`holds` still say which records were left on disk.
    """

    def __init__(
        self,
        directory: str,
        agent_id: str,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        fsync: bool = False,
        segment_bytes: int | None = None,
        adopt: bool = True,
        listener: SpoolListener | None = None,
    ) -> None:
        self.root = os.path.join(os.path.abspath(os.path.expanduser(directory)), agent_id)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes or max(64 * 1024, min(16 * 1024 * 1024, max_bytes // 8))
        self._listener = listener
        self._lock = threading.Lock()
        self._segments: dict[str, _Segment] = {}
        self._active: _Segment | None = None
        self._backlog: deque[RecordRef] = deque()
        self._pending_bytes = 0
        self._pending_records = 0
        self._waiting = 0
        self._evicted = 0
        self._evictions = _Report()
        self._unacked = _Report()
        self._corrupt = 0
        self._adopted = 0
        self._counter = 0
        self._pid = os.getpid()
        self._closed = False
        old_umask = os.umask(0o077)
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        finally:
            os.umask(old_umask)
        os.chmod(self.root, 0o700)
        if adopt:
            self.adopt()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    # -- writing ----------------------------------------------------------------------------

    def append(self, payload: bytes, kind: int = 0) -> RecordRef:
        """Write one record and return where it is.

        Raises ``OSError`` if the disk refuses (or the spool is closed) and
        ``ValueError`` for a payload over :data:`MAX_RECORD` bytes.
        """
        if len(payload) > _MAX_RECORD:
            raise ValueError(f"a spool record holds at most {_MAX_RECORD} bytes")
        header = _HEADER.pack(MAGIC, kind, len(payload), zlib.crc32(payload))
        size = len(header) + len(payload)
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "the spool is closed")
            segment = self._active
            if segment is None or segment.size + size > self.segment_bytes:
                segment = self._rotate()
            offset = segment.size
            try:
                _write_record(segment.fd, header, payload)
                if self.fsync:
                    os.fsync(segment.fd)
            except OSError:
                self._undo_write(segment, offset)
                raise
            segment.size += size
            segment.live[offset] = size
            self._pending_bytes += size
            self._pending_records += 1
            ref = RecordRef(segment.path, offset, size)
            if self._pending_bytes > self.max_bytes:
                self._evict_oldest(keep=segment)
            return ref

    def _undo_write(self, segment: _Segment, offset: int) -> None:
        """After a failed write: cut a partly written record off, so that offsets stay right."""
        try:
            os.ftruncate(segment.fd, offset)
        except OSError:
            # Cannot cut it: write the next records to a fresh segment; the torn one is
            # skipped as corrupt by whoever reads this segment.
            segment.sealed = True
            if self._active is segment:
                self._active = None

    def ack(self, ref: RecordRef) -> None:
        """Settle a record: it will not be sent again."""
        with self._lock:
            if self._closed:
                return  # left on disk: the next start sends it again (at-least-once)
            segment = self._segments.get(ref.segment)
            if segment is None or ref.offset not in segment.live:
                return  # evicted meanwhile, or already settled
            size = segment.live.pop(ref.offset)
            if ref.offset in segment.waiting:
                segment.waiting.discard(ref.offset)
                self._waiting -= 1
            self._pending_bytes -= size
            self._pending_records -= 1
            if not segment.live and segment is not self._active:
                self._remove(segment)
                return
            try:
                _write_all(segment.ack_fd, _ACK.pack(ref.offset))
                if self.fsync:
                    os.fsync(segment.ack_fd)
            except OSError as exc:
                self._warn_unacked(exc)

    def release(self, ref: RecordRef) -> bool:
        """Hand a record back for a later attempt (queue full, retries exhausted, shutdown).

        True when the spool still holds it (after :meth:`close`: it stays on
        disk for the next start); False when it is gone (evicted or settled).
        """
        with self._lock:
            segment = self._segments.get(ref.segment)
            if segment is None or ref.offset not in segment.live:
                return False
            if not self._closed and ref.offset not in segment.waiting:
                segment.waiting.add(ref.offset)
                self._waiting += 1
                self._backlog.append(ref)
            return True

    def holds(self, ref: RecordRef) -> bool:
        """Whether the record is still pending in the spool (also after :meth:`close`)."""
        with self._lock:
            segment = self._segments.get(ref.segment)
            return segment is not None and ref.offset in segment.live

    def take_backlog(
        self, limit: int, max_bytes: int | None = None
    ) -> list[tuple[RecordRef, int, bytes]]:
        """Up to ``limit`` handed-back or adopted records, oldest first, as (ref, kind, payload).

        ``max_bytes`` bounds their total size (at least one record is returned
        when any waits).  A record that cannot be read back is skipped and
        counted as corrupt.
        """
        taken: list[tuple[RecordRef, int, bytes]] = []
        total = 0
        with self._lock:
            while self._backlog and len(taken) < limit and not self._closed:
                ref = self._backlog[0]
                segment = self._segments.get(ref.segment)
                if segment is None or ref.offset not in segment.waiting:
                    self._backlog.popleft()  # settled or evicted since it was handed back
                    continue
                if max_bytes is not None and taken and total + ref.size > max_bytes:
                    break
                self._backlog.popleft()
                segment.waiting.discard(ref.offset)
                self._waiting -= 1
                try:
                    data = os.pread(segment.fd, ref.size, ref.offset)
                except OSError:
                    data = b""
                records, corrupt = read_segment(data)
                if corrupt or not records:
                    self._corrupt += 1
                    self._forget(segment, ref.offset)
                    self._notify("unreadable", 1)
                    continue
                _, kind, payload = records[0]
                taken.append((ref, kind, payload))
                total += ref.size
        return taken

    def backlog_size(self) -> int:
        """How many records wait in the backlog."""
        with self._lock:
            return self._waiting

    # -- recovery ---------------------------------------------------------------------------

    def adopt(self) -> int:
        """Take over segments left by dead processes (or an earlier run); return records found."""
        if self._closed:
            return 0
        found = 0
        lock_path = os.path.join(self.root, ".lock")
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            for name in sorted(os.listdir(self.root)):
                if name.endswith(_FRESH_SUFFIX):
                    _remove_abandoned(os.path.join(self.root, name))
                    continue
                if not name.endswith(_SEGMENT_SUFFIX):
                    continue
                path = os.path.join(self.root, name)
                with self._lock:
                    if path in self._segments or self._closed:
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
            if exc.errno in _WOULD_BLOCK:
                return 0  # a live process owns it
            raise
        ack_path = path[: -len(_SEGMENT_SUFFIX)] + _ACK_SUFFIX
        try:
            acked = _read_acks(ack_path)
            data = _read_all(fd)
            ack_fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError:
            os.close(fd)
            raise
        records, corrupt = read_segment(data)
        segment = _Segment(path, fd, ack_fd)
        segment.sealed = True
        count = 0
        with self._lock:
            if self._closed:
                segment.close()
                return 0
            self._corrupt += corrupt
            for offset, _kind, payload in records:
                if offset in acked:
                    continue
                size = _HEADER.size + len(payload)
                segment.live[offset] = size
                segment.waiting.add(offset)
                self._pending_bytes += size
                self._pending_records += 1
                self._backlog.append(RecordRef(path, offset, size))
                count += 1
            self._waiting += count
            self._adopted += count
            self._segments[path] = segment
            if count:
                self._notify("adopted", count)
            if not segment.live:
                self._remove(segment)
            elif self._pending_bytes > self.max_bytes:
                self._evict_oldest(keep=None)
        if count:
            _log.info("spool: adopted %d pending trace(s) from %s", count, os.path.basename(path))
        return count

    # -- housekeeping -----------------------------------------------------------------------

    def _notify(self, event: str, count: int) -> None:
        # Called with the lock held.
        listener = self._listener
        if listener is None:
            return
        try:
            listener(event, count)
        except Exception:  # a listener's bug must not break the spool
            _log.debug("the spool listener failed on %s", event, exc_info=True)

    def _rotate(self) -> _Segment:
        if self._active is not None:
            self._active.sealed = True
            if not self._active.live:
                self._remove(self._active)
        self._counter += 1
        name = f"seg-{os.getpid()}-{time.time_ns()}-{self._counter}"
        path = os.path.join(self.root, name + _SEGMENT_SUFFIX)
        # Created under a name adoption ignores and renamed once locked: a segment that
        # appeared unlocked, even for a moment, could be taken for a dead process's empty
        # one and deleted by another process's adoption pass, and this process would then
        # write its records to a file nobody can find.
        fresh = os.path.join(self.root, name + _FRESH_SUFFIX)
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        current = fresh
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(fresh, path)
            current = path
            ack_fd = os.open(
                os.path.join(self.root, name + _ACK_SUFFIX),
                os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                0o600,
            )
        except OSError:
            os.close(fd)
            try:
                os.unlink(current)
            except OSError:
                pass
            raise
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
            lost = len(segment.waiting)
            self._evicted += len(segment.live)
            self._warn_evicted(len(segment.live))
            self._remove(segment)
            if lost:
                self._notify("evicted", lost)
            # The backlog is about oldest first: drop what now points nowhere from its front,
            # so that a long outage at the bound does not pile up references to evicted records.
            backlog = self._backlog
            while backlog and backlog[0].segment not in self._segments:
                backlog.popleft()

    def _warn_unacked(self, exc: OSError) -> None:
        """Log failed delivery marks (a full disk fails one per trace sent).  Such a trace is
        sent again by the next start (at-least-once), so it is not counted as lost."""
        count, since = self._unacked.due(1)
        if count:
            _log.warning(
                "could not record %d delivered trace(s) in the spool%s (%s): the next start "
                "sends them again",
                count,
                since,
                exc,
            )

    def _warn_evicted(self, count: int) -> None:
        """Log evictions (a long outage at the bound evicts a segment at every rotation)."""
        count, since = self._evictions.due(count)
        if count:
            _log.warning(
                "spool over %d bytes: evicted %d oldest trace(s)%s", self.max_bytes, count, since
            )

    def _forget(self, segment: _Segment, offset: int) -> None:
        size = segment.live.pop(offset, 0)
        if size:
            self._pending_bytes -= size
            self._pending_records -= 1
        if not segment.live and segment is not self._active:
            self._remove(segment)

    def _remove(self, segment: _Segment) -> None:
        self._pending_bytes -= sum(segment.live.values())
        self._pending_records -= len(segment.live)
        self._waiting -= len(segment.waiting)
        segment.live.clear()
        segment.waiting.clear()
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
                self._waiting,
                self._adopted,
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
                    # Kept (without its files) so that release() and holds() can still
                    # say what was left on disk.
                    segment.close()
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
        self._waiting = 0
        self._adopted = 0
        self._evicted = 0
        self._corrupt = 0
        self._pid = os.getpid()


# --- reading without taking over (the ``spool`` command) ------------------------------------------


def survey(directory: str) -> list[PendingSummary]:
    """What every agent's spool under ``directory`` holds, without taking anything over.

    Nothing is written, adopted or removed.  Whether a live process holds a
    segment is probed with a shared, non-blocking ``flock`` that is dropped at
    once (a process adopting at that very instant leaves the segment for its
    next adoption pass).
    """
    root = os.path.abspath(os.path.expanduser(directory))
    try:
        names = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: list[PendingSummary] = []
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            summary = _survey_agent(name, path)
            if summary.records or summary.corrupt:
                found.append(summary)
    return found


def _survey_agent(agent_id: str, path: str) -> PendingSummary:
    records = size = segments = live_records = live_segments = corrupt = 0
    oldest: float | None = None
    try:
        names = sorted(os.listdir(path))
    except OSError:
        names = []
    for name in names:
        if not name.endswith(_SEGMENT_SUFFIX):
            continue
        segment_path = os.path.join(path, name)
        try:
            fd = os.open(segment_path, os.O_RDONLY)
        except OSError:
            continue  # settled and removed meanwhile
        try:
            live = _held_by_live_process(fd)
            data = _read_all(fd)
            acked = _read_acks(segment_path[: -len(_SEGMENT_SUFFIX)] + _ACK_SUFFIX)
        except OSError:
            continue
        finally:
            os.close(fd)
        parsed, damaged = read_segment(data)
        pending = [(offset, payload) for offset, _kind, payload in parsed if offset not in acked]
        if not live:
            # A live writer's last record may be half written: not damage.
            corrupt += damaged
        if not pending:
            continue
        segments += 1
        records += len(pending)
        size += sum(_HEADER.size + len(payload) for _, payload in pending)
        if live:
            live_segments += 1
            live_records += len(pending)
        created = _age(segment_path)[0] / 1e9
        if created and (oldest is None or created < oldest):
            oldest = created
    return PendingSummary(
        agent_id, records, size, segments, oldest, live_records, live_segments, corrupt
    )


def _remove_abandoned(path: str) -> None:
    """Delete a segment a dead process began to create (it never held a record)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # renamed into place or removed meanwhile
    try:
        if time.time() - os.fstat(fd).st_mtime < _ABANDONED_AFTER:
            return  # its creator may be between creating and locking it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError:
        pass  # held by a live process, or gone
    finally:
        os.close(fd)


def _held_by_live_process(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _WOULD_BLOCK:
            return True
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _read_acks(path: str) -> set[int]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return set()
    whole = len(raw) - len(raw) % _ACK.size
    return {_ACK.unpack_from(raw, i)[0] for i in range(0, whole, _ACK.size)}


def _age(path: str) -> tuple[int, int]:
    """Sort key: a segment's creation time and counter, from its name."""
    parts = os.path.basename(path)[: -len(_SEGMENT_SUFFIX)].split("-")
    try:
        return int(parts[2]), int(parts[3])
    except (IndexError, ValueError):
        return 0, 0


_writev: Final = getattr(os, "writev", None)


def _write_record(fd: int, header: bytes, payload: bytes) -> None:
    """Write a record's header and payload with one system call, without joining them first
    (the copy of a body of several kilobytes would cost as much as the write)."""
    if _writev is None:  # not on every platform
        _write_all(fd, header + payload)
        return
    written = _writev(fd, (header, payload))
    if written < len(header) + len(payload):  # a short write: rare, finish it plainly
        _write_all(fd, (header + payload)[written:])


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written == len(data):
        return  # the usual case, without the cost of a memoryview
    view = memoryview(data)[written:]
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
