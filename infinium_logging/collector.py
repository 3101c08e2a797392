"""The local collector: an Infinium-compatible trace server with SQLite storage and faults."""

from __future__ import annotations

import dataclasses
import hmac
import logging
import os
import random
import sqlite3
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final

from ._collector_faults import Chaos, Fault, FaultPlan, status_fault
from ._collector_http import Listener
from ._collector_store import MEMORY, PromptCatalog, StoredRow, TraceStore, is_uuid
from .convert import decode_task
from .errors import ConfigurationError
from .model import TaskData

__all__ = ["DEFAULT_PORT", "LocalCollector", "ReceivedTrace"]

#: The port ``infinium-logging serve`` listens on unless told otherwise.
DEFAULT_PORT: Final = 8420

_log = logging.getLogger("infinium_logging.collector")


@dataclasses.dataclass(frozen=True)
class ReceivedTrace:
    """One trace the collector accepted.

    ``received_at`` is UTC ISO 8601 (``2026-11-22T08:51:00.123456Z``); ``body`` is
    the JSON exactly as received and ``task`` the same trace decoded.
    """

    trace_id: str
    agent_id: str
    received_at: str
    task: TaskData
    body: bytes


# --- the public API -----------------------------------------------------------------------------


class LocalCollector:
    """A local, Infinium-compatible trace endpoint: traces are checked as the platform checks
    them and stored in SQLite instead of being graded.

    ``port=0`` picks a free port (read it back from :attr:`port` or :attr:`base_url`).
    ``db`` is a SQLite file, or ``":memory:"``. With ``agent_id`` and/or
    ``agent_secret`` set, only those credentials are accepted; without them the
    collector is open: any ``x-agent-key`` is accepted, as long as ``x-agent-id``
    matches the agent id in the path. ``prompts`` (a JSON file or a mapping of
    the same shape) is what ``GET /prompts/{id}/v/{version}`` serves::

        {"<prompt uuid>": {"key": "<prompt key>",
                           "versions": [{"version": 1, "name": "...", "content": "...",
                                         "createdAt": "2026-01-01T00:00:00Z"}]}}

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Fault
    injection (:meth:`fail_next`, :meth:`drop_next`, :meth:`hang_next`,
    :meth:`drop_after_accept_next`, :meth:`chaos`, :attr:`latency`) applies to
    trace POSTs and is counted in :attr:`faults`.
    """

    def __init__(
        self,
        port: int = 0,
        db: str | os.PathLike[str] = MEMORY,
        agent_id: str | None = None,
        agent_secret: str | None = None,
        prompts: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be an int from 0 to 65535, got {port!r}", "port")
        if agent_id is not None and not is_uuid(agent_id):
            raise ConfigurationError(f"agent_id must be a UUID, got {agent_id!r}", "agent_id")
        if agent_secret is not None and not agent_secret:
            raise ConfigurationError("agent_secret must not be empty", "agent_secret")
        self._host = host
        self._port = port
        self._db = os.fspath(db)
        self._agent_id = None if agent_id is None else agent_id.lower()
        self._agent_secret = agent_secret
        self._prompts = PromptCatalog(prompts)
        self._faults = FaultPlan()
        # _life serialises start/stop/set_down/set_up and reads that need the store open.
        self._life = threading.RLock()
        self._store: TraceStore | None = None
        self._listener: Listener | None = None
        # Rows of a ":memory:" database, kept across stop() so start() can bring them back.
        self._kept: list[StoredRow] = []
        self._counts = threading.Condition()
        self._requests = 0
        self._accepted = 0
        self._connections = 0

    def __repr__(self) -> str:
        state = "up" if self.is_up else "down"
        mode = "open" if self._agent_id is None and self._agent_secret is None else "closed"
        return (
            f"<LocalCollector {self._host}:{self._port} {state} db={self._db!r} {mode}"
            f" accepted={self.accepted_count}>"
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> LocalCollector:
        """Open the database and start serving; returns ``self``. Idempotent.

        After :meth:`stop` it starts again on the same port, with the traces of a
        ``":memory:"`` database brought back.
        """
        with self._life:
            if self._store is None:
                store = TraceStore(self._db)
                if self._db == MEMORY and self._kept:
                    store.add_many(self._kept)
                self._store = store
            if self._listener is None:
                try:
                    self.set_up()
                except BaseException:
                    self._close_store()
                    raise
            return self

    def stop(self) -> None:
        """Stop serving, close every connection and the database. Idempotent, and prompt:
        requests still waiting (latency, :meth:`hang_next`) are cut off."""
        with self._life:
            self.set_down()
            self._close_store()

    def set_down(self) -> None:
        """Take the server off the network (an outage): close the listening socket and every
        connection. Traces are kept; :meth:`set_up` comes back on the same port."""
        with self._life:
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.close()
                _log.debug("local collector on port %d is down", self._port)

    def set_up(self) -> None:
        """Serve again after :meth:`set_down`, on the same port (or start for the first time)."""
        with self._life:
            if self._store is None:
                raise RuntimeError("start() the collector before set_up()")
            if self._listener is None:
                self._listener = Listener(self._host, self._port, self)
                self._port = self._listener.port
                _log.debug("local collector listening on %s", self.base_url)

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            if self._db == MEMORY:
                self._kept = store.rows()
            store.close()

    def __enter__(self) -> LocalCollector:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- where it is ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server binds."""
        return self._host

    @property
    def port(self) -> int:
        """The port (the one actually bound once started, also after a stop)."""
        return self._port

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:8420`` (``/healthz`` is below it)."""
        if self._port == 0:
            raise RuntimeError("the collector has no port yet: start() it first")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def viewer_url(self) -> str:
        """Where a browser shows the stored traces, e.g. ``http://127.0.0.1:8420/``."""
        return f"{self.url}/"

    @property
    def base_url(self) -> str:
        """What to give a client as its base URL, e.g. ``http://127.0.0.1:8420/api/v1``."""
        return f"{self.url}/api/v1"

    @property
    def is_up(self) -> bool:
        """Whether the server is accepting connections."""
        return self._listener is not None

    # --- what it received -----------------------------------------------------------------

    def traces(self) -> list[ReceivedTrace]:
        """Every trace in the database, in arrival order (a file may hold earlier runs' too)."""
        with self._life:
            if self._store is not None:
                rows = self._store.rows()
            elif self._db == MEMORY:
                rows = list(self._kept)
            else:
                store = TraceStore(self._db)
                try:
                    rows = store.rows()
                finally:
                    store.close()
        # Stored bodies passed the strict check on arrival; lenient decoding only keeps old
        # files readable should the model grow stricter.
        return [
            ReceivedTrace(
                r.trace_id, r.agent_id, r.received_at, decode_task(r.body, strict=False), r.body
            )
            for r in rows
        ]

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """Block until this collector has accepted at least ``n`` traces; False on timeout."""
        with self._counts:
            return self._counts.wait_for(lambda: self._accepted >= n, timeout)

    @property
    def request_count(self) -> int:
        """HTTP requests received (every endpoint, malformed ones and faulted ones included)."""
        with self._counts:
            return self._requests

    @property
    def accepted_count(self) -> int:
        """Traces accepted and stored by this collector (including ones dropped after storing)."""
        with self._counts:
            return self._accepted

    @property
    def connection_count(self) -> int:
        """TCP connections accepted so far (keep-alive reuses one for many requests)."""
        with self._counts:
            return self._connections

    # --- fault injection ------------------------------------------------------------------

    def fail_next(self, n: int, status: int, retry_after: float | str | None = None) -> None:
        """Answer the next ``n`` trace POSTs with ``status`` (400-599) and, if given, a
        ``Retry-After`` header (seconds, or a string sent as is). Nothing is stored."""
        self._faults.queue(status_fault(status, retry_after), n)

    def drop_next(self, n: int) -> None:
        """Reset the connection of the next ``n`` trace POSTs without answering or storing."""
        self._faults.queue(Fault("drop"), n)

    def hang_next(self, n: int) -> None:
        """Keep the next ``n`` trace POSTs waiting, unanswered and unstored, until the
        collector is stopped or set down (for testing client deadlines)."""
        self._faults.queue(Fault("hang"), n)

    def drop_after_accept_next(self, n: int) -> None:
        """Store the next ``n`` valid trace POSTs, then reset the connection without answering:
        the client cannot know the trace arrived, so a resend is a legitimate duplicate."""
        self._faults.queue(Fault("drop_after_accept"), n)

    def chaos(
        self,
        seed: int | None,
        *,
        p503: float = 0.0,
        p429: float = 0.0,
        p_reset: float = 0.0,
        p_reset_after_accept: float = 0.0,
        retry_after: float | str | None = None,
    ) -> None:
        """Fault a seeded random share of trace POSTs (once queued faults are used up):
        503s, 429s (with ``retry_after``), resets before storing and resets after storing.
        The same seed gives the same sequence; ``seed=None`` turns chaos off."""
        if seed is None:
            self._faults.set_chaos(None)
            return
        shares = (p503, p429, p_reset, p_reset_after_accept)
        if any(not 0.0 <= p <= 1.0 for p in shares) or sum(shares) > 1.0:
            raise ValueError("probabilities must be within [0, 1] and add up to at most 1")
        faults = (
            status_fault(503, None),
            status_fault(429, retry_after),
            Fault("drop"),
            Fault("drop_after_accept"),
        )
        limits: list[tuple[float, Fault]] = []
        bound = 0.0
        for share, fault in zip(shares, faults, strict=True):
            bound += share
            limits.append((bound, fault))
        self._faults.set_chaos(Chaos(random.Random(seed), tuple(limits)))

    def reset_faults(self) -> None:
        """Forget queued faults, chaos and latency (the counts in :attr:`faults` remain)."""
        self._faults.reset()

    @property
    def latency(self) -> float:
        """Seconds added before every answer (settable; 0 by default)."""
        return self._faults.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"latency must be a non-negative number of seconds, got {seconds!r}")
        self._faults.latency = float(seconds)

    @property
    def faults(self) -> dict[str, int]:
        """Faults applied so far, by kind: ``http_503``, ``http_429`` (one key per status),
        ``drop``, ``drop_after_accept``, ``hang``."""
        return self._faults.counts()

    # --- used by the request handler --------------------------------------------------------

    def _request_seen(self) -> None:
        with self._counts:
            self._requests += 1

    def _connection_opened(self) -> None:
        with self._counts:
            self._connections += 1

    def _agent_allowed(self, path_agent_id: str, sent_id: str, sent_key: str) -> bool:
        agent_id = path_agent_id.lower()
        if sent_id.strip().lower() != agent_id or not sent_key:
            return False
        if self._agent_id is not None and agent_id != self._agent_id:
            return False
        secret = self._agent_secret
        return secret is None or hmac.compare_digest(sent_key.encode(), secret.encode())

    def _accept(self, row: StoredRow, task: TaskData) -> None:
        store = self._store
        if store is None:
            raise sqlite3.ProgrammingError("the collector is stopped")
        _, steps, tokens, _ = store.add(row)
        with self._counts:
            self._accepted += 1
            self._counts.notify_all()
        _log.info(
            "trace %s %r: %d steps, %d tokens, %d bytes",
            row.trace_id,
            task.name,
            steps,
            tokens,
            len(row.body),
        )

    def _find(self, trace_id: str, agent_id: str) -> StoredRow | None:
        store = self._store
        return None if store is None else store.get(trace_id, agent_id)
