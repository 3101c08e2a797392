"""The durable spool: write-ahead segment files so traces survive outages, restarts and kill -9.

Layout: ``<spool_dir>/<agent_id>/seg-<pid>-<time>-<n>.log`` holds records, each
``MAGIC | kind | length | crc32 | payload``; a sibling ``.ack`` file lists the
offsets of records that are settled (delivered, or dropped for good), and of those
some destinations (lanes) are done with (see :mod:`.spool_files`).  A process
holds an ``flock`` on each segment it owns for as long as it lives, so a
segment whose lock can be taken belongs to a dead process and is adopted (under
a directory lock) by exactly one survivor: two processes never send the same
record.  Files are written with ``os.write`` (no user-space buffer), so a
killed process loses nothing the kernel has; ``fsync=True`` also survives
power loss.  A record's place is reserved before it is written (``pwrite`` at
that offset), so a write cut short by an exception leaves a torn record that
readers detect and skip, never a shift of the records after it.  A segment this
version cannot read whole (an unknown magic or record kind, damage other than a
torn last record) is moved to ``quarantine/`` rather than deleted.

Over the budgets as one thing: ``Spool`` is the one lock of a process's segments and the state
it guards (positions, acknowledgements, the re-entry guard); the file format, the directory lock
and the quarantine are in :mod:`.spool_files`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Final

import msgspec

from .spool_files import (
    _ACK,
    _ACK_SUFFIX,
    _FRESH_SUFFIX,
    _HEADER,
    _MAX_RECORD,
    _SEGMENT_SUFFIX,
    _WOULD_BLOCK,
    MAGIC,
    MAX_RECORD,
    QUARANTINE,
    PendingSummary,
    _age,
    _lock_directory,
    _parse,
    _part_entry,
    _read_acks,
    _read_all,
    _remove_abandoned,
    _set_aside,
    _still_at,
    _unlock_and_close,
    _write_all,
    _write_record,
    lane_tag,
    read_segment,
    survey,
)

__all__ = [
    "MAGIC",
    "MAX_RECORD",
    "PendingSummary",
    "QUARANTINE",
    "RecordRef",
    "Spool",
    "SpoolListener",
    "SpoolStats",
    "lane_tag",
    "read_segment",
    "survey",
]

_log = logging.getLogger("infinium_logging.spool")

#: Evictions are logged at most this often (seconds), as the exporter's drops are.
_EVICT_WARN_INTERVAL: Final = 60.0
#: How long :meth:`Spool.adopt` waits for another process's adoption pass (seconds).
_LOCK_WAIT: Final = 10.0

#: Told, with the spool's lock held, what happened to records nobody holds in memory:
#: ``("adopted", n)`` records taken over from a dead process, ``("evicted", n)`` waiting records
#: dropped past ``max_bytes``, ``("unreadable", n)`` waiting records that could not be read back,
#: ``("quarantined", n)`` records of a segment set aside unread (see :data:`QUARANTINE`).
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
    #: Segments moved to ``quarantine/`` (an unknown format or kind, or damage).
    quarantined: int = 0
    #: Segments whose ``.ack`` file (or data) could not be read: skipped, left in place.
    unreadable: int = 0


class _Segment:
    """One segment file this process owns, with its lock and its settled offsets."""

    def __init__(self, path: str, fd: int, ack_fd: int) -> None:
        self.path = path
        self.fd = fd
        self.ack_fd = ack_fd
        self.size = os.fstat(fd).st_size
        self.live: dict[int, int] = {}  # offset -> record size, for records not yet settled
        self.waiting: set[int] = set()  # offsets of live records in the backlog
        self.parts: dict[int, frozenset[int]] = {}  # offset -> tags of the lanes done with it
        self.sealed = False
        #: Holds what this version cannot read: kept in quarantine once settled, not deleted.
        self.keep = False

    def close(self, *, unlock: bool = True) -> None:
        """Close the files; ``unlock`` first drops the lock, which a forked child's copy of
        the descriptor would otherwise keep held (it is shared with every copy)."""
        fd, ack_fd = self.fd, self.ack_fd
        self.fd = self.ack_fd = -1
        if unlock and fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass
        for descriptor in (fd, ack_fd):
            if descriptor >= 0:
                try:
                    os.close(descriptor)
                except OSError:
                    pass


class Spool:
    """Append-only, per-process segment files with acknowledgements.

    Thread-safe.  The exporter appends a record before ``submit`` returns,
    settles it with :meth:`ack` once the platform accepted it (or it was
    dropped for good), or destination by destination with :meth:`ack_part`,
    and hands back records it could not deliver now with :meth:`release`;
    :meth:`take_backlog` returns released and adopted records for another
    attempt, oldest first.

    ``adopt=False`` opens the directory without taking over dead processes'
    segments yet (call :meth:`adopt` later, off the caller's thread).
    ``listener`` hears about records nobody holds in memory (see
    :data:`SpoolListener`).  After :meth:`close`, :meth:`release` and
    :meth:`holds` still say which records were left on disk.  ``kinds``: the
    record kinds this version reads; a segment holding any other (a newer
    format's) is not adopted whole but kept in :data:`QUARANTINE`.
    ``lock_wait``: how long :meth:`adopt` waits for another process's
    adoption pass before it gives up with a ``TimeoutError`` naming it.

    Never waits on itself: a call made on a thread that is already inside the
    spool (a signal handler, or a ``__del__`` the garbage collector runs there)
    does not block.  ``append`` then raises ``OSError(EDEADLK)`` (the caller
    keeps the trace in memory), ``ack``, ``ack_part`` and ``release`` are done
    as soon as the call under way ends, and the readings answer without the lock.
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
        kinds: Collection[int] | None = None,
        lock_wait: float = _LOCK_WAIT,
    ) -> None:
        self.root = os.path.join(os.path.abspath(os.path.expanduser(directory)), agent_id)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes or max(64 * 1024, min(16 * 1024 * 1024, max_bytes // 8))
        self._listener = listener
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.lock_wait = lock_wait
        # Reentrant, and asked whether this thread holds it before each use: see the class's
        # docstring.  (A plain Lock taken again by a signal handler would hang the thread.)
        self._lock = threading.RLock()
        self._owned: Callable[[], bool] = self._lock._is_owned  # type: ignore[attr-defined]
        # (an ack: True, a release: False, a part ack: (tag, needed); the record)
        self._deferred: deque[tuple[bool | tuple[int, frozenset[int]], RecordRef]] = deque()
        self._segments: dict[str, _Segment] = {}
        self._active: _Segment | None = None
        self._backlog: deque[RecordRef] = deque()
        self._pending_bytes = 0
        self._pending_records = 0
        self._waiting = 0
        self._evicted = 0
        self._evictions = _Report()
        self._unacked = _Report()
        self._lock_waits = _Report()
        self._corrupt = 0
        self._adopted = 0
        self._quarantined = 0
        self._unreadable = 0
        self._warned_unreadable: set[str] = set()
        self._counter = 0
        self._pid = os.getpid()
        self._closed = False
        # Descriptors an adoption pass holds locked (the directory's, the segment being read):
        # a child forked meanwhile closes its copies (see after_fork_in_child).
        self._adopting: list[int] = []
        _OPEN.add(self)
        old_umask = os.umask(0o077)
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        finally:
            os.umask(old_umask)
        os.chmod(self.root, 0o700)
        if adopt:
            self._adopt(None, warn=False)  # the caller hears of a wait that gives up

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
        if self._owned():
            raise OSError(
                errno.EDEADLK,
                "the spool is busy on this thread (an event logged from a signal handler or a "
                "finalizer while it wrote): this trace is kept in memory only",
            )
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "the spool is closed")
            if self._deferred:
                self._run_deferred()
            segment = self._active
            if segment is None or segment.size + size > self.segment_bytes:
                segment = self._rotate()
            offset = segment.size
            # The record's place is taken before it is written, at that offset: whatever
            # interrupts the write (an exception a signal handler raises, Ctrl-C), the next
            # record goes after it, and a torn one is found by its checksum; it never shifts
            # the positions of the records after it.
            segment.size = offset + size
            try:
                _write_record(segment.fd, header, payload, offset)
                if self.fsync:
                    os.fsync(segment.fd)
            except BaseException:
                self._undo_write(segment, offset)
                raise
            segment.live[offset] = size
            self._pending_bytes += size
            self._pending_records += 1
            ref = RecordRef(segment.path, offset, size)
            if self._pending_bytes > self.max_bytes:
                self._evict_oldest(keep=segment)
            if self._deferred:
                self._run_deferred()
            return ref

    def _undo_write(self, segment: _Segment, offset: int) -> None:
        """After a failed write: cut a partly written record off, and give its place back."""
        try:
            os.ftruncate(segment.fd, offset)
            segment.size = offset
        except OSError:
            # Cannot cut it: write the next records to a fresh segment; the torn one is
            # skipped as corrupt by whoever reads this segment.
            segment.sealed = True
            if self._active is segment:
                self._active = None

    def ack(self, ref: RecordRef) -> None:
        """Settle a record: it will not be sent again."""
        if self._owned():
            self._deferred.append((True, ref))  # done when the call under way ends
            return
        with self._lock:
            self._ack_locked(ref)
            if self._deferred:
                self._run_deferred()

    def _ack_locked(self, ref: RecordRef) -> None:
        if self._closed:
            return  # left on disk: the next start sends it again (at-least-once)
        segment = self._segments.get(ref.segment)
        if segment is None or ref.offset not in segment.live:
            return  # evicted meanwhile, or already settled
        size = segment.live.pop(ref.offset)
        segment.parts.pop(ref.offset, None)
        if ref.offset in segment.waiting:
            segment.waiting.discard(ref.offset)
            self._waiting -= 1
        self._pending_bytes -= size
        self._pending_records -= 1
        if not segment.live and segment is not self._active:
            self._remove(segment)
            return
        self._mark(segment, _ACK.pack(ref.offset))

    def ack_part(self, ref: RecordRef, tag: int, needed: frozenset[int]) -> None:
        """Record that the lane tagged ``tag`` (see :func:`lane_tag`) is done with a record;
        once the lanes done with it cover ``needed``, it is settled as by :meth:`ack`."""
        self._deferred.append(((tag, needed), ref))
        if not self._owned():  # else done when the call under way ends
            with self._lock:
                self._run_deferred()

    def _ack_part_locked(self, ref: RecordRef, tag: int, needed: frozenset[int]) -> None:
        segment = self._segments.get(ref.segment)
        if self._closed or segment is None or ref.offset not in segment.live:
            return  # as in _ack_locked
        done = segment.parts.get(ref.offset, frozenset())
        if tag in done:
            return
        done |= {tag}
        if needed <= done:
            self._ack_locked(ref)
            return
        segment.parts[ref.offset] = done
        self._mark(segment, _part_entry(tag, ref.offset))

    def parts(self, ref: RecordRef) -> frozenset[int]:
        """The tags of the lanes done with a pending record (none for one not pending)."""
        segment = self._segments.get(ref.segment)  # two lookups: read without the lock
        return frozenset() if segment is None else segment.parts.get(ref.offset, frozenset())

    def _mark(self, segment: _Segment, entry: bytes) -> None:
        try:
            _write_all(segment.ack_fd, entry)
            if self.fsync:
                os.fsync(segment.ack_fd)
        except OSError as exc:
            self._warn_unacked(exc)

    def release(self, ref: RecordRef) -> bool:
        """Hand a record back for a later attempt (queue full, retries exhausted, shutdown).

        True when the spool still holds it (after :meth:`close`: it stays on
        disk for the next start); False when it is gone (evicted or settled).
        """
        if self._owned():
            # Done when the call under way ends; should the record be gone by then, the
            # listener hears of it as evicted.
            held = self._holds(ref)
            if held:
                self._deferred.append((False, ref))
            return held
        with self._lock:
            if self._deferred:
                self._run_deferred()
            return self._release_locked(ref)

    def _release_locked(self, ref: RecordRef) -> bool:
        segment = self._segments.get(ref.segment)
        if segment is None or ref.offset not in segment.live:
            return False
        if not self._closed and ref.offset not in segment.waiting:
            segment.waiting.add(ref.offset)
            self._waiting += 1
            self._backlog.append(ref)
        return True

    def _run_deferred(self) -> None:
        """What a call made from inside the spool left to do (lock held)."""
        deferred = self._deferred
        while deferred:
            what, ref = deferred.popleft()
            if isinstance(what, tuple):
                self._ack_part_locked(ref, *what)
            elif what:
                self._ack_locked(ref)
            elif not self._release_locked(ref):
                self._notify("evicted", 1)

    def holds(self, ref: RecordRef) -> bool:
        """Whether the record is still pending in the spool (also after :meth:`close`)."""
        if self._owned():
            return self._holds(ref)
        with self._lock:
            return self._holds(ref)

    def _holds(self, ref: RecordRef) -> bool:
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
        if self._owned():
            return taken
        with self._lock:
            if self._deferred:
                self._run_deferred()
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
        return self._waiting  # one int: read without the lock

    # -- recovery ---------------------------------------------------------------------------

    def adopt(self, wait: float | None = None) -> int:
        """Take over segments left by dead processes (or an earlier run); return records found.

        Waits up to ``wait`` seconds (default: ``lock_wait``) for another
        process's adoption pass, then raises ``TimeoutError`` naming the
        directory and, when known, the process holding it (also logged as a
        warning, at most once a minute).
        """
        return self._adopt(wait, warn=True)

    def _adopt(self, wait: float | None, *, warn: bool) -> int:
        if self._closed or self._owned():
            return 0
        found = 0
        try:
            lock_fd = _lock_directory(self.root, self.lock_wait if wait is None else wait)
        except TimeoutError as exc:
            count, _ = self._lock_waits.due(1) if warn else (0, "")
            if count:
                _log.warning("spool: %s; adoption is tried again later", exc.strerror)
            raise
        self._adopting.append(lock_fd)
        try:
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
            # Unlocked, not only closed: a child forked meanwhile shares this lock through its
            # copy of the descriptor, and would otherwise keep it for its whole life.
            self._adopting.remove(lock_fd)
            _unlock_and_close(lock_fd)
        return found

    def _adopt_one(self, path: str) -> int:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return 0
        self._adopting.append(fd)
        try:
            return self._adopt_locked_file(path, fd)
        finally:
            self._adopting.remove(fd)

    def _adopt_locked_file(self, path: str, fd: int) -> int:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _WOULD_BLOCK:
                return 0  # a live process owns it
            raise
        # Locked only now: its owner may have settled and removed it since it was opened, and
        # it would then be read without its delivery marks.  Only the file still at its path,
        # read after the lock, is taken over.
        if not _still_at(fd, path):
            _unlock_and_close(fd)
            return 0
        ack_path = path[: -len(_SEGMENT_SUFFIX)] + _ACK_SUFFIX
        try:
            acked, parts = _read_acks(ack_path)
            data = _read_all(fd)
            ack_fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            # Skipped, left where it is (a later pass tries it again); the others are adopted.
            _unlock_and_close(fd)
            self._skip_unreadable(path, exc)
            return 0
        records, corrupt, damaged = _parse(data)
        segment = _Segment(path, fd, ack_fd)
        segment.sealed = True
        kinds = self.kinds
        unknown = 0 if kinds is None else sum(1 for _, kind, _ in records if kind not in kinds)
        segment.keep = damaged or unknown > 0
        count = 0
        with self._lock:
            if self._closed:
                segment.close()
                return 0
            self._corrupt += corrupt
            for offset, kind, payload in records:
                if offset in acked or (kinds is not None and kind not in kinds):
                    continue
                size = _HEADER.size + len(payload)
                segment.live[offset] = size
                segment.waiting.add(offset)
                if offset in parts:
                    segment.parts[offset] = parts[offset]
                self._pending_bytes += size
                self._pending_records += 1
                self._backlog.append(RecordRef(path, offset, size))
                count += 1
            self._waiting += count
            self._adopted += count
            self._segments[path] = segment
            if count:
                self._notify("adopted", count)
            if segment.keep:
                self._quarantined += 1
                self._notify("quarantined", unknown + corrupt)
            if not segment.live:
                self._remove(segment)
            elif self._pending_bytes > self.max_bytes:
                self._evict_oldest(keep=None)
        if count:
            _log.info("spool: adopted %d pending trace(s) from %s", count, os.path.basename(path))
        if segment.keep:
            _log.warning(
                "spool: %s holds %d record(s) this version cannot read (%s): it is kept in "
                "%s, never deleted%s",
                path,
                unknown + corrupt,
                "a newer format" if unknown or not records else "damaged",
                os.path.join(self.root, QUARANTINE),
                f", once its {count} readable record(s) are settled" if count else "",
            )
        return count

    def _skip_unreadable(self, path: str, error: OSError) -> None:
        with self._lock:
            self._unreadable += 1
            first = path not in self._warned_unreadable
            self._warned_unreadable.add(path)
        if first:
            _log.warning(
                "spool: skipped %s, which cannot be read (%s: %s); its records stay on disk "
                "and the other segments are adopted",
                path,
                type(error).__name__,
                error,
            )

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
        # Not O_APPEND: records are written at the offsets reserved for them (see append).
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
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
        segment.parts.pop(offset, None)
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
        segment.parts.clear()
        self._segments.pop(segment.path, None)
        if segment is self._active:
            self._active = None
        for path in (segment.path, segment.path[: -len(_SEGMENT_SUFFIX)] + _ACK_SUFFIX):
            try:
                if segment.keep:
                    _set_aside(path, os.path.join(self.root, QUARANTINE))
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                _log.warning("spool: could not move %s to %s: %s", path, QUARANTINE, exc)
        segment.close()

    def stats(self) -> SpoolStats:
        """Pending records and bytes, segments, evicted and corrupt counts."""
        if self._owned():
            return self._stats()  # asked from inside the spool: as it stands
        with self._lock:
            if self._deferred:
                self._run_deferred()
            return self._stats()

    def _stats(self) -> SpoolStats:
        return SpoolStats(
            self._pending_records,
            self._pending_bytes,
            len(self._segments),
            self._evicted,
            self._corrupt,
            self._waiting,
            self._adopted,
            self._quarantined,
            self._unreadable,
        )

    def pending_refs(self) -> Iterator[RecordRef]:
        """Every record not yet settled, oldest segment first."""
        if self._owned():
            return iter(())
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
        if self._owned():
            return  # asked from inside the spool: its files close with the process
        with self._lock:
            if self._closed:
                return
            if self._deferred:
                self._run_deferred()
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
        self._lock = threading.RLock()
        self._owned = self._lock._is_owned  # type: ignore[attr-defined]
        self._deferred = deque()
        for fd in self._adopting:  # an adoption pass of the parent's: its locks stay its own
            try:
                os.close(fd)
            except OSError:
                pass
        self._adopting = []
        for segment in self._segments.values():
            segment.close(unlock=False)
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


#: Every spool not closed, for the fork hook below.
_OPEN: Final[weakref.WeakSet[Spool]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for spool in list(_OPEN):
        if not spool.closed and spool._pid != os.getpid():
            spool.after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
