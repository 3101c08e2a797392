"""The spool's files: the record format, reading and writing segments, the directory's lock,
quarantine, and :func:`survey` (reading a spool without taking anything over).

A segment holds records, each ``MAGIC | kind | length | crc32 | payload``; its
``.ack`` sibling lists 8-byte big-endian entries.  An entry whose top byte is 0 is
the offset of a record settled whole.  One whose top byte is a lane's tag ``t``
(1..255, see :func:`lane_tag`) says that the lane tagged ``t`` is done with the
record at the offset in its low 56 bits (a *part* entry): when a trace goes to
several destinations, a restart sends its record only to those not yet done
with it.  A record is settled once it has a whole entry; part entries alone
leave it pending.  A reader of an older version reads a part entry as an offset
that matches no record, so the record stays pending there and is sent again to
every destination (at least once, never lost).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAGIC",
    "MAX_RECORD",
    "QUARANTINE",
    "PendingSummary",
    "lane_tag",
    "read_segment",
    "survey",
]

MAGIC: Final = b"\xa7\x1f"
_HEADER: Final = struct.Struct(">2sBII")  # magic, kind, payload length, crc32 of payload
_ACK: Final = struct.Struct(">Q")
#: An ack entry's top byte: 0 for a record settled whole, else the tag of a lane done with it.
_TAG_SHIFT: Final = 56
_OFFSET_MASK: Final = (1 << _TAG_SHIFT) - 1
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
#: The folder (inside an agent's spool directory) where segments this version cannot read
#: whole are kept, untouched, instead of being deleted.
QUARANTINE: Final = "quarantine"
#: How often a wait for the directory's lock tries again (seconds).
_LOCK_POLL: Final = 0.02


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


def lane_tag(name: str) -> int:
    """The tag (1..255) that marks, in a segment's ``.ack`` file, the records the
    destination (lane) called ``name`` is done with."""
    return 1 + zlib.crc32(name.encode()) % 255


def _part_entry(tag: int, offset: int) -> bytes:
    """The ``.ack`` entry saying that the lane tagged ``tag`` is done with the record at
    ``offset`` (an offset past 56 bits cannot be: a segment is far smaller)."""
    return _ACK.pack(tag << _TAG_SHIFT | offset)


def read_segment(data: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    """Parse a segment's bytes: ``([(offset, kind, payload), ...], corrupt_count)``.

    A record with a bad checksum or a truncated tail is skipped and counted;
    parsing resumes at the next place where a valid record starts.
    """
    records, corrupt, _ = _parse(data)
    return records, corrupt


def _parse(data: bytes) -> tuple[list[tuple[int, int, bytes]], int, bool]:
    """:func:`read_segment`, and whether the damage is more than a torn last record (what a
    process killed mid-write leaves): then the segment is kept in quarantine, not deleted."""
    records: list[tuple[int, int, bytes]] = []
    corrupt = 0
    offset = 0
    end = len(data)
    damaged = False
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
        if following >= 0 or magic != MAGIC or start + length <= end:
            damaged = True  # not just a last record cut off by the end of the file
        if following < 0:
            break
        offset = following
    else:
        if offset < end:
            corrupt += 1  # a torn header at the very end
            damaged = damaged or not MAGIC.startswith(data[offset : offset + len(MAGIC)])
    return records, corrupt, damaged


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
            # Records some lanes are done with are still pending: only whole entries count.
            acked, _ = _read_acks(segment_path[: -len(_SEGMENT_SUFFIX)] + _ACK_SUFFIX)
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


def _read_acks(path: str) -> tuple[set[int], dict[int, frozenset[int]]]:
    """A ``.ack`` file's entries: the offsets of the records settled whole, and for the others,
    the tags of the lanes done with them (a torn last entry is ignored)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return set(), {}
    complete = len(raw) - len(raw) % _ACK.size
    settled: set[int] = set()
    parts: dict[int, set[int]] = {}
    for (entry,) in _ACK.iter_unpack(memoryview(raw)[:complete]):
        tag = entry >> _TAG_SHIFT
        if tag:
            parts.setdefault(entry & _OFFSET_MASK, set()).add(tag)
        else:
            settled.add(entry)
    return settled, {
        offset: frozenset(tags) for offset, tags in parts.items() if offset not in settled
    }


def _lock_directory(root: str, wait: float) -> int:
    """Take the directory's adoption lock, waiting at most ``wait`` seconds; its descriptor.

    The holder writes its pid into the lock file, so that a wait that gives up can say who
    holds it.  Polled rather than blocking: ``flock`` has no timeout, and a holder that
    never lets go (a forked child of an adopter, a stopped process) must not hang the caller.
    """
    fd = os.open(os.path.join(root, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in _WOULD_BLOCK:
                    raise
            if time.monotonic() >= deadline:
                holder = _lock_holder(fd)
                who = f"process {holder}" if holder else "another process"
                raise TimeoutError(
                    errno.ETIMEDOUT,
                    f"the spool directory {root} is locked by {who} (taking over a dead "
                    f"process's records); gave up after waiting {wait:g} s",
                )
            time.sleep(_LOCK_POLL)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # only a courtesy to whoever waits
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _unlock_and_close(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass
    os.close(fd)


def _still_at(fd: int, path: str) -> bool:
    """Whether the open file ``fd`` is still the one at ``path`` (not removed or replaced)."""
    try:
        opened, current = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return opened.st_nlink > 0 and (opened.st_dev, opened.st_ino) == (
        current.st_dev,
        current.st_ino,
    )


def _set_aside(path: str, folder: str) -> None:
    """Move a file into the quarantine folder, untouched."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.replace(path, os.path.join(folder, os.path.basename(path)))


def _age(path: str) -> tuple[int, int]:
    """Sort key: a segment's creation time and counter, from its name."""
    parts = os.path.basename(path)[: -len(_SEGMENT_SUFFIX)].split("-")
    try:
        return int(parts[2]), int(parts[3])
    except (IndexError, ValueError):
        return 0, 0


_writev: Final = getattr(os, "pwritev", None)


def _write_record(fd: int, header: bytes, payload: bytes, offset: int) -> None:
    """Write a record's header and payload at ``offset`` with one system call, without joining
    them first (the copy of a body of several kilobytes would cost as much as the write)."""
    if _writev is None:  # not on every platform
        _pwrite_all(fd, header + payload, offset)
        return
    written = _writev(fd, (header, payload), offset)
    if written < len(header) + len(payload):  # a short write: rare, finish it plainly
        _pwrite_all(fd, (header + payload)[written:], offset + written)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


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
