"""The HTTP transport: one pooled urllib3 client; answers mapped to ApiResponse or typed errors.

Each attempt has one deadline (its timeout, from the start of the attempt) for the whole
answer, headers and body, and reads at most :data:`MAX_ANSWER` bytes of it: a server that
drips its answer or sends megabytes cannot hold a sender longer, or fill its memory.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401
import http.client
import io

# urllib3 encodes host names with the "idna" codec, which Python imports lazily on first use.
# Imported here, before any sender thread exists: a fork that happened while a thread was in
# the middle of that import would leave its import lock held forever in the child.
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError
from urllib3.util.retry import Retry

from .errors import (
    AuthenticationError,
    InfiniumError,
    InfiniumTimeoutError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from .model import ApiResponse
from .retry import parse_retry_after
from .settings import Settings

__all__ = ["MAX_ANSWER", "Transport", "redacted"]

#: Most bytes of an answer's body read (the API answers with small JSON objects); the rest
#: is not read, and the connection is closed rather than reused.
MAX_ANSWER: Final = 1024 * 1024

_DECODER: Final = msgspec.json.Decoder()
#: Built once: passing ``False`` per request makes urllib3 build (and log) a Retry each time.
_NO_RETRIES: Final = Retry(total=False, redirect=False)
#: Longest server message kept in an error (a misbehaving server could send megabytes).
_MAX_MESSAGE: Final = 500
#: What a peer closing a kept-alive connection looks like to the client.
_CLOSED_BY_PEER: Final = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


class _Reuse(threading.local):
    #: Whether the last request this thread made went over a connection used before.
    reused = False
    #: When the answer to the request this thread is making must be in (``time.monotonic``).
    deadline: float | None = None


_REUSE: Final = _Reuse()


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each given the time left until the attempt's deadline at most.

    urllib3's read timeout bounds each read: an answer dripped a byte at a time would
    otherwise never time out.
    """

    def __init__(self, sock: socket.socket, deadline: float, hold: io.IOBase) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._per_read = sock.gettimeout()
        # The socket's own reader, closed with this one: while it is open, the socket stays
        # open although http.client closes its connection (as it does after "Connection:
        # close", before the body is read).
        self._hold = hold

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._hold.close()
        super().close()

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer did not arrive within the attempt's timeout")
        per_read = self._per_read
        self._sock.settimeout(left if per_read is None else min(left, per_read))
        return self._sock.recv_into(buffer)


class _DeadlineResponse(http.client.HTTPResponse):
    """The standard response, reading through a :class:`_DeadlineReader` during a request
    of :class:`Transport` (the deadline is per thread: a request runs on one)."""

    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        deadline = _REUSE.deadline
        if deadline is not None and isinstance(sock, socket.socket):
            self.fp = io.BufferedReader(_DeadlineReader(sock, deadline, self.fp))


class _TrackedHTTPConnection(HTTPConnection):
    """An HTTPConnection that records, per thread, whether a request reused the connection.

    urllib3 does not tell a caller whether a failed request went over a fresh
    socket or a pooled one; only the pooled case is the harmless race (the
    server closed an idle connection just as we sent on it) that deserves an
    immediate, uncounted repeat.
    """

    _fresh = False
    response_class = _DeadlineResponse

    def connect(self) -> None:
        super().connect()
        self._fresh = True

    def request(self, *args: Any, **kwargs: Any) -> None:
        _REUSE.reused = self.sock is not None and not self._fresh
        try:
            super().request(*args, **kwargs)
        finally:
            self._fresh = False


class _TrackedHTTPSConnection(_TrackedHTTPConnection, HTTPSConnection):
    """The TLS variant of :class:`_TrackedHTTPConnection`."""


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


def _is_uuid(value: str) -> bool:
    try:
        return len(value) == 36 and str(uuid.UUID(value)) == value.lower()
    except (ValueError, AttributeError, TypeError):
        return False


class Transport:
    """Sends requests to the Infinium API over one ``urllib3.PoolManager``.

    The pool keeps ``settings.workers`` connections alive per host, never
    retries by itself (the retry policy decides) and never follows a redirect
    (the credentials would go along).  Every answer becomes an
    :class:`~infinium_logging.model.ApiResponse` on success, or one of the
    errors of :mod:`infinium_logging.errors`; no exception of urllib3 leaks
    out.  Thread-safe.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout = urllib3.Timeout(connect=settings.timeout, read=settings.timeout)
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=settings.workers,
            block=False,
            retries=_NO_RETRIES,
            timeout=self._timeout,
            cert_reqs="CERT_REQUIRED" if settings.verify_ssl else "CERT_NONE",
        )
        # Documented extension point of PoolManager: our pools make tracked connections.
        self._pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        parts = urlsplit(settings.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host: HTTPConnectionPool | None = None
        self._trace_url = settings.trace_url
        self._agent_headers = {
            "x-agent-id": settings.agent_id,
            "x-agent-key": settings.agent_secret,
            "User-Agent": settings.user_agent,
            "Content-Type": "application/json",
        }

    def __repr__(self) -> str:
        return f"Transport(base_url={self._settings.base_url!r}, workers={self._settings.workers})"

    @property
    def settings(self) -> Settings:
        """The settings this transport was built with."""
        return self._settings

    def post_trace(self, body: bytes, *, timeout: float | None = None) -> ApiResponse:
        """POST one encoded trace; the answer's ``data["traceId"]`` names the stored trace.

        ``timeout`` (seconds, connect and read) overrides the settings' for this
        request, e.g. to end it before a shutdown deadline.  Raises the typed
        errors of :mod:`infinium_logging.errors`.
        """
        return self.request(
            "POST", self._trace_url, body=body, headers=self._agent_headers, timeout=timeout
        )

    def get_interpreted_result(self, trace_id: str) -> ApiResponse:
        """GET the platform's interpretation of a stored trace.

        ``data["interpretedTraceResult"]`` is there once the platform graded the
        trace.  A ``trace_id`` that is not a UUID is a ValidationError (it goes
        into the URL's path).
        """
        if not isinstance(trace_id, str) or not _is_uuid(trace_id):
            raise ValidationError("trace_id must be a UUID", path="trace_id")
        url = (
            f"{self._settings.base_url}/agents/{self._settings.agent_id}"
            f"/interpreted-result/{trace_id.lower()}"
        )
        headers = {k: v for k, v in self._agent_headers.items() if k != "Content-Type"}
        return self.request("GET", url, headers=headers)

    def get_prompt(
        self, prompt_id: str, prompt_key: str, version: int | str = "latest"
    ) -> ApiResponse:
        """GET a Prompt Studio prompt (``promptId``, ``name``, ``version``, ``content``...).

        ``version`` is a positive integer or ``"latest"``; the prompt's own
        credentials go in ``x-prompt-id`` / ``x-prompt-key``.
        """
        if not isinstance(prompt_id, str) or not _is_uuid(prompt_id):
            raise ValidationError("prompt_id must be a UUID", path="prompt_id")
        if not isinstance(prompt_key, str) or not prompt_key.strip():
            raise ValidationError("prompt_key is required", path="prompt_key")
        prompt_key = prompt_key.strip()
        if not prompt_key.isascii() or not prompt_key.isprintable():
            raise ValidationError(
                "prompt_key must be printable ASCII (it is sent in an HTTP header)",
                path="prompt_key",
            )
        text = _version_text(version)
        url = f"{self._settings.base_url}/prompts/{prompt_id.lower()}/v/{text}"
        headers = {
            "x-prompt-id": prompt_id,
            "x-prompt-key": prompt_key,
            "User-Agent": self._settings.user_agent,
        }
        return self.request("GET", url, headers=headers, context="prompt")

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeout: float | None = None,
        context: str = "agent",
    ) -> ApiResponse:
        """Make one request (plus one immediate repeat if a pooled connection was found closed).

        Returns the ApiResponse of a 2xx answer; raises a typed error otherwise.
        """
        limit = self._timeout if timeout is None else urllib3.Timeout(connect=timeout, read=timeout)
        if not url.startswith(self._origin + "/"):
            raise ValueError(f"{url!r} is not below {self._origin!r}")
        path = url[len(self._origin) :]
        failure: BaseException | None = None
        seconds = self._settings.timeout if timeout is None else timeout
        for attempt in (1, 2):
            _REUSE.reused = False
            _REUSE.deadline = time.monotonic() + seconds
            try:
                # Straight to the host's pool: PoolManager.request would parse the URL and
                # rebuild the pool key on every request, a sixth of the client's CPU per trace.
                response = self._host_pool().urlopen(
                    method,
                    path,
                    body=body,
                    headers=headers,
                    timeout=limit,
                    retries=_NO_RETRIES,
                    redirect=False,
                    preload_content=False,
                    assert_same_host=False,
                )
                raw = _read_capped(response)
            except ClosedPoolError as exc:
                if attempt == 1:  # clear() closed the pool under us: take the new one
                    continue
                failure = exc
            except ProtocolError as exc:
                cause = exc.args[1] if len(exc.args) > 1 else exc.__context__
                if attempt == 1 and _REUSE.reused and isinstance(cause, _CLOSED_BY_PEER):
                    # The server closed this kept-alive connection just as we reused it:
                    # the request never reached it, so repeat it at once on a new connection.
                    continue
                failure = exc
            except Exception as exc:
                # urllib3 raises HTTPError or OSError; anything else from that deep is still a
                # failure to get an answer, which the retry policy can deal with.
                failure = exc
            else:
                return _to_response(
                    response.status,
                    raw,
                    response.headers,
                    context,
                    (headers.get("x-agent-key", ""),),
                )
            finally:
                _REUSE.deadline = None
            # Raised here, outside the except clauses, so that the error does not carry the
            # original as its context: its text may quote a credential (see _network_error).
            raise self._network_error(failure, timeout, headers)
        raise AssertionError("unreachable")  # pragma: no cover

    def clear(self) -> None:
        """Close every pooled connection; the transport stays usable (it reconnects)."""
        self._pool.clear()

    def _host_pool(self) -> HTTPConnectionPool:
        pool = self._host
        if pool is None or pool.pool is None:  # pool.pool is None once the pool was closed
            pool = self._host = self._pool.connection_from_url(self._origin)
        return pool

    close = clear

    def _network_error(
        self, exc: BaseException, timeout: float | None, headers: Mapping[str, str]
    ) -> NetworkError:
        limit = self._settings.timeout if timeout is None else timeout
        if isinstance(exc, NewConnectionError):
            # A subclass of ConnectTimeoutError for history's sake, but a refusal is no timeout.
            # urllib3 starts its text with the connection object's repr: name the host instead.
            said = _CONNECTION_REPR.sub("", _describe(exc), count=1)
            where = self._origin.partition("://")[2]
            return NetworkError(f"could not connect to {where}: {said}", original_error=exc)
        if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError, Urllib3TimeoutError)):
            phase = (
                "connecting" if isinstance(exc, ConnectTimeoutError) else "waiting for the answer"
            )
            return InfiniumTimeoutError(
                f"timed out after {limit:g} s {phase}", timeout_duration=limit, original_error=exc
            )
        if isinstance(exc, TimeoutError):
            return InfiniumTimeoutError(
                f"timed out after {limit:g} s", timeout_duration=limit, original_error=exc
            )
        text = str(exc) or type(exc).__name__
        shown = redacted(text, [headers.get(name, "") for name in _SECRET_HEADERS])
        if shown != text:
            # The HTTP client quoted a credential (http.client does, refusing a header value):
            # neither the message nor the original error may carry it any further.
            return NetworkError(f"network error: {shown[:_MAX_MESSAGE]}")
        return NetworkError(f"network error: {text[:_MAX_MESSAGE]}", original_error=exc)


#: The connection's repr that urllib3 puts before what went wrong ("HTTPConnection(host=...,
#: port=...): Failed to establish a new connection: ..."), in some versions inside <...>.
_CONNECTION_REPR: Final = re.compile(r"^<?\w*Connection\(host=[^)]*\)(?: at 0x[0-9a-f]+)?>?: ")

#: Request headers that carry a credential.
_SECRET_HEADERS: Final = ("x-agent-key", "x-prompt-key")


def redacted(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret in it, as written or as Python would quote it, masked (the
    one rule for any text that may carry a credential: errors here, the exporter's messages)."""
    for secret in secrets:
        if not secret:
            continue
        forms = (
            secret,
            repr(secret)[1:-1],
            repr(secret.encode("utf-8", "replace"))[2:-1],
            json.dumps(secret)[1:-1],  # as a JSON body quotes it
        )
        for form in forms:
            text = text.replace(form, "***")
    return text


def _read_capped(response: Any) -> bytes:
    """An answer's body, up to :data:`MAX_ANSWER` bytes; the connection goes back to the pool
    only when it was read whole (what was left unread would be taken for the next answer)."""
    try:
        raw: bytes = response.read(MAX_ANSWER + 1)
        if len(raw) > MAX_ANSWER:
            response.close()
            return raw[:MAX_ANSWER]
        return raw
    finally:
        response.release_conn()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:_MAX_MESSAGE]


def _version_text(version: int | str) -> str:
    if isinstance(version, bool):
        raise ValidationError("version must be a positive integer or 'latest'", path="version")
    if isinstance(version, int):
        number = version
    elif version == "latest":
        return "latest"
    elif isinstance(version, str) and version.isdigit():
        number = int(version)
    else:
        raise ValidationError("version must be a positive integer or 'latest'", path="version")
    if number < 1:
        raise ValidationError("version must be a positive integer or 'latest'", path="version")
    return str(number)


def _decode(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """The JSON object of a body (or None) and a short text of the body for messages."""
    if not raw:
        return None, ""
    try:
        value = _DECODER.decode(raw)
    except msgspec.DecodeError:
        return None, raw[:_MAX_MESSAGE].decode("utf-8", "replace")
    if isinstance(value, dict):
        return value, ""
    return None, raw[:_MAX_MESSAGE].decode("utf-8", "replace")


def _server_message(data: dict[str, Any] | None, text: str) -> str:
    if data is not None:
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:_MAX_MESSAGE]
    return text.strip()


def _to_response(
    status: int,
    raw: bytes,
    headers: Mapping[str, str],
    context: str,
    secrets: Iterable[str] = (),
) -> ApiResponse:
    """Map one HTTP answer to an ApiResponse (2xx) or raise the typed error for it.

    An error's body is masked of ``secrets`` first: a proxy or debug server may quote the
    request's headers in it, and its text ends up in exceptions, logs and CLI output."""
    if not 200 <= status < 300 and raw:
        text = raw.decode("utf-8", "replace")
        masked = redacted(text, secrets)
        if masked != text:
            raw = masked.encode()
    data, text = _decode(raw)
    if 200 <= status < 300:
        message = data.get("message") if data is not None else None
        return ApiResponse(
            success=True,
            status_code=status,
            message=message if isinstance(message, str) else "Success",
            data=data,
        )
    said = _server_message(data, text)
    details: dict[str, Any] = {"response_data": data}
    if said:
        details["server_message"] = said
    suffix = f": {said}" if said else ""
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if retry_after is not None:
        details["retry_after"] = retry_after
    if status in (401, 403):
        if context == "prompt":
            hint = "check the prompt_id and prompt_key"
        else:
            hint = "check INFINIUM_AGENT_ID and INFINIUM_AGENT_SECRET"
        raise AuthenticationError(
            f"the platform refused the credentials (HTTP {status}); {hint}{suffix}",
            status_code=status,
            details=details,
        )
    if status == 429:
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        raise RateLimitError(
            f"rate limited (HTTP 429){wait}{suffix}", retry_after=retry_after, details=details
        )
    if status == 404:
        raise NotFoundError(f"not found (HTTP 404){suffix}", details=details)
    if 500 <= status < 600:
        raise ServerError(
            f"server error (HTTP {status}){suffix}", status_code=status, details=details
        )
    if status in (400, 413, 422):
        error = ValidationError(f"the platform rejected the trace (HTTP {status}){suffix}")
        error.status_code = status
        error.details = details
        raise error
    if 300 <= status < 400:
        where = headers.get("Location", "")
        raise InfiniumError(
            f"redirect (HTTP {status}) to {where[:200]!r} not followed: check INFINIUM_BASE_URL",
            status_code=status,
            details=details,
        )
    raise InfiniumError(
        f"request failed (HTTP {status}){suffix}", status_code=status, details=details
    )
