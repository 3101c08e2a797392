"""The local collector: an Infinium-compatible trace server with SQLite storage and faults."""

from __future__ import annotations

import collections
import dataclasses
import hmac
import logging
import os
import random
import re
import selectors
import socket
import socketserver
import sqlite3
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

import msgspec

from ._collector_store import MEMORY, PromptCatalog, StoredRow, TraceStore, is_uuid
from .convert import decode_task, to_task
from .errors import ConfigurationError, ValidationError
from .model import MAX_BODY_BYTES, TaskData, utc_now_iso

__all__ = ["DEFAULT_PORT", "LocalCollector", "ReceivedTrace"]

#: The port ``infinium-logging serve`` listens on unless told otherwise.
DEFAULT_PORT: Final = 8420

_log = logging.getLogger("infinium_logging.collector")

#: Seconds a connection may sit idle (or stall mid-request) before the server closes it.
_IO_TIMEOUT: Final = 30.0
#: How long stop() waits for connection threads once their sockets are shut down.
_JOIN_TIMEOUT: Final = 5.0
#: Oversized bodies up to this size are read and thrown away so that the client gets its 413 on
#: a connection that stays usable: closing with unread data would reset the connection, which can
#: destroy the answer before the client reads it. Larger ones are answered, then the connection
#: is closed.
_DRAIN_LIMIT: Final = 16 * MAX_BODY_BYTES
_CHUNK: Final = 65_536
_DIGITS: Final = re.compile(r"[0-9]+")
_VERSION: Final = re.compile(r"[1-9][0-9]*")
_NO_GRADING: Final = (
    "Trace stored by the local collector; no grading happens in the local collector, "
    "so interpretedTraceResult is always null."
)
_JSON: Final = msgspec.json.Encoder()


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


# --- fault injection ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Fault:
    """What to do to one trace POST instead of (or after) handling it normally."""

    kind: str  # "status", "drop", "drop_after_accept" or "hang"
    status: int = 0
    retry_after: str | None = None


@dataclasses.dataclass(frozen=True)
class _Chaos:
    rng: random.Random
    # Upper bounds of each fault on [0, 1): a draw below ``p503`` is a 503, and so on.
    limits: tuple[tuple[float, _Fault], ...]


class _FaultPlan:
    """Faults queued for the next trace POSTs, in order, then a seeded random mix; all counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[_Fault] = collections.deque()
        self._chaos: _Chaos | None = None
        self._counts: collections.Counter[str] = collections.Counter()
        self.latency = 0.0

    def queue(self, fault: _Fault, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        with self._lock:
            self._queue.extend([fault] * n)

    def set_chaos(self, chaos: _Chaos | None) -> None:
        with self._lock:
            self._chaos = chaos

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._chaos = None
            self.latency = 0.0

    def take(self) -> _Fault | None:
        """The fault for the trace POST that just arrived, if any."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self._chaos is None:
                return None
            draw = self._chaos.rng.random()
            return next((fault for limit, fault in self._chaos.limits if draw < limit), None)

    def count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _retry_after_text(value: float | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or value < 0:
        raise ValueError(f"retry_after must be a non-negative number of seconds, got {value!r}")
    # A whole number is written as HTTP's delay-seconds; a fraction is kept so that tests of
    # clients that honour Retry-After need not wait whole seconds.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _status_fault(status: int, retry_after: float | str | None) -> _Fault:
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status (400-599), got {status!r}")
    return _Fault("status", status, _retry_after_text(retry_after))


# --- HTTP ---------------------------------------------------------------------------------------


def _error_body(message: str) -> bytes:
    return _JSON.encode({"success": False, "error": message})


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so that it can close them all."""

    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 makes bursts of new connections wait for SYN retries (a second each).
    request_queue_size = 128
    # Used only by handle_request() in the accept loop, once select() said a connection is waiting.
    timeout = 0.0

    def __init__(self, address: tuple[str, int], collector: LocalCollector) -> None:
        self.collector = collector
        #: Set when the listener goes down: releases hanging requests and latency waits.
        self.halt = threading.Event()
        self._lock = threading.Lock()
        self._live: dict[socket.socket, threading.Thread] = {}
        self._aborted: set[socket.socket] = set()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's fully qualified name, a DNS query that can
        # take seconds on machines without a resolver; the name is not needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        # ThreadingMixIn does not keep daemon threads, and stop() must be able to join them.
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="infinium-collector-connection",
            daemon=True,
        )
        with self._lock:
            self._live[request] = thread
        self.collector._connection_opened()
        thread.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._live.pop(request, None)

    def abort(self, request: socket.socket) -> None:
        """Make the connection end with a reset (RST) instead of an orderly close."""
        try:
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        with self._lock:
            self._aborted.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            aborted = request in self._aborted
            self._aborted.discard(request)
        if aborted:
            # No shutdown(SHUT_WR) first: that would send a FIN before the reset.
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a client that vanished is routine here.
        _log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Release waiting requests, shut every open connection down and join their threads."""
        self.halt.set()
        with self._lock:
            live = dict(self._live)
        for request in live:
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in live.values():
            thread.join(max(0.0, deadline - time.monotonic()))


class _Listener:
    """One bound server socket and the thread that accepts its connections."""

    def __init__(self, host: str, port: int, collector: LocalCollector) -> None:
        self.server = _Server((host, port), collector)
        self.port = int(self.server.server_address[1])
        # serve_forever() notices shutdown() only at its next poll; a wake-up socket makes stop
        # immediate without polling while idle.
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(
            target=self._accept_loop, name="infinium-collector-accept", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.server, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                self.server.handle_request()

    def close(self) -> None:
        """Stop accepting, close the listening socket, then every connection."""
        self._wake_w.send(b"x")
        self._thread.join()
        self.server.server_close()
        self.server.close_connections()
        self._wake_r.close()
        self._wake_w.close()


class _Handler(BaseHTTPRequestHandler):
    """Answers one connection's requests (HTTP/1.1 keep-alive; every answer has a length)."""

    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = _IO_TIMEOUT
    # Header and body go out in separate writes: with Nagle on, the second waits for a delayed ACK.
    disable_nagle_algorithm = True
    server_version = "InfiniumLocalCollector"

    _ROUTES: Final = (
        (("healthz",), ("GET", "HEAD"), "_healthz"),
        (("api", "v1", "agents", "{agent_id}", "trace"), ("POST",), "_trace"),
        (
            ("api", "v1", "agents", "{agent_id}", "interpreted-result", "{trace_id}"),
            ("GET",),
            "_interpreted_result",
        ),
        (("api", "v1", "prompts", "{prompt_id}", "v", "{version}"), ("GET",), "_prompt"),
    )

    # --- plumbing -------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s - " + format, self.address_string(), *args)

    def parse_request(self) -> bool:
        self.server.collector._request_seen()
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(400, "HTTP/0.9 is not supported")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Called by the stdlib for malformed request lines and headers: answer in JSON like the
        # rest of the API, then close, since the stream may be out of step.
        if self.request_version == "HTTP/0.9":
            # Set when the request line could not be parsed; an HTTP/0.9 answer has no status
            # line, which clients cannot read.
            self.request_version = "HTTP/1.1"
        phrase = self.responses.get(code, ("error", ""))[0]
        self._error(code, message or phrase, close=True)

    def _answer(
        self,
        status: int,
        body: bytes,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        close: bool = False,
    ) -> None:
        latency = self.server.collector.latency
        if latency > 0 and self.server.halt.wait(latency):
            self._abort()
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(
        self,
        status: int,
        message: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        close: bool = False,
    ) -> None:
        self._answer(status, _error_body(message), headers=headers, close=close)

    def _abort(self) -> None:
        """End the connection with a reset, without an answer."""
        self.close_connection = True
        self.server.abort(self.connection)

    def _read_body(self) -> bytes | None:
        """The request body, or None when the request was answered with an error instead."""
        if self.headers.get("Transfer-Encoding") is not None:
            self._error(411, "chunked bodies are not supported: send a Content-Length", close=True)
            return None
        values = [value.strip() for value in self.headers.get_all("Content-Length", [])]
        if not values:
            if self.command in ("POST", "PUT", "PATCH"):
                self._error(411, "a Content-Length header is required", close=True)
                return None
            return b""
        if len(set(values)) != 1 or not _DIGITS.fullmatch(values[0]):
            self._error(400, "invalid Content-Length header", close=True)
            return None
        length = int(values[0])
        try:
            if length > MAX_BODY_BYTES:
                drained = length <= _DRAIN_LIMIT and self._discard(length)
                self._error(
                    413,
                    f"the body is {length} bytes; the limit is {MAX_BODY_BYTES}",
                    close=not drained,
                )
                return None
            body = self.rfile.read(length)
        except TimeoutError:
            self._error(408, "timed out reading the body", close=True)
            return None
        if len(body) != length:
            self._error(400, f"truncated body: got {len(body)} of {length} bytes", close=True)
            return None
        return body

    def _discard(self, length: int) -> bool:
        while length > 0:
            chunk = self.rfile.read(min(length, _CHUNK))
            if not chunk:
                return False
            length -= len(chunk)
        return True

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            return
        # Only the path is routed; it is never decoded, so "%2e%2e" or "%2F" stay what they are
        # and fail the UUID check.
        segments = self.path.partition("?")[0].split("/")
        if segments[0] != "":
            self._error(400, "the request target must be an absolute path")
            return
        for pattern, methods, name in self._ROUTES:
            params = _match(pattern, segments[1:])
            if params is None:
                continue
            if self.command not in methods:
                self._error(
                    405, f"use {' or '.join(methods)}", headers=(("Allow", ", ".join(methods)),)
                )
                return
            for key, value in params.items():
                if key != "version" and not is_uuid(value):
                    self._error(400, f"{key} must be a UUID")
                    return
            try:
                getattr(self, name)(body=body, **params)
            except OSError:
                raise
            except Exception:
                # A bug here must not leave the client waiting for an answer that never comes.
                _log.exception("the local collector failed to answer %s %s", self.command, name)
                self._error(500, "internal error in the local collector", close=True)
            return
        self._error(404, f"no such endpoint: {self.command} {self.path.partition('?')[0][:200]}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    # --- endpoints ------------------------------------------------------------------------

    def _healthz(self, body: bytes) -> None:
        self._answer(200, _JSON.encode({"status": "ok"}))

    def _trace(self, body: bytes, agent_id: str) -> None:
        collector = self.server.collector
        fault = collector._faults.take()
        if fault is not None and fault.kind != "drop_after_accept":
            self._inject(fault)
            return
        if not self._agent_authenticated(agent_id):
            self._error(401, "invalid agent credentials (x-agent-id / x-agent-key)")
            return
        try:
            # msgspec lets invalid UTF-8 through inside strings; JSON must be UTF-8.
            body.decode("utf-8")
            obj = msgspec.json.decode(body)
        except (UnicodeDecodeError, msgspec.DecodeError) as exc:
            self._error(400, f"the body is not valid JSON: {exc}")
            return
        try:
            task = to_task(obj, strict=True)
        except ValidationError as exc:
            self._error(422, exc.message)
            return
        row = StoredRow(str(uuid.uuid4()), agent_id.lower(), utc_now_iso(), task.name, body)
        try:
            collector._accept(row, task)
        except sqlite3.Error as exc:
            self._error(500, f"could not store the trace: {exc}")
            return
        if fault is not None:
            collector._faults.count("drop_after_accept")
            self._abort()
            return
        answer = {"success": True, "traceId": row.trace_id, "message": "Trace received"}
        self._answer(200, _JSON.encode(answer))

    def _agent_authenticated(self, agent_id: str) -> bool:
        return self.server.collector._agent_allowed(
            agent_id, self.headers.get("x-agent-id", ""), self.headers.get("x-agent-key", "")
        )

    def _inject(self, fault: _Fault) -> None:
        faults = self.server.collector._faults
        if fault.kind == "status":
            faults.count(f"http_{fault.status}")
            extra = () if fault.retry_after is None else (("Retry-After", fault.retry_after),)
            self._error(fault.status, f"injected fault: HTTP {fault.status}", headers=extra)
        elif fault.kind == "drop":
            faults.count("drop")
            self._abort()
        else:
            faults.count("hang")
            self.server.halt.wait()
            self.close_connection = True

    def _interpreted_result(self, body: bytes, agent_id: str, trace_id: str) -> None:
        collector = self.server.collector
        if not self._agent_authenticated(agent_id):
            self._error(401, "invalid agent credentials (x-agent-id / x-agent-key)")
            return
        row = collector._find(trace_id.lower(), agent_id.lower())
        if row is None:
            self._error(404, f"no trace {trace_id} for agent {agent_id}")
            return
        answer = {
            "traceId": row.trace_id,
            "trace": msgspec.Raw(row.body),
            "interpretedTraceResult": None,
            "message": _NO_GRADING,
        }
        self._answer(200, _JSON.encode(answer))

    def _prompt(self, body: bytes, prompt_id: str, version: str) -> None:
        if version != "latest" and not _VERSION.fullmatch(version):
            self._error(400, "version must be a positive integer or 'latest'")
            return
        sent_id = self.headers.get("x-prompt-id", "").strip()
        sent_key = self.headers.get("x-prompt-key", "")
        if sent_id.lower() != prompt_id.lower() or not sent_key:
            self._error(401, "invalid prompt credentials (x-prompt-id / x-prompt-key)")
            return
        prompts = self.server.collector._prompts
        key = prompts.key_of(prompt_id)
        if key is None:
            self._error(404, f"no prompt {prompt_id}")
            return
        # The platform answers a wrong key for an existing prompt with 403, not 401.
        if not hmac.compare_digest(sent_key.encode(), key.encode()):
            self._error(403, "this key does not unlock this prompt")
            return
        found = prompts.version(prompt_id, None if version == "latest" else int(version))
        if found is None:
            self._error(404, f"prompt {prompt_id} has no version {version}")
            return
        answer = {
            "promptId": prompt_id.lower(),
            "name": found.name,
            "version": found.version,
            "content": found.content,
            "createdAt": found.createdAt,
        }
        self._answer(200, _JSON.encode(answer))


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for expected, actual in zip(pattern, segments, strict=True):
        if expected.startswith("{"):
            params[expected[1:-1]] = actual
        elif expected != actual:
            return None
    return params


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
        self._faults = _FaultPlan()
        # _life serialises start/stop/set_down/set_up and reads that need the store open.
        self._life = threading.RLock()
        self._store: TraceStore | None = None
        self._listener: _Listener | None = None
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
                self._listener = _Listener(self._host, self._port, self)
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
        self._faults.queue(_status_fault(status, retry_after), n)

    def drop_next(self, n: int) -> None:
        """Reset the connection of the next ``n`` trace POSTs without answering or storing."""
        self._faults.queue(_Fault("drop"), n)

    def hang_next(self, n: int) -> None:
        """Keep the next ``n`` trace POSTs waiting, unanswered and unstored, until the
        collector is stopped or set down (for testing client deadlines)."""
        self._faults.queue(_Fault("hang"), n)

    def drop_after_accept_next(self, n: int) -> None:
        """Store the next ``n`` valid trace POSTs, then reset the connection without answering:
        the client cannot know the trace arrived, so a resend is a legitimate duplicate."""
        self._faults.queue(_Fault("drop_after_accept"), n)

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
            _status_fault(503, None),
            _status_fault(429, retry_after),
            _Fault("drop"),
            _Fault("drop_after_accept"),
        )
        limits: list[tuple[float, _Fault]] = []
        bound = 0.0
        for share, fault in zip(shares, faults, strict=True):
            bound += share
            limits.append((bound, fault))
        self._faults.set_chaos(_Chaos(random.Random(seed), tuple(limits)))

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
        store.add(row)
        with self._counts:
            self._accepted += 1
            self._counts.notify_all()
        _log.info(
            "trace %s %r: %d steps, %d tokens, %d bytes",
            row.trace_id,
            task.name,
            len(task.steps or ()),
            _tokens(task),
            len(row.body),
        )

    def _find(self, trace_id: str, agent_id: str) -> StoredRow | None:
        store = self._store
        return None if store is None else store.get(trace_id, agent_id)


def _tokens(task: TaskData) -> int:
    """Total tokens of a trace: ``llm_usage`` when it says, else the sum over its steps."""
    usage = task.llm_usage
    if usage is not None:
        if usage.total_tokens is not None:
            return usage.total_tokens
        if usage.prompt_tokens is not None or usage.completion_tokens is not None:
            return (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)
    total = 0
    for step in task.steps or ():
        call = step.llm_call
        if call is not None:
            total += (call.prompt_tokens or 0) + (call.completion_tokens or 0)
    return total
