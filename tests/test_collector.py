"""The local collector: endpoints, error statuses, storage, concurrency, keep-alive and faults."""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import urllib3
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError

from infinium_logging.collector import LocalCollector, ReceivedTrace
from infinium_logging.errors import ConfigurationError
from infinium_logging.model import (
    MAX_BODY_BYTES,
    ExecutionStep,
    LlmCall,
    TaskData,
    encode_task,
    utc_now_iso,
)
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

AGENT = TEST_AGENT_ID
SECRET = TEST_AGENT_SECRET
HEADERS = {"x-agent-id": AGENT, "x-agent-key": SECRET, "Content-Type": "application/json"}
PROMPT_ID = "0b7f6a52-3c1d-4e8f-9a2b-5c6d7e8f9a0b"
PROMPT_KEY = "prompt-key-123"
PROMPTS: dict[str, Any] = {
    PROMPT_ID: {
        "key": PROMPT_KEY,
        "versions": [
            {"version": 1, "name": "greet", "content": "Hello {{name}}", "createdAt": "2026-01-01"},
            {"version": 2, "name": "greet", "content": "Hi {{name}}!", "createdAt": "2026-02-01"},
        ],
    }
}
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def task(name: str = "Summarise ticket", **fields: Any) -> TaskData:
    """A valid trace."""
    return TaskData(name, "Summarise a support ticket", utc_now_iso(), 1.5, **fields)


def body_of(name: str = "Summarise ticket", **fields: Any) -> bytes:
    """The wire body of a valid trace."""
    return encode_task(task(name, **fields))


def post(
    pool: urllib3.PoolManager,
    collector: LocalCollector,
    body: bytes,
    headers: dict[str, str] | None = None,
    agent: str = AGENT,
    **kwargs: Any,
) -> urllib3.BaseHTTPResponse:
    """POST a trace body to the collector."""
    url = f"{collector.base_url}/agents/{agent}/trace"
    return pool.request(
        "POST", url, body=body, headers=HEADERS if headers is None else headers, **kwargs
    )


def get(
    pool: urllib3.PoolManager, url: str, headers: dict[str, str] | None = None
) -> urllib3.BaseHTTPResponse:
    """GET a URL."""
    return pool.request("GET", url, headers=HEADERS if headers is None else headers)


def raw(collector: LocalCollector, data: bytes, *, shut_write: bool = False) -> tuple[int, Any]:
    """Send bytes as they are on a new connection; return the status and the JSON body."""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            content = response.read()
            assert int(response.getheader("Content-Length", "-1")) == len(content)
            return response.status, json.loads(content)
        finally:
            response.close()


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    """A closed collector (only the test credentials) that also serves PROMPTS."""
    with LocalCollector(agent_id=AGENT, agent_secret=SECRET, prompts=PROMPTS) as running:
        yield running


@pytest.fixture
def open_collector() -> Iterator[LocalCollector]:
    """A collector that accepts any credentials."""
    with LocalCollector() as running:
        yield running


# --- the trace endpoint ---------------------------------------------------------------------------


def test_accepted_trace_is_answered_and_stored(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """A valid trace gets 200 with a fresh UUID4 traceId and is stored exactly as received."""
    body = body_of("first")
    response = post(pool, collector, body)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    answer = response.json()
    assert list(answer) == ["success", "traceId", "message"]
    assert answer["success"] is True
    assert UUID4.fullmatch(answer["traceId"])
    assert answer["message"] == "Trace received"
    [stored] = collector.traces()
    assert isinstance(stored, ReceivedTrace)
    assert (stored.trace_id, stored.agent_id, stored.body) == (answer["traceId"], AGENT, body)
    assert stored.task.name == "first"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stored.received_at)
    assert (collector.accepted_count, collector.request_count) == (1, 1)


def test_traces_come_back_in_arrival_order(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """traces() lists traces in the order they were accepted."""
    names = [f"trace {i}" for i in range(5)]
    for name in names:
        assert post(pool, collector, body_of(name)).status == 200
    assert [trace.task.name for trace in collector.traces()] == names


@pytest.mark.parametrize(
    ("headers", "agent"),
    [
        ({}, AGENT),
        ({"x-agent-id": AGENT}, AGENT),
        ({"x-agent-id": AGENT, "x-agent-key": "wrong-secret"}, AGENT),
        ({"x-agent-id": str(uuid.uuid4()), "x-agent-key": SECRET}, AGENT),
        ({"x-agent-id": AGENT, "x-agent-key": ""}, AGENT),
    ],
    ids=["no-headers", "no-key", "wrong-key", "id-differs-from-path", "empty-key"],
)
def test_bad_agent_credentials_are_401(
    collector: LocalCollector, pool: urllib3.PoolManager, headers: dict[str, str], agent: str
) -> None:
    """Anything but x-agent-id equal to the path's id with the configured key is refused."""
    response = post(pool, collector, body_of(), headers=headers, agent=agent)
    assert response.status == 401
    assert response.json()["success"] is False
    assert collector.traces() == []


def test_other_agent_is_401_on_a_closed_collector(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """A closed collector refuses an agent id other than its own, even with its secret."""
    other = str(uuid.uuid4())
    headers = {"x-agent-id": other, "x-agent-key": SECRET}
    assert post(pool, collector, body_of(), headers=headers, agent=other).status == 401


def test_open_collector_accepts_any_key_but_checks_the_id(
    open_collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """Open mode takes any non-empty key, but x-agent-id must still match the path."""
    agent = str(uuid.uuid4()).upper()
    good = {"x-agent-id": agent, "x-agent-key": "anything-at-all"}
    mismatched = {"x-agent-id": str(uuid.uuid4()), "x-agent-key": "anything-at-all"}
    assert post(pool, open_collector, body_of(), headers=good, agent=agent).status == 200
    assert post(pool, open_collector, body_of(), headers=mismatched, agent=agent).status == 401
    [stored] = open_collector.traces()
    assert stored.agent_id == agent.lower()


def test_body_over_one_mib_is_413_and_the_connection_stays_usable(
    collector: LocalCollector,
) -> None:
    """A body of exactly 1 MiB is accepted, one byte more is 413, on one kept-alive connection."""
    valid = body_of()
    at_limit = valid + b" " * (MAX_BODY_BYTES - len(valid))
    with urllib3.HTTPConnectionPool("127.0.0.1", collector.port, maxsize=1, retries=False) as one:
        url = f"/api/v1/agents/{AGENT}/trace"
        too_big = one.request("POST", url, body=at_limit + b" ", headers=HEADERS)
        assert too_big.status == 413
        assert "1048576" in too_big.json()["error"]
        assert one.request("POST", url, body=at_limit, headers=HEADERS).status == 200
    assert collector.connection_count == 1
    assert [trace.body for trace in collector.traces()] == [at_limit]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b'{"name": "\xff"}', b"\xef\xbb\xbf{}"],
    ids=["malformed", "empty", "bad-utf8", "bom"],
)
def test_body_that_is_not_json_is_400(
    collector: LocalCollector, pool: urllib3.PoolManager, body: bytes
) -> None:
    """Bytes that are not UTF-8 JSON get 400 with an explanation."""
    response = post(pool, collector, body)
    assert response.status == 400
    assert "not valid JSON" in response.json()["error"]
    assert collector.traces() == []


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"name": "x", "description": "d", "current_datetime": "2026-01-01T00:00:00Z"}, "duration"),
        (
            {
                "name": "x",
                "description": "d",
                "current_datetime": "2026-01-01T00:00:00Z",
                "duration": "1",
            },
            "duration",
        ),
        (
            {
                "name": "x",
                "description": "d",
                "current_datetime": "2026-01-01T00:00:00Z",
                "duration": 1.0,
                "steps": [
                    {"step_number": 1, "action": "a", "description": "d", "duration_ms": "9"}
                ],
            },
            "steps[0].duration_ms",
        ),
        ([1, 2, 3], "list"),
    ],
    ids=["missing-field", "wrong-type", "nested-wrong-type", "array"],
)
def test_json_that_is_not_a_task_is_422_with_the_validation_message(
    collector: LocalCollector, pool: urllib3.PoolManager, payload: Any, where: str
) -> None:
    """JSON that fails the strict TaskData check gets 422 naming the problem."""
    response = post(pool, collector, msgspec.json.encode(payload))
    assert response.status == 422
    answer = response.json()
    assert answer["success"] is False
    assert where in answer["error"]
    assert collector.traces() == []


def test_wire_shape_with_sections_is_accepted(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """The official client's body (domain sections under ``sections``) decodes to a TaskData."""
    payload = {
        "name": "x",
        "description": "d",
        "current_datetime": "2026-01-01T00:00:00Z",
        "duration": 2.0,
        "sections": {"support": {"issue_type": "billing"}},
    }
    assert post(pool, collector, msgspec.json.encode(payload)).status == 200
    [stored] = collector.traces()
    assert stored.task.support is not None
    assert stored.task.support.issue_type == "billing"


VECTORS = json.loads((Path(__file__).parent / "data" / "official-client-vectors.json").read_text())


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_official_client_bodies_are_accepted_byte_for_byte(
    collector: LocalCollector, pool: urllib3.PoolManager, vector: dict[str, Any]
) -> None:
    """What the official client sends is accepted and stored byte for byte."""
    body = vector["body"].encode()
    assert post(pool, collector, body).status == 200
    [stored] = collector.traces()
    assert stored.body == body
    assert stored.task.name == vector["input"]["name"]


def test_one_log_line_per_accepted_trace(
    collector: LocalCollector, pool: urllib3.PoolManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Each accepted trace logs its name, steps, tokens and size; refused ones log nothing."""
    steps = [
        ExecutionStep(1, "llm", "a", llm_call=LlmCall("m", prompt_tokens=10, completion_tokens=5)),
        ExecutionStep(2, "llm", "b", llm_call=LlmCall("m", prompt_tokens=7, completion_tokens=3)),
    ]
    body = body_of("with steps", steps=steps)
    with caplog.at_level(logging.INFO, logger="infinium_logging.collector"):
        assert post(pool, collector, body).status == 200
        assert post(pool, collector, b"[]").status == 422
    lines = [r.getMessage() for r in caplog.records if r.name == "infinium_logging.collector"]
    assert len(lines) == 1
    assert "'with steps'" in lines[0]
    assert f"2 steps, 25 tokens, {len(body)} bytes" in lines[0]


# --- interpreted results ----------------------------------------------------------------------


def test_interpreted_result_returns_the_stored_trace_ungraded(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """A stored trace comes back as JSON with interpretedTraceResult null and a message."""
    body = body_of("read me back")
    trace_id = post(pool, collector, body).json()["traceId"]
    response = get(pool, f"{collector.base_url}/agents/{AGENT}/interpreted-result/{trace_id}")
    assert response.status == 200
    answer = response.json()
    assert list(answer) == ["traceId", "trace", "interpretedTraceResult", "message"]
    assert answer["traceId"] == trace_id
    assert answer["trace"] == json.loads(body)
    assert answer["interpretedTraceResult"] is None
    assert "no grading" in answer["message"]


def test_interpreted_result_errors(collector: LocalCollector, pool: urllib3.PoolManager) -> None:
    """Unknown trace: 404; bad credentials: 401; a trace id that is not a UUID: 400."""
    trace_id = post(pool, collector, body_of()).json()["traceId"]
    base = f"{collector.base_url}/agents/{AGENT}/interpreted-result"
    assert get(pool, f"{base}/{uuid.uuid4()}").status == 404
    assert get(pool, f"{base}/{trace_id}", headers={"x-agent-id": AGENT}).status == 401
    assert get(pool, f"{base}/not-a-uuid").status == 400


def test_interpreted_result_is_404_for_another_agents_trace(
    open_collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """An agent cannot read a trace that another agent sent."""
    trace_id = post(pool, open_collector, body_of(), headers=HEADERS).json()["traceId"]
    other = str(uuid.uuid4())
    url = f"{open_collector.base_url}/agents/{other}/interpreted-result/{trace_id}"
    assert get(pool, url, headers={"x-agent-id": other, "x-agent-key": "k"}).status == 404


# --- prompts -----------------------------------------------------------------------------------

PROMPT_HEADERS = {"x-prompt-id": PROMPT_ID, "x-prompt-key": PROMPT_KEY}


@pytest.mark.parametrize(("version", "expected"), [("latest", 2), ("1", 1), ("2", 2)])
def test_prompt_versions(
    collector: LocalCollector, pool: urllib3.PoolManager, version: str, expected: int
) -> None:
    """A prompt is served by version number, or its highest version for ``latest``."""
    url = f"{collector.base_url}/prompts/{PROMPT_ID}/v/{version}"
    response = get(pool, url, headers=PROMPT_HEADERS)
    assert response.status == 200
    content = "Hello {{name}}" if expected == 1 else "Hi {{name}}!"
    assert response.json() == {
        "promptId": PROMPT_ID,
        "name": "greet",
        "version": expected,
        "content": content,
        "createdAt": f"2026-0{expected}-01",
    }


@pytest.mark.parametrize(
    ("prompt_id", "version", "headers", "status"),
    [
        (PROMPT_ID, "3", PROMPT_HEADERS, 404),
        ("6a0e8c1e-1111-4222-8333-944455556666", "1", None, 404),
        (PROMPT_ID, "0", PROMPT_HEADERS, 400),
        (PROMPT_ID, "01", PROMPT_HEADERS, 400),
        (PROMPT_ID, "newest", PROMPT_HEADERS, 400),
        ("not-a-uuid", "1", PROMPT_HEADERS, 400),
        (PROMPT_ID, "1", {}, 401),
        (PROMPT_ID, "1", {"x-prompt-id": str(uuid.uuid4()), "x-prompt-key": PROMPT_KEY}, 401),
        (PROMPT_ID, "1", {"x-prompt-id": PROMPT_ID, "x-prompt-key": "wrong"}, 403),
    ],
    ids=[
        "unknown-version",
        "unknown-prompt",
        "version-zero",
        "leading-zero",
        "bad-version",
        "bad-id",
        "no-credentials",
        "id-mismatch",
        "wrong-key",
    ],
)
def test_prompt_errors(
    collector: LocalCollector,
    pool: urllib3.PoolManager,
    prompt_id: str,
    version: str,
    headers: dict[str, str] | None,
    status: int,
) -> None:
    """Prompt lookups fail with the status the platform uses for each problem."""
    sent = headers if headers is not None else {"x-prompt-id": prompt_id, "x-prompt-key": "k"}
    response = get(pool, f"{collector.base_url}/prompts/{prompt_id}/v/{version}", headers=sent)
    assert response.status == status
    assert response.json()["success"] is False


def test_prompts_from_a_json_file(tmp_path: Path, pool: urllib3.PoolManager) -> None:
    """``prompts`` may be the path of a JSON file."""
    path = tmp_path / "prompts.json"
    path.write_bytes(msgspec.json.encode(PROMPTS))
    with LocalCollector(prompts=path) as running:
        url = f"{running.base_url}/prompts/{PROMPT_ID}/v/1"
        assert get(pool, url, headers=PROMPT_HEADERS).json()["content"] == "Hello {{name}}"


@pytest.mark.parametrize(
    ("prompts", "words"),
    [
        (
            {"not-a-uuid": {"key": "k", "versions": [{"version": 1, "name": "n", "content": "c"}]}},
            "UUID",
        ),
        ({PROMPT_ID: {"versions": [{"version": 1, "name": "n", "content": "c"}]}}, "key"),
        (
            {PROMPT_ID: {"key": "k", "versions": [{"version": 0, "name": "n", "content": "c"}]}},
            ">= 1",
        ),
        (
            {
                PROMPT_ID: {
                    "key": "k",
                    "versions": [{"version": 1, "name": "n", "content": "c"}] * 2,
                }
            },
            "twice",
        ),
        (
            {PROMPT_ID: {"key": "k", "versions": [{"version": 1, "nom": "n", "content": "c"}]}},
            "nom",
        ),
    ],
    ids=["bad-id", "no-key", "version-zero", "duplicate-version", "unknown-field"],
)
def test_invalid_prompts_are_a_configuration_error(prompts: Any, words: str) -> None:
    """A mistake in the prompts is reported when the collector is built, saying what is wrong."""
    with pytest.raises(ConfigurationError, match=re.escape(words)):
        LocalCollector(prompts=prompts)


def test_unreadable_prompts_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A prompts file that cannot be read or parsed names the file."""
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigurationError, match=r"missing\.json"):
        LocalCollector(prompts=missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigurationError, match=r"broken\.json"):
        LocalCollector(prompts=broken)


# --- other endpoints, methods and malformed requests ---------------------------------------------


def test_healthz(collector: LocalCollector, pool: urllib3.PoolManager) -> None:
    """/healthz answers 200 with a JSON body and a length, without credentials."""
    response = pool.request("GET", f"{collector.url}/healthz")
    assert (response.status, response.json()) == (200, {"status": "ok"})
    assert response.headers["Content-Length"] == str(len(response.data))
    head = pool.request("HEAD", f"{collector.url}/healthz")
    assert (head.status, head.data) == (200, b"")


@pytest.mark.parametrize(
    "path",
    [
        "/api",
        "/api/v1",
        "/api/v1/agents",
        f"/api/v1/agents/{AGENT}",
        f"/api/v1/agents/{AGENT}/traces",
    ],
)
def test_unknown_paths_are_404_json(
    collector: LocalCollector, pool: urllib3.PoolManager, path: str
) -> None:
    """Anything that is not an endpoint is a JSON 404."""
    response = pool.request("GET", f"{collector.url}{path}", headers=HEADERS)
    assert response.status == 404
    assert response.json()["success"] is False


def test_wrong_method_is_405_with_allow(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """A known path with the wrong method is 405 and says which method to use."""
    response = pool.request("GET", f"{collector.base_url}/agents/{AGENT}/trace", headers=HEADERS)
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    delete = pool.request("DELETE", f"{collector.url}/healthz")
    assert (delete.status, delete.headers["Allow"]) == (405, "GET, HEAD")


def _request(target: str, *headers: str, body: bytes = b"", method: str = "POST") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


TRACE = f"/api/v1/agents/{AGENT}/trace"
AUTH = (f"x-agent-id: {AGENT}", f"x-agent-key: {SECRET}")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (_request(TRACE, *AUTH, "Content-Length: abc"), 400),
        (_request(TRACE, *AUTH, "Content-Length: -1"), 400),
        (_request(TRACE, *AUTH, "Content-Length: 1_0"), 400),
        (_request(TRACE, *AUTH, "Content-Length: 2", "Content-Length: 3", body=b"{}"), 400),
        (_request(TRACE, *AUTH), 411),
        (_request(TRACE, *AUTH, "Transfer-Encoding: chunked", body=b"2\r\n{}\r\n0\r\n\r\n"), 411),
        (_request(TRACE, *AUTH, "Content-Length: 99999999999"), 413),
        (_request("/api/v1/agents/not-a-uuid/trace", *AUTH, "Content-Length: 2", body=b"{}"), 400),
        (_request("/api/v1/agents/%2e%2e/trace", *AUTH, "Content-Length: 2", body=b"{}"), 400),
        (_request(f"/api/v1/agents/{AGENT}%2Ftrace/trace", *AUTH, "Content-Length: 0"), 400),
        (_request(f"/api/v1/agents/{AGENT}/../{AGENT}/trace", *AUTH, "Content-Length: 0"), 404),
        (_request("/api/v1/agents/../../../etc/passwd", method="GET"), 404),
        (_request(f"//evil.example/api/v1/agents/{AGENT}/trace", *AUTH, "Content-Length: 0"), 404),
        (_request(f"http://127.0.0.1{TRACE}", *AUTH, "Content-Length: 0"), 400),
        (_request("*", method="OPTIONS"), 400),
        (b"HELLO\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET /a b HTTP/1.1\r\n\r\n", 400),
        (_request("/healthz", "X-Long: " + "a" * 70_000, method="GET"), 431),
        (_request("/healthz", *[f"X-{i}: {i}" for i in range(120)], method="GET"), 431),
    ],
    ids=[
        "length-not-a-number",
        "negative-length",
        "length-with-underscore",
        "conflicting-lengths",
        "no-length",
        "chunked",
        "huge-length",
        "agent-not-a-uuid",
        "encoded-dot-dot",
        "encoded-slash",
        "dot-dot-segment",
        "traversal",
        "double-slash",
        "absolute-form",
        "asterisk-form",
        "garbage-request-line",
        "http-0.9",
        "space-in-target",
        "header-too-long",
        "too-many-headers",
    ],
)
def test_malformed_requests_get_a_clean_4xx_and_the_server_keeps_serving(
    collector: LocalCollector, pool: urllib3.PoolManager, data: bytes, status: int
) -> None:
    """Every malformed request is answered with a JSON 4xx; nothing is stored; others still work."""
    answered, answer = raw(collector, data)
    assert (answered, answer["success"], type(answer["error"])) == (status, False, str)
    assert collector.traces() == []
    assert post(pool, collector, body_of()).status == 200


def test_truncated_body_is_400(collector: LocalCollector, pool: urllib3.PoolManager) -> None:
    """A body shorter than its Content-Length (the client gave up sending) is 400."""
    data = _request(TRACE, *AUTH, "Content-Length: 500", body=body_of()[:40])
    status, answer = raw(collector, data, shut_write=True)
    assert status == 400
    assert "truncated body: got 40 of 500 bytes" in answer["error"]
    assert post(pool, collector, body_of()).status == 200


def test_connection_closed_mid_request_does_not_hurt_the_server(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """Clients that vanish (half a request line, half the headers, a reset) leave no trace."""
    for data in (b"POST /api/v1/ag", _request(TRACE, *AUTH)[:-10]):
        with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
            sock.sendall(data)
    assert post(pool, collector, body_of()).status == 200
    assert collector.accepted_count == 1


# --- concurrency and keep-alive ------------------------------------------------------------------


def test_concurrent_posts_are_all_stored(collector: LocalCollector) -> None:
    """16 threads posting 25 traces each at once: all 400 answered 200 and stored once."""
    threads, per_thread = 16, 25
    statuses: list[int] = []
    lock = threading.Lock()
    with urllib3.PoolManager(maxsize=threads, retries=False, timeout=10.0) as shared:

        def send(worker: int) -> None:
            for i in range(per_thread):
                status = post(shared, collector, body_of(f"w{worker}-{i}")).status
                with lock:
                    statuses.append(status)

        workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert statuses == [200] * (threads * per_thread)
    assert collector.wait_for(threads * per_thread, timeout=1.0)
    stored = collector.traces()
    expected = {f"w{w}-{i}" for w in range(threads) for i in range(per_thread)}
    assert sorted(t.task.name for t in stored) == sorted(expected)
    assert len({t.trace_id for t in stored}) == threads * per_thread
    for worker_id in range(threads):
        # Each thread's own traces arrived in the order it sent them.
        mine = [t.task.name for t in stored if t.task.name.startswith(f"w{worker_id}-")]
        assert mine == [f"w{worker_id}-{i}" for i in range(per_thread)]


def test_keep_alive_serves_many_requests_on_one_connection(collector: LocalCollector) -> None:
    """Successes and errors alike keep the connection: the server sees a single one."""
    with urllib3.HTTPConnectionPool("127.0.0.1", collector.port, maxsize=1, retries=False) as one:
        trace_id = one.request("POST", TRACE, body=body_of(), headers=HEADERS).json()["traceId"]
        statuses = [
            one.request("GET", "/healthz").status,
            one.request("POST", TRACE, body=b"[]", headers=HEADERS).status,
            one.request("POST", TRACE, body=b"{", headers=HEADERS).status,
            one.request("POST", TRACE, body=body_of(), headers={}).status,
            one.request("GET", "/nowhere").status,
            one.request(
                "GET", f"/api/v1/agents/{AGENT}/interpreted-result/{trace_id}", headers=HEADERS
            ).status,
        ]
    assert statuses == [200, 422, 400, 401, 404, 200]
    assert collector.connection_count == 1
    assert collector.request_count == 7


# --- fault injection ------------------------------------------------------------------------------


def test_fail_next_answers_with_the_status_then_recovers(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """fail_next(n, status) answers the next n trace POSTs with it and stores nothing."""
    collector.fail_next(2, 503)
    first, second, third = (post(pool, collector, body_of(f"t{i}")) for i in range(3))
    assert (first.status, second.status, third.status) == (503, 503, 200)
    assert first.json() == {"success": False, "error": "injected fault: HTTP 503"}
    assert "Retry-After" not in first.headers
    assert [t.task.name for t in collector.traces()] == ["t2"]
    assert collector.faults == {"http_503": 2}


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [
        (3, "3"),
        (0.25, "0.25"),
        (2.0, "2"),
        ("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT"),
    ],
)
def test_fail_next_sends_retry_after(
    collector: LocalCollector, pool: urllib3.PoolManager, retry_after: float | str, header: str
) -> None:
    """Retry-After is sent as whole seconds, fractional seconds, or a given string."""
    collector.fail_next(1, 429, retry_after=retry_after)
    response = post(pool, collector, body_of())
    assert (response.status, response.headers["Retry-After"]) == (429, header)
    assert collector.faults == {"http_429": 1}


def test_faults_touch_only_trace_posts(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """Other endpoints are answered normally while faults wait for the next trace POST."""
    collector.fail_next(1, 500)
    assert pool.request("GET", f"{collector.url}/healthz").status == 200
    prompt = get(pool, f"{collector.base_url}/prompts/{PROMPT_ID}/v/1", headers=PROMPT_HEADERS)
    assert prompt.status == 200
    assert post(pool, collector, body_of()).status == 500


def test_queued_faults_apply_in_order(collector: LocalCollector, pool: urllib3.PoolManager) -> None:
    """Faults queued by several calls hit the next POSTs in the order they were queued."""
    collector.fail_next(1, 500)
    collector.drop_next(1)
    collector.fail_next(1, 429, retry_after=1)
    outcomes = [_outcome(pool, collector) for _ in range(4)]
    assert outcomes == ["500", "reset", "429", "200"]
    assert collector.faults == {"http_500": 1, "drop": 1, "http_429": 1}


def _outcome(pool: urllib3.PoolManager, collector: LocalCollector) -> str:
    try:
        return str(post(pool, collector, body_of()).status)
    except ProtocolError:
        return "reset"


def test_drop_next_resets_without_answer_or_storage(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """drop_next resets the connection before storing: the client sees a connection error."""
    collector.drop_next(1)
    with pytest.raises(ProtocolError):
        post(pool, collector, body_of())
    assert collector.traces() == []
    assert collector.faults == {"drop": 1}
    assert post(pool, collector, body_of()).status == 200


def test_drop_after_accept_stores_then_resets(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """drop_after_accept_next stores the trace and resets: the client cannot know it arrived."""
    collector.drop_after_accept_next(1)
    with pytest.raises(ProtocolError):
        post(pool, collector, body_of("stored anyway"))
    assert [t.task.name for t in collector.traces()] == ["stored anyway"]
    assert (collector.accepted_count, collector.faults) == (1, {"drop_after_accept": 1})


def test_drop_after_accept_does_not_hit_refused_traces(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """A POST that is refused (422) is answered normally and the fault is used up uncounted."""
    collector.drop_after_accept_next(1)
    assert post(pool, collector, b"[]").status == 422
    assert post(pool, collector, body_of()).status == 200
    assert collector.faults == {}


def test_hang_next_keeps_the_request_unanswered(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """A hanging POST gets no answer (the client times out) and stores nothing."""
    collector.hang_next(1)
    with pytest.raises(ReadTimeoutError):
        post(pool, collector, body_of(), timeout=urllib3.Timeout(connect=2.0, read=0.2))
    assert collector.faults == {"hang": 1}
    assert collector.traces() == []
    assert post(pool, collector, body_of()).status == 200


def _in_thread(action: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def _wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_stop_releases_hanging_and_slow_requests_promptly(pool: urllib3.PoolManager) -> None:
    """stop() cuts off a hanging request and a 30 s latency at once and leaves no thread."""
    running = LocalCollector().start()
    running.hang_next(1)
    hanging, hang_errors = _in_thread(lambda: post(pool, running, body_of()))
    _wait_until(lambda: running.faults == {"hang": 1})
    running.latency = 30.0
    slow, slow_errors = _in_thread(lambda: pool.request("GET", f"{running.url}/healthz"))
    _wait_until(lambda: running.request_count == 2)
    started = time.monotonic()
    running.stop()
    assert time.monotonic() - started < 2.0
    for thread in (hanging, slow):
        thread.join(5.0)
        assert not thread.is_alive()
    assert [type(e) for e in hang_errors + slow_errors] == [ProtocolError, ProtocolError]
    assert [t.name for t in threading.enumerate() if t.name.startswith("infinium-collector")] == []


def test_latency_delays_every_answer(collector: LocalCollector, pool: urllib3.PoolManager) -> None:
    """``latency`` is added before answers; setting it back to 0 removes it."""
    collector.latency = 0.2
    started = time.monotonic()
    assert pool.request("GET", f"{collector.url}/healthz").status == 200
    assert post(pool, collector, body_of()).status == 200
    assert time.monotonic() - started >= 0.4
    collector.latency = 0
    assert collector.latency == 0.0


def _chaos_run(seed: int) -> tuple[list[str], dict[str, int], int]:
    with LocalCollector() as running, urllib3.PoolManager(retries=False) as own:
        running.chaos(
            seed, p503=0.2, p429=0.2, p_reset=0.1, p_reset_after_accept=0.1, retry_after=1
        )
        outcomes = [_outcome(own, running) for _ in range(60)]
        return outcomes, running.faults, len(running.traces())


def test_chaos_is_seeded_and_counted() -> None:
    """The same seed gives the same faults; every kind occurs and is counted; resets after
    accepting are stored, the other faults are not."""
    outcomes, faults, stored = _chaos_run(11)
    assert _chaos_run(11) == (outcomes, faults, stored)
    assert _chaos_run(12)[0] != outcomes
    assert set(outcomes) == {"200", "503", "429", "reset"}
    assert set(faults) == {"http_503", "http_429", "drop", "drop_after_accept"}
    assert outcomes.count("503") == faults["http_503"]
    assert outcomes.count("429") == faults["http_429"]
    assert outcomes.count("reset") == faults["drop"] + faults["drop_after_accept"]
    assert stored == outcomes.count("200") + faults["drop_after_accept"]


def test_queued_faults_come_before_chaos_and_chaos_can_be_turned_off(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """Queued faults are used first; ``chaos(None)`` and ``reset_faults()`` end the chaos."""
    collector.chaos(1, p503=1.0)
    collector.fail_next(1, 418)
    assert [_outcome(pool, collector) for _ in range(2)] == ["418", "503"]
    collector.chaos(None)
    assert _outcome(pool, collector) == "200"
    collector.chaos(1, p503=1.0)
    collector.latency = 1.0
    collector.reset_faults()
    assert collector.latency == 0.0
    assert _outcome(pool, collector) == "200"
    assert collector.faults == {"http_418": 1, "http_503": 1}


def test_reset_faults_forgets_queued_faults(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """reset_faults() drops what was queued; the counts of applied faults remain."""
    collector.fail_next(1, 503)
    assert _outcome(pool, collector) == "503"
    collector.fail_next(5, 503)
    collector.drop_next(5)
    collector.reset_faults()
    assert _outcome(pool, collector) == "200"
    assert collector.faults == {"http_503": 1}


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.fail_next(1, 200),
        lambda c: c.fail_next(1, 600),
        lambda c: c.fail_next(-1, 503),
        lambda c: c.fail_next(1, 429, retry_after=-1),
        lambda c: c.drop_next(1.5),
        lambda c: c.chaos(1, p503=0.7, p429=0.4),
        lambda c: c.chaos(1, p_reset=-0.1),
        lambda c: setattr(c, "latency", -1),
    ],
    ids=[
        "status-200",
        "status-600",
        "negative-n",
        "negative-retry-after",
        "float-n",
        "sum-over-1",
        "negative-p",
        "negative-latency",
    ],
)
def test_invalid_fault_settings_are_refused(call: Any) -> None:
    """Fault settings that make no sense raise ValueError instead of being half-applied."""
    running = LocalCollector()
    with pytest.raises(ValueError):
        call(running)
    assert running.faults == {}


# --- outages and lifecycle -----------------------------------------------------------------------


def test_set_down_and_up_on_the_same_port(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """set_down() refuses connections; set_up() serves again on the same port with the traces kept."""
    port = collector.port
    assert post(pool, collector, body_of("before")).status == 200
    collector.set_down()
    assert not collector.is_up
    with pytest.raises(NewConnectionError):
        post(pool, collector, body_of("during"))
    collector.set_up()
    assert (collector.is_up, collector.port) == (True, port)
    assert post(pool, collector, body_of("after")).status == 200
    assert [t.task.name for t in collector.traces()] == ["before", "after"]


def test_set_down_cuts_off_requests_in_flight(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """An outage ends hanging requests too: their clients see the connection go."""
    collector.hang_next(1)
    hanging, errors = _in_thread(lambda: post(pool, collector, body_of()))
    _wait_until(lambda: collector.faults == {"hang": 1})
    collector.set_down()
    hanging.join(5.0)
    assert [type(e) for e in errors] == [ProtocolError]
    collector.set_up()
    assert post(pool, collector, body_of()).status == 200


def test_stop_and_start_again_keep_port_and_memory_traces(pool: urllib3.PoolManager) -> None:
    """A stopped collector starts again on its port, with its in-memory traces, and traces()
    works while it is stopped."""
    running = LocalCollector(agent_id=AGENT, agent_secret=SECRET).start()
    port = running.port
    assert post(pool, running, body_of("one")).status == 200
    running.stop()
    running.stop()
    assert [t.task.name for t in running.traces()] == ["one"]
    with pytest.raises(NewConnectionError):
        post(pool, running, body_of())
    with running:
        assert running.port == port
        assert post(pool, running, body_of("two")).status == 200
        assert [t.task.name for t in running.traces()] == ["one", "two"]
    assert (running.accepted_count, running.is_up) == (2, False)


def test_stop_leaves_no_threads_or_open_connections(pool: urllib3.PoolManager) -> None:
    """After stop() no collector thread is alive, even with idle keep-alive connections open."""
    with LocalCollector() as running:
        for _ in range(3):
            assert pool.request("GET", f"{running.url}/healthz").status == 200
        with urllib3.PoolManager(retries=False) as other:
            assert other.request("GET", f"{running.url}/healthz").status == 200
            running.stop()
    names = [t.name for t in threading.enumerate() if t.name.startswith("infinium-collector")]
    assert names == []


def test_sqlite_file_holds_every_accepted_trace(tmp_path: Path, pool: urllib3.PoolManager) -> None:
    """With a file, each trace is a row readable by another connection while the server runs,
    and still there for the next collector on that file."""
    db = tmp_path / "traces.sqlite3"
    with LocalCollector(db=db) as running:
        ids = [post(pool, running, body_of(f"n{i}")).json()["traceId"] for i in range(2)]
        with sqlite3.connect(db) as reader:
            rows = reader.execute(
                "SELECT trace_id, agent_id, name, json_extract(body, '$.name') FROM traces ORDER BY seq"
            ).fetchall()
        reader.close()
    assert rows == [(ids[0], AGENT, "n0", "n0"), (ids[1], AGENT, "n1", "n1")]
    assert [t.trace_id for t in running.traces()] == ids
    with LocalCollector(db=db) as again:
        assert [t.trace_id for t in again.traces()] == ids
        assert again.accepted_count == 0


def test_wait_for(collector: LocalCollector, pool: urllib3.PoolManager) -> None:
    """wait_for(n) is True once n traces were accepted and False when the timeout passes first."""
    assert collector.wait_for(1, timeout=0.05) is False
    sender, errors = _in_thread(lambda: post(pool, collector, body_of()))
    assert collector.wait_for(1, timeout=5.0) is True
    sender.join()
    assert errors == []


@pytest.mark.parametrize(
    ("kwargs", "variable"),
    [
        ({"agent_id": "agent-1"}, "agent_id"),
        ({"agent_secret": ""}, "agent_secret"),
        ({"port": 70_000}, "port"),
        ({"port": -1}, "port"),
    ],
)
def test_invalid_construction_is_a_configuration_error(
    kwargs: dict[str, Any], variable: str
) -> None:
    """Bad arguments are refused up front, naming the argument."""
    with pytest.raises(ConfigurationError) as caught:
        LocalCollector(**kwargs)
    assert caught.value.variable == variable


def test_busy_port_is_an_os_error() -> None:
    """Starting on a port that is taken raises OSError and leaves nothing open."""
    with LocalCollector() as first:
        second = LocalCollector(port=first.port)
        with pytest.raises(OSError):
            second.start()
        assert not second.is_up


def test_repr_shows_state_but_never_the_secret() -> None:
    """The repr says where and how the collector runs, without the secret."""
    running = LocalCollector(agent_id=AGENT, agent_secret="very-secret-value")
    assert "very-secret-value" not in repr(running)
    with running:
        assert f":{running.port} up" in repr(running)
        assert "closed" in repr(running)


def test_base_url_needs_a_port() -> None:
    """Before the first start with port 0 there is no URL to give out."""
    with pytest.raises(RuntimeError):
        _ = LocalCollector().base_url
    assert LocalCollector(port=8421).base_url == "http://127.0.0.1:8421/api/v1"


def test_ipv6_host_is_bracketed_in_urls() -> None:
    """An IPv6 host appears in brackets in the URLs."""
    assert LocalCollector(port=8421, host="::1").base_url == "http://[::1]:8421/api/v1"


# --- the pytest fixture ------------------------------------------------------------------------


def test_fixture_yields_a_running_collector_with_test_credentials(
    infinium_collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """infinium_collector is up and accepts exactly TEST_AGENT_ID with TEST_AGENT_SECRET."""
    assert infinium_collector.is_up
    assert post(pool, infinium_collector, body_of()).status == 200
    wrong = {"x-agent-id": AGENT, "x-agent-key": "not-the-test-secret"}
    assert post(pool, infinium_collector, body_of(), headers=wrong).status == 401
    assert len(infinium_collector.traces()) == 1
