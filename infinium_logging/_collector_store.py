"""What the local collector keeps: accepted traces in SQLite, and the prompt catalog it serves."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Mapping
from typing import Annotated, Any, Final, NamedTuple

import msgspec

from .errors import ConfigurationError

__all__ = ["MEMORY", "PromptCatalog", "PromptVersion", "StoredRow", "TraceStore", "is_uuid"]

#: The database name that keeps traces in memory only.
MEMORY: Final = ":memory:"

# A strict textual UUID (what the official client sends): ``uuid.UUID`` alone would also take
# braces, ``urn:uuid:`` prefixes and missing hyphens, which the platform does not.
_UUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL
)
"""


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID in its usual hyphenated form (any case)."""
    return _UUID_RE.fullmatch(text) is not None


class StoredRow(NamedTuple):
    """One accepted trace as stored: the body is the JSON exactly as received."""

    trace_id: str
    agent_id: str
    received_at: str
    name: str
    body: bytes


class TraceStore:
    """Accepted traces in one SQLite database (a file, or ``":memory:"``), one row per trace.

    One connection shared by the server's threads behind a lock: SQLite
    serialises writers anyway, and a single connection is what keeps a
    ``":memory:"`` database alive.
    """

    def __init__(self, db: str | os.PathLike[str]) -> None:
        self._lock = threading.Lock()
        target = os.fspath(db)
        # Autocommit (isolation_level=None): every insert is durable on its own, so a
        # reader in another process (``sqlite3 infinium-traces.sqlite3``) sees it at once.
        self._conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        try:
            if target != MEMORY:
                # WAL lets readers in other processes query the file while the server writes.
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
        except BaseException:
            self._conn.close()
            raise

    def add(self, row: StoredRow) -> None:
        """Store one accepted trace."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO traces (trace_id, agent_id, received_at, name, body)"
                " VALUES (?, ?, ?, ?, ?)",
                (row.trace_id, row.agent_id, row.received_at, row.name, row.body.decode()),
            )

    def add_many(self, rows: list[StoredRow]) -> None:
        """Store traces kept from an earlier run, in their order."""
        with self._lock:
            self._conn.executemany(
                "INSERT OR IGNORE INTO traces (trace_id, agent_id, received_at, name, body)"
                " VALUES (?, ?, ?, ?, ?)",
                [(r.trace_id, r.agent_id, r.received_at, r.name, r.body.decode()) for r in rows],
            )

    def get(self, trace_id: str, agent_id: str) -> StoredRow | None:
        """The trace ``trace_id`` if ``agent_id`` sent it, else None."""
        with self._lock:
            found = self._conn.execute(
                "SELECT trace_id, agent_id, received_at, name, body FROM traces"
                " WHERE trace_id = ? AND agent_id = ?",
                (trace_id, agent_id),
            ).fetchone()
        return None if found is None else _row(found)

    def rows(self) -> list[StoredRow]:
        """Every stored trace, in arrival order."""
        with self._lock:
            found = self._conn.execute(
                "SELECT trace_id, agent_id, received_at, name, body FROM traces ORDER BY seq"
            ).fetchall()
        return [_row(item) for item in found]

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._conn.close()


def _row(found: Any) -> StoredRow:
    trace_id, agent_id, received_at, name, body = found
    return StoredRow(trace_id, agent_id, received_at, name, body.encode())


# --- prompts ---------------------------------------------------------------------------------


class PromptVersion(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One version of a prompt, as given in the prompts file."""

    version: Annotated[int, msgspec.Meta(ge=1)]
    name: str
    content: str
    createdAt: str = ""  # the platform's key, kept as is


class _Prompt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: Annotated[str, msgspec.Meta(min_length=1)]
    versions: Annotated[list[PromptVersion], msgspec.Meta(min_length=1)]


class PromptCatalog:
    """The prompts a collector serves, read from JSON of the form
    ``{prompt_id: {"key": ..., "versions": [{"version": 1, "name": ..., "content": ...,
    "createdAt": ...}]}}``.
    """

    def __init__(self, source: str | os.PathLike[str] | Mapping[str, Any] | None) -> None:
        self._prompts: dict[str, _Prompt] = {}
        if source is None:
            return
        where = "prompts" if isinstance(source, Mapping) else os.fspath(source)
        try:
            if isinstance(source, Mapping):
                loaded = msgspec.convert(source, dict[str, _Prompt])
            else:
                with open(source, "rb") as file:
                    loaded = msgspec.json.decode(file.read(), type=dict[str, _Prompt])
        except OSError as exc:
            raise ConfigurationError(f"cannot read {where}: {exc.strerror}", "prompts") from None
        except msgspec.MsgspecError as exc:
            raise ConfigurationError(f"invalid {where}: {exc}", "prompts") from None
        for prompt_id, prompt in loaded.items():
            if not is_uuid(prompt_id):
                raise ConfigurationError(f"invalid {where}: {prompt_id!r} is not a UUID", "prompts")
            numbers = [item.version for item in prompt.versions]
            if len(set(numbers)) != len(numbers):
                raise ConfigurationError(
                    f"invalid {where}: prompt {prompt_id} lists a version twice", "prompts"
                )
            self._prompts[prompt_id.lower()] = prompt

    def __len__(self) -> int:
        return len(self._prompts)

    def key_of(self, prompt_id: str) -> str | None:
        """The key that unlocks ``prompt_id``, or None for an unknown prompt."""
        prompt = self._prompts.get(prompt_id.lower())
        return None if prompt is None else prompt.key

    def version(self, prompt_id: str, version: int | None) -> PromptVersion | None:
        """Version ``version`` of a prompt (None: the latest), or None when there is no such one."""
        prompt = self._prompts.get(prompt_id.lower())
        if prompt is None:
            return None
        if version is None:
            return max(prompt.versions, key=lambda item: item.version)
        return next((item for item in prompt.versions if item.version == version), None)
