"""The exit spill: what exit leaves undelivered, kept on disk for the agent's next start.

At interpreter exit (and at SIGTERM, see :mod:`.signals`) an exporter has
``shutdown_timeout`` seconds, and its throttle lets only so many requests
through in that time.  What is still buffered then is written to the
configured spool (``INFINIUM_SPOOL_DIR``, where it already is) or else to a
per-user cache directory, one folder per base URL and agent, private to the
user; the next exporter of the same agent sends it from there by itself, and
``infinium-logging replay --spool-dir DIR`` can too.  ``INFINIUM_EXIT_SPOOL=false``
turns it off: what is left is then counted as ``shutdown`` loss.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

from . import lifecycle
from .destination_infinium import encode_trace
from .durability import KIND_BODY, KIND_CAPTURED, RECORD_CODECS, captured_record, dict_record
from .model import TaskData
from .queued import PendingTrace, build_quietly
from .redact import Redactor, redacted_record
from .settings import Settings
from .spool import Spool

__all__ = [
    "active",
    "close",
    "default_spool_dir",
    "keep",
    "mark_exiting",
    "record_of",
    "replay_left",
]

_log = logging.getLogger("infinium_logging.exporter")

_T = TypeVar("_T")

#: Set once the process is exiting (at exit, or at a signal that ends it): only then is what
#: is left spilled; an explicit ``shutdown()`` keeps its documented counting.
_exiting: list[bool] = []
_lock = threading.Lock()
#: Spill directories being replayed by this process (one replay each at a time).
_replaying: set[str] = set()
#: Spill spools open during exit, and what each took, by (directory, agent).
_open: dict[tuple[str, str], Spool] = {}
_kept: dict[tuple[str, str], int] = {}
_failed: set[tuple[str, str]] = set()
_APP: Final = "infinium-logging"


def mark_exiting() -> None:
    """Called at exit, before the exporters shut down."""
    if not _exiting:
        _exiting.append(True)


lifecycle.on_exit(mark_exiting)


def _cache_home() -> str:
    """The per-user cache directory of this platform."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser(r"~\AppData\Local")
        return os.path.join(base, _APP, "Cache")
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~/Library/Caches"), _APP)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.expanduser("~/.cache")
    return os.path.join(base, _APP)


def default_spool_dir(settings: Settings) -> str:
    """Where the exit spill of ``settings`` goes when no ``spool_dir`` is configured: a folder
    per base URL under the user's cache directory (the spool adds one per agent)."""
    url = hashlib.sha256(settings.base_url.encode()).hexdigest()[:16]
    return os.path.join(_cache_home(), "spool", url)


def _where(settings: Settings) -> str | None:
    """The spill directory of ``settings``, or None when nothing is to be spilled there."""
    if settings.disabled or not settings.exit_spool or settings.spool_dir is not None:
        return None
    return default_spool_dir(settings)


def active(settings: Settings) -> bool:
    """Whether what the deadline leaves of ``settings``' traces goes to the spill now."""
    return bool(_exiting) and _where(settings) is not None


def keep(settings: Settings, items: list[_T], record_of: Callable[[_T], Any]) -> list[_T]:
    """At exit, write ``items`` (what the deadline left) to the spill directory; return those
    that could not be written (all of them when not exiting, or spilling is off).

    ``record_of(item)`` is the item's ``(kind, payload)`` spool record, or None.
    """
    directory = _where(settings)
    if not items or not _exiting or directory is None:
        return items
    key = (directory, settings.agent_id)
    with _lock:
        spool = _open.get(key)
        if key in _failed:
            return items
        if spool is None:
            try:
                spool = _open[key] = Spool(
                    directory,
                    settings.agent_id,
                    max_bytes=settings.spool_max_bytes,
                    fsync=settings.spool_fsync,
                    adopt=False,
                )
            except Exception as exc:  # no disk, no home: counted as before
                _failed.add(key)
                _log.warning(
                    "infinium_logging could not open the exit spool in %s: %s", directory, exc
                )
                return items
    left: list[_T] = []
    for item in items:
        try:
            record = record_of(item)
            if record is None:
                left.append(item)
                continue
            kind, payload = record
            spool.append(payload, kind)
        except Exception:
            left.append(item)
    with _lock:
        _kept[key] = _kept.get(key, 0) + len(items) - len(left)
    return left


def close(settings: Settings) -> None:
    """After an exporter's shutdown: close its spill (the next start adopts what it holds)."""
    directory = _where(settings)
    if directory is None:
        return
    key = (directory, settings.agent_id)
    with _lock:
        spool = _open.pop(key, None)
        kept = _kept.pop(key, 0)
    if spool is None:
        return
    spool.close()
    if kept:
        _log.warning(
            "infinium_logging kept %d trace(s) it could not send before exit in %s; the next "
            "start of this agent sends them",
            kept,
            spool.root,
        )


def replay_left(settings: Settings, replay: Callable[[Settings], object]) -> None:
    """When an earlier run spilled traces for this agent, send them now, on a thread of their
    own (``replay`` is :func:`~infinium_logging.exporter.replay_spool`)."""
    directory = _where(settings)
    if directory is None:
        return
    try:
        names: Iterable[str] = os.listdir(os.path.join(directory, settings.agent_id))
    except OSError:
        return
    if not any(name.endswith(".log") for name in names):
        return
    with _lock:
        if directory in _replaying:
            return
        _replaying.add(directory)

    def run() -> None:
        try:
            replay(settings.replace(spool_dir=directory))
        except Exception as exc:  # the records stay for the next start
            _log.debug("replaying the exit spool failed: %s", exc)
        finally:
            with _lock:
                _replaying.discard(directory)

    threading.Thread(target=run, name="infinium-spill-replay", daemon=True).start()


def record_of(item: Any, redactor: Redactor) -> tuple[int, bytes] | None:
    """The spool record ``(kind, payload)`` of an exporter's queued trace, as the exporter's
    own write-ahead would make it (redacted: the disk never holds a secret); None when it
    has none."""
    if item.body is not None:  # redacted when it was encoded
        return KIND_BODY, bytes(item.body)
    task = item.task
    if isinstance(task, PendingTrace):
        captured = captured_record(task)
        if captured is not None:
            codecs = RECORD_CODECS[KIND_CAPTURED]
            return KIND_CAPTURED, redacted_record(redactor, captured, *codecs)
        task = build_quietly(task)
    if isinstance(task, TaskData):
        body = encode_trace(task)
        clean = redactor.encoded(task, body)
        return KIND_BODY, body if clean is task else encode_trace(clean)
    if isinstance(task, dict):
        kind, payload = dict_record(task)
        return kind, redacted_record(redactor, payload, *RECORD_CODECS[kind])
    return None
