"""The local collector's trace viewer: its page, assets and read-only JSON, apart from the API."""

from __future__ import annotations

import ipaddress
import urllib.parse
from importlib import resources
from typing import Final, NamedTuple

import msgspec

from ._collector_store import ListedTrace, TraceQuery, TraceStore, is_uuid

__all__ = ["PAGE_PREFIX", "ViewerAnswer", "is_loopback", "respond"]

#: Everything of the viewer but its page (``/``) lives below this path; the client's API is
#: below ``/api/v1`` and shares nothing with it.
PAGE_PREFIX: Final = "/viewer/"
_PAGE_SIZE: Final = 50
_MAX_PAGE_SIZE: Final = 200
_MAX_TEXT: Final = 200

#: Scripts, styles and data only from this server; no inline script or style, no frames, no
#: forms, no plugins; and DOM sinks that parse markup (``innerHTML``) refuse strings outright,
#: so trace text can only ever reach the page as text.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
_SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)
_ASSETS: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/viewer/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
    "/viewer/viewer.css": ("viewer.css", "text/css; charset=utf-8"),
    "/viewer/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_JSON: Final = msgspec.json.Encoder()


class ViewerAnswer(NamedTuple):
    """What to send back for one viewer request."""

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = _SECURITY_HEADERS


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_viewer_path(path: str) -> bool:
    """Whether a request path (without its query) is the viewer's rather than the API's."""
    return path == "/" or path.startswith(PAGE_PREFIX)


def respond(
    method: str, target: str, host_header: str, store: TraceStore | None, *, loopback: bool
) -> ViewerAnswer:
    """Answer a request for a viewer path (see :func:`is_viewer_path`); never writes."""
    path, _, query = target.partition("?")
    if method not in ("GET", "HEAD"):
        return _error(405, "the viewer is read-only: use GET")
    if loopback and _host_name(host_header) not in _LOOPBACK_NAMES:
        # A web page elsewhere can point a name of its own at 127.0.0.1 (DNS rebinding) and
        # read same-origin what this server answers; a loopback server answers only to
        # loopback names.
        return _error(403, "the viewer answers only on a loopback name (127.0.0.1, localhost)")
    asset = _ASSETS.get(path)
    if asset is not None:
        return ViewerAnswer(200, _asset(asset[0]), asset[1])
    if store is None:
        return _error(503, "the collector is stopped")
    if path == "/viewer/api/traces":
        return _json(_trace_page(store, urllib.parse.parse_qs(query)))
    if path == "/viewer/api/newest":
        return _json({"newest": store.newest()})
    if path.startswith("/viewer/api/traces/"):
        trace_id = path.removeprefix("/viewer/api/traces/")
        found = store.find(trace_id.lower()) if is_uuid(trace_id) else None
        if found is None:
            return _error(404, "no such trace")
        listed, body = found
        return _json({**_listed(listed), "trace": msgspec.Raw(body), "raw": body.decode()})
    return _error(404, "no such page")


def _trace_page(store: TraceStore, params: dict[str, list[str]]) -> dict[str, object]:
    def one(name: str) -> str:
        return params.get(name, [""])[0][:_MAX_TEXT]

    def seq(name: str) -> int | None:
        value = one(name)
        return int(value) if value.isdigit() else None

    size = seq("limit") or _PAGE_SIZE
    query = TraceQuery(
        text=one("q").strip(),
        agent_id=one("agent").strip().lower(),
        errors_only=one("errors") in ("1", "true", "on"),
        before=seq("before"),
        after=seq("after"),
        limit=min(size, _MAX_PAGE_SIZE),
    )
    traces, total = store.page(query)
    return {
        "traces": [_listed(item) for item in traces],
        "total": total,
        "newest": store.newest(),
        "agents": store.agents(),
    }


def _listed(item: ListedTrace) -> dict[str, object]:
    return item._asdict()


def _host_name(header: str) -> str:
    host = header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _asset(name: str) -> bytes:
    return resources.files("infinium_logging").joinpath(f"_viewer_assets/{name}").read_bytes()


def _json(value: object) -> ViewerAnswer:
    return ViewerAnswer(200, _JSON.encode(value), "application/json")


def _error(status: int, message: str) -> ViewerAnswer:
    return ViewerAnswer(status, _JSON.encode({"error": message}), "application/json")
