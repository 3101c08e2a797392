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

__all__ = [
    "MEMORY",
    "ListedTrace",
    "PromptCatalog",
    "PromptVersion",
    "StoredRow",
    "TraceQuery",
    "TraceStore",
    "is_uuid",
]

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
# What the viewer lists and filters on, kept beside each body so that a page of a large
# database is one indexed query instead of decoding every body. Added to older files on open.
_SUMMARY_COLUMNS: Final = (
    ("duration", "REAL"),
    ("steps", "INTEGER"),
    ("tokens", "INTEGER"),
    ("errors", "INTEGER"),
)
_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS traces_agent ON traces (agent_id, seq)",
    "CREATE INDEX IF NOT EXISTS traces_errors ON traces (errors, seq)",
)
_LISTED: Final = "seq, trace_id, agent_id, received_at, name, duration, steps, tokens, errors"


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


class ListedTrace(NamedTuple):
    """One line of the viewer's trace list."""

    seq: int
    trace_id: str
    agent_id: str
    received_at: str
    name: str
    duration: float
    steps: int
    tokens: int
    errors: int


class TraceQuery(NamedTuple):
    """Which traces to list: newest first, ``limit`` of them older than ``before`` (a ``seq``),
    or newer than ``after`` (oldest of those first, for paging back)."""

    text: str = ""
    agent_id: str = ""
    errors_only: bool = False
    before: int | None = None
    after: int | None = None
    limit: int = 50


class _DigestUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class _DigestStep(msgspec.Struct):
    action: str = ""
    error: dict[str, Any] | None = None
    tool_call: dict[str, Any] | None = None
    llm_call: _DigestUsage | None = None


class _Digest(msgspec.Struct):
    """The few fields of a body that the trace list shows; the rest is skipped unread."""

    duration: float = 0.0
    steps: list[_DigestStep] | None = None
    llm_usage: _DigestUsage | None = None
    errors: list[Any] | None = None


_DIGEST: Final = msgspec.json.Decoder(_Digest)


def summarize(body: bytes) -> tuple[float, int, int, int]:
    """Duration, step count, total tokens and error count of a trace body.

    Tokens are ``llm_usage``'s when it says, else the sum over the steps; errors
    count the trace's own and the steps that failed.
    """
    try:
        digest = _DIGEST.decode(body)
    except msgspec.DecodeError:
        # Bodies were checked on arrival; an old file's odd one still gets listed.
        return 0.0, 0, 0, 0
    steps = digest.steps or []
    usage = digest.llm_usage
    tokens: int | None = None
    if usage is not None:
        if usage.total_tokens is not None:
            tokens = usage.total_tokens
        elif usage.prompt_tokens is not None or usage.completion_tokens is not None:
            tokens = (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)
    if tokens is None:
        tokens = sum(
            (s.llm_call.prompt_tokens or 0) + (s.llm_call.completion_tokens or 0)
            for s in steps
            if s.llm_call is not None
        )
    # A step counts once, whether it carries an error, its tool call does, or it is an event
    # logged at ERROR (action "error"), as the viewer marks it.
    errors = len(digest.errors or ()) + sum(
        s.error is not None
        or (s.tool_call is not None and "error" in s.tool_call)
        or s.action == "error"
        for s in steps
    )
    return digest.duration, len(steps), tokens, errors


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
            self._add_summaries()
        except BaseException:
            self._conn.close()
            raise

    def _add_summaries(self) -> None:
        """Give a file written before the summary columns existed its columns and values."""
        present = {item[1] for item in self._conn.execute("PRAGMA table_info(traces)")}
        for name, kind in _SUMMARY_COLUMNS:
            if name not in present:
                self._conn.execute(f"ALTER TABLE traces ADD COLUMN {name} {kind}")
        missing = self._conn.execute("SELECT seq, body FROM traces WHERE errors IS NULL")
        updates = [(*summarize(body.encode()), seq) for seq, body in missing.fetchall()]
        if updates:
            self._conn.executemany(
                "UPDATE traces SET duration = ?, steps = ?, tokens = ?, errors = ? WHERE seq = ?",
                updates,
            )
        for statement in _INDEXES:
            self._conn.execute(statement)

    def add(self, row: StoredRow) -> tuple[float, int, int, int]:
        """Store one accepted trace; returns its :func:`summarize` figures."""
        summary = summarize(row.body)
        with self._lock:
            self._conn.execute(
                "INSERT INTO traces (trace_id, agent_id, received_at, name, body,"
                " duration, steps, tokens, errors) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.trace_id,
                    row.agent_id,
                    row.received_at,
                    row.name,
                    row.body.decode(),
                    *summary,
                ),
            )
        return summary

    def add_many(self, rows: list[StoredRow]) -> None:
        """Store traces kept from an earlier run, in their order (ones already stored are kept)."""
        values = [
            (r.trace_id, r.agent_id, r.received_at, r.name, r.body.decode(), *summarize(r.body))
            for r in rows
        ]
        with self._lock:
            self._conn.executemany(
                "INSERT OR IGNORE INTO traces (trace_id, agent_id, received_at, name, body,"
                " duration, steps, tokens, errors) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def page(self, query: TraceQuery) -> tuple[list[ListedTrace], int]:
        """One page of the trace list, newest first, and how many traces match in all."""
        where: list[str] = []
        params: list[Any] = []
        if query.text:
            # LIKE's wildcards in the text are matched literally.
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", query.text) + "%"
            where.append(
                "(name LIKE ? ESCAPE '\\' OR trace_id LIKE ? ESCAPE '\\'"
                " OR agent_id LIKE ? ESCAPE '\\')"
            )
            params += [pattern, pattern, pattern]
        if query.agent_id:
            where.append("agent_id = ?")
            params.append(query.agent_id)
        if query.errors_only:
            where.append("errors > 0")
        matching = " AND ".join(where) or "1"
        window, order, bound = matching, "DESC", []
        if query.before is not None:
            window, bound = window + " AND seq < ?", [query.before]
        elif query.after is not None:
            window, order, bound = window + " AND seq > ?", "ASC", [query.after]
        with self._lock:
            total = self._conn.execute(
                # Only fixed fragments are formatted in; every value is a parameter.
                f"SELECT COUNT(*) FROM traces WHERE {matching}",  # noqa: S608
                params,
            ).fetchone()[0]
            found = self._conn.execute(
                f"SELECT {_LISTED} FROM traces WHERE {window} ORDER BY seq {order} LIMIT ?",  # noqa: S608
                [*params, *bound, query.limit],
            ).fetchall()
        listed = [ListedTrace(*item) for item in found]
        if order == "ASC":
            listed.reverse()
        return listed, int(total)

    def agents(self) -> list[str]:
        """Every agent id that sent a trace."""
        with self._lock:
            found = self._conn.execute("SELECT DISTINCT agent_id FROM traces ORDER BY 1")
            return [item[0] for item in found.fetchall()]

    def newest(self) -> int:
        """The ``seq`` of the newest trace (0 when there is none): changes when one arrives."""
        with self._lock:
            found = self._conn.execute("SELECT MAX(seq) FROM traces").fetchone()
        return int(found[0] or 0)

    def find(self, trace_id: str) -> tuple[ListedTrace, bytes] | None:
        """A trace's list line and its body, by trace id alone."""
        with self._lock:
            found = self._conn.execute(
                f"SELECT {_LISTED}, body FROM traces WHERE trace_id = ?",  # noqa: S608
                (trace_id,),
            ).fetchone()
        if found is None:
            return None
        return ListedTrace(*found[:-1]), found[-1].encode()

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
