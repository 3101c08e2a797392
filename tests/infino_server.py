"""A local Infino-compatible endpoint: checks every signature with botocore, stores bulk records
by ``_id``, answers SQL simply, and fails on purpose when told to."""

from __future__ import annotations

import collections
import hashlib
import http.server
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ACCESS_KEY = "IAKTEST0000000000000"
SECRET_KEY = "test-secret-DO-NOT-LOG-0123456789"

#: A record for which this returns a text is refused for good with that error type.
Refuser = Callable[[dict[str, Any]], "str | None"]


def botocore_signature(
    method: str, url: str, headers: dict[str, str], body: bytes, secret: str, access: str
) -> str:
    """The signature botocore's SigV4Auth (service ``es``, region ``us-east-1``) computes for
    the request, at the request's own ``X-Amz-Date``."""
    signed = {
        "content-type": headers.get("content-type", ""),
        "host": headers.get("host", ""),
        "x-amz-content-sha256": headers.get("x-amz-content-sha256", ""),
        "x-amz-date": headers.get("x-amz-date", ""),
    }
    request = AWSRequest(method=method, url=url, data=body, headers=signed)
    request.context["timestamp"] = signed["x-amz-date"]
    auth = SigV4Auth(Credentials(access, secret), "es", "us-east-1")
    canonical = auth.canonical_request(request)
    return str(auth.signature(auth.string_to_sign(request, canonical), request))


class InfinoServer:
    """The endpoint on 127.0.0.1: ``url`` to point a client at, state to assert on."""

    def __init__(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.lock = threading.Lock()
        #: dataset -> {_id: document}
        self.datasets: dict[str, dict[str, dict[str, Any]]] = {}
        #: How many times each (dataset, _id) was written (retries write again).
        self.writes: collections.Counter[tuple[str, str]] = collections.Counter()
        #: Every request: (method, path, status answered).
        self.requests: list[tuple[str, str, int]] = []
        self.bulk_sizes: list[int] = []
        self.bad_signatures = 0
        #: Statuses to answer the next requests with (then normal service resumes).
        self.fail_next: collections.deque[tuple[int, dict[str, str]]] = collections.deque()
        #: While True every request gets 503.
        self.down = False
        #: _id -> statuses its next bulk items get (429 then 201, say).
        self.item_statuses: dict[str, collections.deque[int]] = {}
        self.refuse: Refuser | None = None
        self.sql_queries: list[str] = []
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The endpoint's root URL."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> InfinoServer:
        """Serve on a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def ids(self, dataset: str) -> set[str]:
        """The ``_id`` of every record stored in ``dataset``."""
        with self.lock:
            return set(self.datasets.get(dataset, {}))

    def documents(self, dataset: str) -> list[dict[str, Any]]:
        """Every record stored in ``dataset``."""
        with self.lock:
            return list(self.datasets.get(dataset, {}).values())

    # -- answering -------------------------------------------------------------------------

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        """Status, extra headers and JSON answer for one request."""
        if headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
            return 400, {}, _error("bad_request", "X-Amz-Content-Sha256 is not the body's hash")
        if not self._signature_ok(method, path, headers, body):
            with self.lock:
                self.bad_signatures += 1
            return 403, {}, _error("security_exception", "the signature does not match")
        with self.lock:
            if self.down:
                return 503, {}, _error("unavailable", "down on purpose")
            if self.fail_next:
                status, extra = self.fail_next.popleft()
                return status, extra, _error("failing", "failing on purpose")
        bare = path.partition("?")[0]
        if method == "GET" and bare == "/":
            return 200, {}, {"name": "infino-test", "version": {"number": "0.0"}}
        if bare == "/sql" and method in ("GET", "POST"):
            return 200, {}, self._sql(json.loads(body or b"{}").get("query", ""))
        match = re.fullmatch(r"/([a-z0-9][a-z0-9\-.]*)(/json)?", bare)
        if match is None:
            return 404, {}, _error("not_found", f"no route {method} {bare}")
        dataset = match.group(1)
        if method == "PUT" and match.group(2) is None:
            with self.lock:
                if dataset in self.datasets:
                    return 409, {}, _error("resource_already_exists_exception", dataset)
                self.datasets[dataset] = {}
            return 200, {}, {"acknowledged": True, "dataset": dataset}
        if method == "POST" and match.group(2):
            if headers.get("content-type") != "application/x-ndjson":
                return 400, {}, _error("bad_request", "expected application/x-ndjson")
            return 200, {}, self._bulk(dataset, body)
        return 405, {}, _error("method_not_allowed", method)

    def _signature_ok(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bool:
        expected_prefix = f"AWS4-HMAC-SHA256 Credential={self.access_key}/"
        authorization = headers.get("authorization", "")
        if not authorization.startswith(expected_prefix):
            return False
        if "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date," not in authorization:
            return False
        given = authorization.rpartition("Signature=")[2]
        url = f"http://{headers.get('host', '')}{path}"
        expected = botocore_signature(method, url, headers, body, self.secret_key, self.access_key)
        return given == expected

    def _bulk(self, dataset: str, body: bytes) -> dict[str, Any]:
        lines = body.decode("utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        items = []
        errors = False
        with self.lock:
            self.bulk_sizes.append(len(lines) // 2)
            stored = self.datasets.setdefault(dataset, {})
            for action_line, doc_line in zip(lines[::2], lines[1::2], strict=True):
                doc_id = json.loads(action_line)["index"]["_id"]
                document = json.loads(doc_line)
                planned = self.item_statuses.get(doc_id)
                status = planned.popleft() if planned else 201
                refused = self.refuse(document) if self.refuse is not None else None
                if refused is not None:
                    status = 400
                if 200 <= status < 300:
                    stored[doc_id] = document
                    self.writes[dataset, doc_id] += 1
                    items.append({"index": {"_id": doc_id, "status": status}})
                else:
                    errors = True
                    kind = refused or ("es_rejected_execution_exception" if status == 429 else "x")
                    error = {"type": kind, "reason": "refused on purpose"}
                    items.append({"index": {"_id": doc_id, "status": status, "error": error}})
        return {"took": 1, "errors": errors, "items": items}

    def _sql(self, query: str) -> dict[str, Any]:
        """Only ``SELECT * FROM "<dataset>"``: every stored record, columns in first-seen order."""
        with self.lock:
            self.sql_queries.append(query)
            match = re.search(r'FROM\s+"?([a-z0-9][a-z0-9\-.]*)"?', query, re.IGNORECASE)
            records = list(self.datasets.get(match.group(1), {}).values()) if match else []
        names: dict[str, None] = {}
        for record in records:
            names.update(dict.fromkeys(record))
        columns = [{"name": name, "type": "keyword"} for name in names]
        rows = [[record.get(name) for name in names] for record in records]
        return {"columns": columns, "rows": rows, "size": len(rows), "total": len(rows)}


def _error(kind: str, reason: str) -> dict[str, Any]:
    return {"error": {"type": kind, "reason": reason}}


def _handler_for(server: InfinoServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, extra, data = server.answer(self.command, self.path, headers, body)
            with server.lock:
                server.requests.append((self.command, self.path, status))
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def running() -> Iterator[InfinoServer]:
    """A started server, stopped afterwards (for a fixture)."""
    server = InfinoServer().start()
    try:
        yield server
    finally:
        server.stop()


def fast_settings(server: InfinoServer, **overrides: Any) -> dict[str, Any]:
    """Infino settings aimed at ``server`` with fast retries, no throttle to speak of and a
    short linger (``overrides`` on top)."""
    values: dict[str, Any] = {
        "endpoint": server.url,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "linger": 0.05,
        "retry_backoff_base": 0.01,
        "retry_backoff_max": 0.05,
        "requests_per_second": 1000.0,
        "burst_size": 1000,
    }
    values.update(overrides)
    return values
