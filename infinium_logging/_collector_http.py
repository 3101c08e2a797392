"""The local collector's HTTP layer: the server, its connections and the API's endpoints."""

from __future__ import annotations

import hmac
import logging
import re
import selectors
import socket
import socketserver
import sqlite3
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final

import msgspec

from ._collector_faults import Fault
from ._collector_store import StoredRow, is_uuid
from ._viewer import is_loopback, is_viewer_path, respond
from .convert import to_task
from .errors import ValidationError
from .model import MAX_BODY_BYTES, utc_now_iso

if TYPE_CHECKING:
    from .collector import LocalCollector

__all__ = ["Listener"]

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


class Listener:
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
        content_type: str = "application/json",
    ) -> None:
        latency = self.server.collector.latency
        if latency > 0 and self.server.halt.wait(latency):
            self._abort()
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
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
        path = self.path.partition("?")[0]
        segments = path.split("/")
        if segments[0] != "":
            self._error(400, "the request target must be an absolute path")
            return
        if is_viewer_path(path):
            self._view(path)
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
        self._error(404, f"no such endpoint: {self.command} {path[:200]}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    # --- endpoints ------------------------------------------------------------------------

    def _view(self, path: str) -> None:
        collector = self.server.collector
        try:
            page = respond(
                self.command,
                self.path,
                self.headers.get("Host", ""),
                collector._store,
                loopback=is_loopback(collector.host),
            )
        except Exception:
            # As for the API: a bug here must not leave the browser waiting for an answer.
            _log.exception("the trace viewer failed to answer %s %s", self.command, path[:200])
            self._error(500, "internal error in the trace viewer")
            return
        self._answer(page.status, page.body, headers=page.headers, content_type=page.content_type)

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

    def _inject(self, fault: Fault) -> None:
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
