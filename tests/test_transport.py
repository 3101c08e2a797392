"""Tests of the transport against real local servers: answers, typed errors, pooling, redirects."""

from __future__ import annotations

import email.utils
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from infinium_logging.collector import LocalCollector
from infinium_logging.errors import (
    AuthenticationError,
    InfiniumError,
    InfiniumTimeoutError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from infinium_logging.model import TaskData, encode_task
from infinium_logging.retry import classify
from infinium_logging.settings import Settings
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET
from infinium_logging.transport import Transport

BODY = b'{"name":"t","description":"d","current_datetime":"2026-01-01T00:00:00Z","duration":1.0}'
PROMPT_ID = "0d9c1b7a-3e2f-4a5b-8c6d-7e8f9a0b1c2d"


def _settings(base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "agent_id": TEST_AGENT_ID,
        "agent_secret": TEST_AGENT_SECRET,
        "base_url": base_url,
        "timeout": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def transport(infinium_collector: LocalCollector) -> Iterator[Transport]:
    """A transport pointed at the test collector, closed after the test."""
    client = Transport(_settings(infinium_collector.base_url))
    yield client
    client.close()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status, headers and body the test set on the server."""

    protocol_version = "HTTP/1.1"
    server: _RecordingServer

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.seen.append((self.command, self.path, dict(self.headers.items()), body))
        status, headers, answer = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = _any

    def log_message(self, format: str, *args: Any) -> None:
        return


class _RecordingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.answer: tuple[int, dict[str, str], bytes] = (200, {}, b'{"traceId":"x"}')

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/v1"


@pytest.fixture
def recorder() -> Iterator[_RecordingServer]:
    """A plain HTTP server that records requests and answers what the test tells it to."""
    server = _RecordingServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_trace_is_posted_with_the_documented_headers(recorder: _RecordingServer) -> None:
    """POST {base}/agents/{id}/trace with x-agent-id, x-agent-key, User-Agent, JSON type."""
    client = Transport(_settings(recorder.base_url, user_agent="ua-test/1"))
    try:
        response = client.post_trace(BODY)
    finally:
        client.close()
    method, path, headers, body = recorder.seen[0]
    assert (method, path, body) == ("POST", f"/api/v1/agents/{TEST_AGENT_ID}/trace", BODY)
    assert headers["x-agent-id"] == TEST_AGENT_ID
    assert headers["x-agent-key"] == TEST_AGENT_SECRET
    assert headers["User-Agent"] == "ua-test/1"
    assert headers["Content-Type"] == "application/json"
    assert response.success
    assert response.trace_id == "x"


def test_success_keeps_the_trace_id(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """A 200 becomes ApiResponse(success=True) whose data carries the stored trace's id."""
    response = transport.post_trace(BODY)
    assert response.success
    assert response.status_code == 200
    stored = infinium_collector.traces()
    assert [t.trace_id for t in stored] == [response.trace_id]


def test_keep_alive_reuses_one_connection(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """Sequential requests travel over a single kept-alive connection."""
    for _ in range(5):
        transport.post_trace(BODY)
    assert infinium_collector.connection_count == 1


def test_pool_is_sized_by_workers_and_never_retries_by_itself() -> None:
    """One PoolManager: maxsize = workers, urllib3 retries and redirects off, TLS verified."""
    client = Transport(_settings("https://example.invalid/api/v1", workers=3))
    pool = client._pool
    assert pool.connection_pool_kw["maxsize"] == 3
    retries = pool.connection_pool_kw["retries"]
    assert (retries.total, retries.redirect) == (False, 0)
    assert pool.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
    unverified = Transport(_settings("https://example.invalid/api/v1", verify_ssl=False))
    assert unverified._pool.connection_pool_kw["cert_reqs"] == "CERT_NONE"
    assert TEST_AGENT_SECRET not in repr(client)


def test_refused_credentials_name_the_variables_and_hide_the_secret(
    infinium_collector: LocalCollector,
) -> None:
    """A 401 is an AuthenticationError telling which variables to check, without the secret."""
    client = Transport(_settings(infinium_collector.base_url, agent_secret="wrong-secret-123"))
    try:
        with pytest.raises(AuthenticationError) as caught:
            client.post_trace(BODY)
    finally:
        client.close()
    assert caught.value.status_code == 401
    assert "INFINIUM_AGENT_ID" in str(caught.value)
    assert "INFINIUM_AGENT_SECRET" in str(caught.value)
    assert "wrong-secret-123" not in str(caught.value)
    assert classify(caught.value) == "auth"


@pytest.mark.parametrize("status", [400, 401, 404, 500])
def test_an_error_body_quoting_the_secret_is_masked(
    status: int, recorder: _RecordingServer
) -> None:
    """A proxy or debug server that quotes the request's headers in its error body: the
    exception's text and details never carry the secret (as written or JSON-escaped)."""
    secret = 'se"cret\\-quoted-123'
    quoted = json.dumps({"message": f"bad request; headers were {{'x-agent-key': '{secret}'}}"})
    recorder.answer = (status, {"Content-Type": "application/json"}, quoted.encode())
    client = Transport(_settings(recorder.base_url, agent_secret=secret))
    try:
        with pytest.raises(InfiniumError) as caught:
            client.post_trace(BODY)
    finally:
        client.close()
    shown = f"{caught.value} {caught.value!r} {caught.value.details}"
    assert "bad request; headers were" in shown and "***" in shown
    for form in (secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]):
        assert form not in shown


@pytest.mark.parametrize("status", [400, 413, 422])
def test_rejections_carry_the_server_message(
    status: int, transport: Transport, infinium_collector: LocalCollector
) -> None:
    """400/413/422 are ValidationErrors with the status and the server's message; never retried."""
    infinium_collector.fail_next(1, status)
    with pytest.raises(ValidationError) as caught:
        transport.post_trace(BODY)
    assert caught.value.status_code == status
    assert f"injected fault: HTTP {status}" in str(caught.value)
    assert caught.value.details["server_message"] == f"injected fault: HTTP {status}"
    assert classify(caught.value) == "reject"


def test_a_real_validation_failure_is_a_422(transport: Transport) -> None:
    """The collector's own strict check answers 422, and its message reaches the error."""
    with pytest.raises(ValidationError) as caught:
        transport.post_trace(b'{"name": 5}')
    assert caught.value.status_code == 422
    assert "name" in caught.value.message


def test_rate_limit_carries_retry_after(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """A 429 is a RateLimitError with the Retry-After in seconds."""
    infinium_collector.fail_next(1, 429, retry_after=2)
    with pytest.raises(RateLimitError) as caught:
        transport.post_trace(BODY)
    assert caught.value.retry_after == 2.0
    assert classify(caught.value) == "retry"


def test_rate_limit_with_an_http_date(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """Retry-After as an HTTP date becomes the seconds until then."""
    infinium_collector.fail_next(1, 429, retry_after=email.utils.formatdate(time.time() + 20))
    with pytest.raises(RateLimitError) as caught:
        transport.post_trace(BODY)
    assert caught.value.retry_after is not None
    assert 15.0 <= caught.value.retry_after <= 21.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors(
    status: int, transport: Transport, infinium_collector: LocalCollector
) -> None:
    """5xx are ServerErrors with their status; a Retry-After travels in details."""
    infinium_collector.fail_next(1, status, retry_after=1)
    with pytest.raises(ServerError) as caught:
        transport.post_trace(BODY)
    assert caught.value.status_code == status
    assert caught.value.details["retry_after"] == 1.0
    assert classify(caught.value) == "retry"


def test_request_timeout_408_is_retryable(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """A 408 is an InfiniumError with status 408 that the policy retries."""
    infinium_collector.fail_next(1, 408)
    with pytest.raises(InfiniumError) as caught:
        transport.post_trace(BODY)
    assert caught.value.status_code == 408
    assert classify(caught.value) == "retry"


def test_connection_refused_is_a_network_error_not_a_timeout() -> None:
    """Nobody listening: NetworkError (retryable), not InfiniumTimeoutError."""
    with LocalCollector() as collector:
        url = collector.base_url
    client = Transport(_settings(url, timeout=2.0))
    try:
        with pytest.raises(NetworkError) as caught:
            client.post_trace(BODY)
    finally:
        client.close()
    assert not isinstance(caught.value, InfiniumTimeoutError)
    where = url.split("/")[2]
    assert str(caught.value).startswith(f"could not connect to {where}: ")
    assert "Connection(" not in str(caught.value)  # not urllib3's connection repr


def test_a_header_the_http_client_refuses_is_reported_without_its_value(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """http.client quotes a header value it refuses; when that value is a credential, neither
    the error's message nor an original error kept with it may carry it."""
    headers = {"x-agent-id": TEST_AGENT_ID, "x-agent-key": "first-part\nhidden-part"}
    with pytest.raises(NetworkError) as caught:
        transport.request("GET", f"{infinium_collector.base_url}/anything", headers=headers)
    assert "hidden-part" not in str(caught.value) and "first-part" not in str(caught.value)
    assert "***" in str(caught.value)
    assert caught.value.original_error is None
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_a_prompt_key_that_cannot_travel_in_a_header_is_refused_unseen(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """A prompt key with a line break is a ValidationError that does not show the key."""
    before = infinium_collector.request_count
    with pytest.raises(ValidationError) as caught:
        transport.get_prompt(PROMPT_ID, "prompt-key\nrest")
    assert "rest" not in str(caught.value) and "prompt-key" not in str(caught.value).split(":")[-1]
    assert infinium_collector.request_count == before


def test_a_hanging_server_times_out(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """No answer within the request's timeout: InfiniumTimeoutError with that timeout."""
    infinium_collector.hang_next(1)
    started = time.monotonic()
    with pytest.raises(InfiniumTimeoutError) as caught:
        transport.post_trace(BODY, timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert caught.value.timeout_duration == 0.3
    assert classify(caught.value) == "retry"


def test_a_pooled_connection_closed_by_the_server_is_repeated_at_once(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """A reset on a reused connection is repeated once on a new one, without an error."""
    transport.post_trace(BODY)  # opens the connection that the next request reuses
    infinium_collector.drop_next(1)
    response = transport.post_trace(BODY)
    assert response.success
    assert infinium_collector.faults["drop"] == 1
    assert infinium_collector.accepted_count == 2
    assert infinium_collector.connection_count == 2


def test_a_reset_on_a_fresh_connection_is_an_error(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """The immediate repeat is only for reused connections: a fresh one that fails is an error."""
    infinium_collector.drop_next(1)
    with pytest.raises(NetworkError):
        transport.post_trace(BODY)
    assert infinium_collector.accepted_count == 0
    assert infinium_collector.faults["drop"] == 1


def test_only_one_immediate_repeat(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """Two resets in a row: the repeat fails too, and that is an error for the retry policy."""
    transport.post_trace(BODY)
    infinium_collector.drop_next(2)
    with pytest.raises(NetworkError):
        transport.post_trace(BODY)
    assert infinium_collector.faults["drop"] == 2


def test_redirects_are_not_followed(recorder: _RecordingServer) -> None:
    """A 3xx is an error naming INFINIUM_BASE_URL; the credentials never go to the Location."""
    recorder.answer = (307, {"Location": "http://127.0.0.1:9/steal"}, b"")
    client = Transport(_settings(recorder.base_url))
    try:
        with pytest.raises(InfiniumError) as caught:
            client.post_trace(BODY)
    finally:
        client.close()
    assert caught.value.status_code == 307
    assert "INFINIUM_BASE_URL" in str(caught.value)
    assert len(recorder.seen) == 1
    assert classify(caught.value) == "reject"


def test_a_body_that_is_not_json_still_gives_a_message(recorder: _RecordingServer) -> None:
    """A proxy's HTML error page becomes the error text (cut short), not a decoding crash."""
    recorder.answer = (502, {"Content-Type": "text/html"}, b"<html>bad gateway</html>")
    client = Transport(_settings(recorder.base_url))
    try:
        with pytest.raises(ServerError) as caught:
            client.post_trace(BODY)
    finally:
        client.close()
    assert "bad gateway" in str(caught.value)


def test_interpreted_result_of_a_stored_trace(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """GET interpreted-result returns the stored trace; an unknown one is NotFoundError."""
    trace_id = transport.post_trace(BODY).trace_id
    assert trace_id is not None
    result = transport.get_interpreted_result(trace_id)
    assert result.success
    assert result.data is not None
    assert result.data["traceId"] == trace_id
    assert result.data["interpretedTraceResult"] is None
    with pytest.raises(NotFoundError):
        transport.get_interpreted_result("00000000-0000-4000-8000-000000000000")


def test_ids_that_are_not_uuids_never_reach_a_url(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """Path injection is refused before any request is made."""
    before = infinium_collector.request_count
    with pytest.raises(ValidationError):
        transport.get_interpreted_result("../../etc/passwd")
    with pytest.raises(ValidationError):
        transport.get_prompt("not-a-uuid", "key")
    with pytest.raises(ValidationError):
        transport.get_prompt(PROMPT_ID, "key", version=0)
    with pytest.raises(ValidationError):
        transport.get_prompt(PROMPT_ID, "")
    assert infinium_collector.request_count == before


def test_prompts_are_fetched_with_their_own_credentials() -> None:
    """GET prompts/{id}/v/{version} sends x-prompt-id/x-prompt-key; a wrong key is a 403."""
    prompts = {
        PROMPT_ID: {
            "key": "prompt-key-1",
            "versions": [
                {"version": 1, "name": "greet", "content": "Hi {{who}}", "createdAt": "2026-01-01"},
                {
                    "version": 2,
                    "name": "greet",
                    "content": "Hello {{who}}",
                    "createdAt": "2026-02-01",
                },
            ],
        }
    }
    with LocalCollector(prompts=prompts) as collector:
        client = Transport(_settings(collector.base_url))
        try:
            latest = client.get_prompt(PROMPT_ID, "prompt-key-1")
            first = client.get_prompt(PROMPT_ID, "prompt-key-1", version=1)
            with pytest.raises(AuthenticationError) as caught:
                client.get_prompt(PROMPT_ID, "wrong-key")
        finally:
            client.close()
    assert latest.data is not None and latest.data["content"] == "Hello {{who}}"
    assert first.data is not None and first.data["version"] == 1
    assert caught.value.status_code == 403
    assert "prompt_key" in str(caught.value)


def test_encoded_trace_round_trips_through_the_collector(
    transport: Transport, infinium_collector: LocalCollector
) -> None:
    """What encode_task produces is what the collector stores, byte for byte."""
    stored_before = len(infinium_collector.traces())
    body = encode_task(TaskData("round trip", "described", "2026-01-01T00:00:00.000000Z", 2.0))
    transport.post_trace(body)
    stored = infinium_collector.traces()
    assert len(stored) == stored_before + 1
    assert stored[-1].body == body
