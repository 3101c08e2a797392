"""The Infino client: signed requests (bulk upload, SQL, dataset creation) over urllib3."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec
import urllib3
from urllib3.util.retry import Retry

from .errors import (
    AuthenticationError,
    InfiniumError,
    InfiniumTimeoutError,
    NetworkError,
    RateLimitError,
    ServerError,
)
from .infino_settings import InfinoSettings
from .retry import parse_retry_after
from .sigv4 import sign
from .transport import redacted

__all__ = ["InfinoClient"]

_NO_RETRIES: Final = Retry(total=False, redirect=False)
_DECODER: Final = msgspec.json.Decoder()
_MAX_MESSAGE: Final = 300
NDJSON: Final = "application/x-ndjson"
JSON: Final = "application/json"


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class InfinoClient:
    """Signed requests to one Infino endpoint over a pooled urllib3 client.

    Every request is signed afresh (an attempt minutes after the first needs a
    new ``X-Amz-Date``).  A 2xx answer returns its body; any other answer, or
    none, raises one of the errors of :mod:`infinium_logging.errors`, with the
    secret key masked out of its text.  Thread-safe.
    """

    def __init__(
        self,
        settings: InfinoSettings,
        *,
        clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._host = settings.host
        self._timeout = urllib3.Timeout(connect=settings.timeout, read=settings.timeout)
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=2,
            retries=_NO_RETRIES,
            timeout=self._timeout,
            cert_reqs="CERT_REQUIRED" if settings.verify_ssl else "CERT_NONE",
        )

    def __repr__(self) -> str:
        return f"InfinoClient(endpoint={self._settings.endpoint!r})"

    @property
    def settings(self) -> InfinoSettings:
        """The settings this client was built with."""
        return self._settings

    def bulk(self, dataset: str, body: bytes, *, timeout: float | None = None) -> bytes:
        """POST an NDJSON bulk body to ``dataset``; the answer's body (read it with
        :func:`~infinium_logging.infino_rows.read_bulk_answer`)."""
        return self.request("POST", f"/{dataset}/json", body, NDJSON, timeout=timeout)

    def sql(self, query: str) -> dict[str, Any]:
        """Run an SQL query; the answer (``columns``, ``rows``...) as a dict."""
        body = msgspec.json.encode({"query": query})
        data = _DECODER.decode(self.request("GET", "/sql", body, JSON) or b"{}")
        if not isinstance(data, dict):
            raise InfiniumError("Infino answered the query with something that is not an object")
        return data

    def create_dataset(self, dataset: str) -> bool:
        """Create ``dataset``: True when created, False when it already existed (409)."""
        try:
            self.request("PUT", f"/{dataset}", b"", JSON)
        except InfiniumError as exc:
            if exc.status_code == 409:
                return False
            raise
        return True

    def request(
        self,
        method: str,
        path: str,
        body: bytes,
        content_type: str,
        *,
        timeout: float | None = None,
    ) -> bytes:
        """Sign and make one request; the body of a 2xx answer, or a typed error."""
        settings = self._settings
        headers = sign(
            method,
            self._host,
            path,
            body,
            content_type=content_type,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            when=self._clock(),
        )
        limit = self._timeout if timeout is None else urllib3.Timeout(connect=timeout, read=timeout)
        try:
            response = self._pool.request(
                method,
                settings.endpoint + path,
                body=body,
                headers=headers,
                timeout=limit,
                retries=_NO_RETRIES,
                redirect=False,
            )
        except urllib3.exceptions.TimeoutError:
            raise InfiniumTimeoutError(
                f"Infino did not answer within {limit.read_timeout or settings.timeout:g} s"
            ) from None
        except Exception as exc:
            text = redacted(str(exc), (settings.secret_key,))[:_MAX_MESSAGE]
            raise NetworkError(f"could not reach Infino at {self._host}: {text}") from None
        if 200 <= response.status < 300:
            return bytes(response.data)
        raise _error_of(response.status, response.data, response.headers, settings)

    def close(self) -> None:
        """Close pooled connections (the client stays usable)."""
        self._pool.clear()


def _error_of(
    status: int, raw: bytes, headers: Mapping[str, str], settings: InfinoSettings
) -> InfiniumError:
    text = redacted(raw.decode("utf-8", "replace"), (settings.secret_key,))
    said = _message(text)
    suffix = f": {said}" if said else ""
    details: dict[str, Any] = {"server_message": said} if said else {}
    if status in (401, 403):
        return AuthenticationError(
            f"Infino refused the request (HTTP {status}); check INFINIUM_INFINO_ACCESS_KEY and "
            f"INFINIUM_INFINO_SECRET_KEY{suffix}",
            status_code=status,
            details=details,
        )
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return RateLimitError(
            f"Infino rate limited the request (HTTP 429){suffix}",
            retry_after=retry_after,
            details=details,
        )
    if 500 <= status < 600:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if retry_after is not None:
            details["retry_after"] = retry_after
        return ServerError(f"Infino server error (HTTP {status}){suffix}", status, details)
    return InfiniumError(f"Infino refused the request (HTTP {status}){suffix}", status, details)


def _message(text: str) -> str:
    """The ``error.reason`` of an Infino error body, else its text, shortened."""
    try:
        data = _DECODER.decode(text)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            reason = error.get("reason") or error.get("type")
            if isinstance(reason, str):
                return reason[:_MAX_MESSAGE]
        if isinstance(error, str):
            return error[:_MAX_MESSAGE]
    return text.strip()[:_MAX_MESSAGE]
