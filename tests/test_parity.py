"""Parity with the official client (infinium-o2 1.2.0): the same bytes for the same trace, and
the things its users reach for."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from exporters import FAST, settings_for, trace
from hypothesis import given, settings
from hypothesis import strategies as st
from infinium import types as official
from infinium.client import InfiniumClient

from infinium_logging import (
    AsyncClient,
    BatchError,
    ConfigurationError,
    Exporter,
    InfiniumHandler,
    InfiniumTimeoutError,
    NotFoundError,
    Settings,
    TaskData,
    ValidationError,
    create_task_data,
    task,
)
from infinium_logging._collector_store import PromptCatalog
from infinium_logging.collector import LocalCollector
from infinium_logging.convert import to_task
from infinium_logging.model import ApiResponse, encode_task
from infinium_logging.official import call_summary, result_summary, wait_for_interpretation
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET, capture_tasks

MISSING = "00000000-0000-4000-8000-000000000404"


def _uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


_CLIENT = InfiniumClient(agent_id="agent-parity", agent_secret="secret-parity-0123456789")


def official_body(trace: Any) -> bytes:
    """The official client's body for its dataclass: ``_task_data_to_dict`` as httpx sends it."""
    payload = _CLIENT._task_data_to_dict(trace)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def official_trace(**fields: Any) -> Any:
    """An official ``TaskData`` with fixed required fields."""
    return official.TaskData(
        name="Parity",
        description="d",
        current_datetime="2026-01-01T00:00:00Z",
        duration=1.5,
        **fields,
    )


_optional_text = st.none() | st.text(max_size=20)
_error_details = st.builds(
    official.ErrorDetail,
    error_type=st.text(min_size=1, max_size=10),
    message=st.text(min_size=1, max_size=20),
    recoverable=st.none() | st.booleans(),
    retry_count=st.none() | st.integers(0, 5),
    stack_trace=_optional_text,
    error_code=_optional_text,
)


@settings(max_examples=150, deadline=None)
@given(errors=st.lists(_error_details, min_size=1, max_size=3), strict=st.booleans())
def test_none_in_a_defaulted_field_is_left_out_as_the_official_client_does(
    errors: list[Any], strict: bool
) -> None:
    """``ErrorDetail(recoverable=None)`` (or ``retry_count=None``) omits the key, strict or
    lenient, at the top level and inside a step: the official client's bytes."""
    step = official.ExecutionStep(
        step_number=1, action="tool_use", description="call", error=errors[0]
    )
    trace = official_trace(errors=errors, steps=[step])
    assert encode_task(to_task(trace, strict=strict)) == official_body(trace)


@pytest.mark.parametrize("strict", [True, False])
def test_null_in_a_dict_means_not_given(strict: bool) -> None:
    """A dict's ``"recoverable": null`` leaves the key out instead of failing (strict) or
    sending ``false`` (lenient)."""
    trace = to_task(
        {
            "name": "n",
            "description": "d",
            "current_datetime": "2026-01-01T00:00:00Z",
            "duration": 1,
            "errors": [{"error_type": "E", "message": "m", "recoverable": None}],
        },
        strict=strict,
    )
    assert b'"errors":[{"error_type":"E","message":"m","retry_count":0}]' in encode_task(trace)


_PROMPTS = {
    "prompts_used": [
        {
            "prompt_id": "0b0a8f6e-3b0e-4c39-9d43-5e9a3d9f2b11",
            "prompt_name": "Greeting",
            "version": 3,
            "source": "prompt_studio",
            "variables_used": None,
            "fetched_at": "2026-01-01T00:00:00.000000Z",
        },
        {
            "prompt_id": "0b0a8f6e-3b0e-4c39-9d43-5e9a3d9f2b12",
            "prompt_name": "Reply",
            "version": 1,
            "source": "prompt_studio",
            "variables_used": ["customer", "issue"],
            "fetched_at": "2026-01-01T00:00:01.000000Z",
        },
    ]
}


@pytest.mark.parametrize("strict", [True, False])
def test_an_official_trace_with_prompt_studio_sends_the_official_bytes(strict: bool) -> None:
    """The ``_prompt_studio`` section the official TraceBuilder sets is the body's last key,
    exactly as the official client writes it (``null`` for no variables included)."""
    trace = official_trace(input_summary="in", errors=[official.ErrorDetail("E", "m")])
    trace._prompt_studio = _PROMPTS
    ours = encode_task(to_task(trace, strict=strict))
    assert ours == official_body(trace)
    assert ours.endswith(
        b'"variables_used":["customer","issue"],"fetched_at":"2026-01-01T00:00:01.000000Z"}]}}'
    )


def test_an_official_trace_with_prompt_studio_arrives_whole(
    infinium_collector: LocalCollector,
) -> None:
    """Submitted through the exporter, the collector receives the official body."""
    trace = official_trace(output_summary="out")
    trace._prompt_studio = _PROMPTS
    with Exporter(settings_for(infinium_collector)) as exporter:
        assert exporter.submit(trace)
        assert exporter.flush(10)
    [received] = infinium_collector.traces()
    assert received.body == official_body(trace)
    assert isinstance(received.task, TaskData)
    assert received.task.prompt_studio is not None
    assert [p.version for p in received.task.prompt_studio.prompts_used] == [3, 1]


def test_get_prompt_inside_a_task_links_the_prompt() -> None:
    """Our ``get_prompt`` inside ``task()`` links the prompt as the official client's does:
    one ``prompts_used`` entry per fetch, with the variables' names."""
    prompt_id = "0b0a8f6e-3b0e-4c39-9d43-5e9a3d9f2b11"
    catalog = {
        prompt_id: {
            "key": "prompt-key-1",
            "versions": [
                {
                    "version": 1,
                    "name": "Greeting",
                    "content": "Hi {{name}}",
                    "createdAt": "2026-01-01T00:00:00Z",
                },
                {
                    "version": 2,
                    "name": "Greeting",
                    "content": "Hello {{name}}",
                    "createdAt": "2026-01-02T00:00:00Z",
                },
            ],
        }
    }
    with (
        LocalCollector(prompts=catalog) as collector,
        Exporter(settings_for(collector)) as exporter,
    ):
        outside = exporter.get_prompt(prompt_id, "prompt-key-1")
        with task("Greets", exporter=exporter):
            first = exporter.get_prompt(prompt_id, "prompt-key-1", variables={"name": "Ada"})
            exporter.get_prompt(prompt_id, "prompt-key-1", version=1)
        assert exporter.flush(10)
        [received] = collector.traces()
    assert outside.version == 2
    assert first.rendered_content == "Hello Ada"
    body = json.loads(received.body)
    assert list(body)[-1] == "prompt_studio"
    used = body["prompt_studio"]["prompts_used"]
    assert [list(entry) for entry in used] == [
        ["prompt_id", "prompt_name", "version", "source", "variables_used", "fetched_at"]
    ] * 2
    assert [(u["version"], u["variables_used"], u["source"]) for u in used] == [
        (2, ["name"], "prompt_studio"),
        (1, None, "prompt_studio"),
    ]


# --- waiting for Maestro, async, send_batch, one-liners, exceptions -------------------------


class _Platform:
    """A small real server for what the collector does not do: an interpretation that is ready
    after ``ready_after`` polls, answered after ``delay`` seconds, with in-flight counting."""

    def __init__(self, ready_after: int = 3, delay: float = 0.0) -> None:
        self.ready_after = ready_after
        self.delay = delay
        self.polls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        platform = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with platform._lock:
                    platform.polls += 1
                    platform.in_flight += 1
                    platform.most_in_flight = max(platform.most_in_flight, platform.in_flight)
                    ready = platform.polls >= platform.ready_after
                # Out of flight before the answer is written: the client may read it and send
                # its next request before this thread would get back to count it out.
                try:
                    if platform.delay:
                        time.sleep(platform.delay)
                finally:
                    with platform._lock:
                        platform.in_flight -= 1
                if self.path.endswith(MISSING):
                    self.send_response(404)
                    self.end_headers()
                    return
                result = {"grade": "A"} if ready else None
                body = json.dumps({"traceId": "t", "interpretedTraceResult": result}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Platform:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/api/v1"


def _exporter_for(base_url: str) -> Exporter:
    return Exporter(Settings(**{**FAST, "base_url": base_url, "spool_dir": None}))


def test_wait_for_interpretation_polls_until_maestro_answers() -> None:
    """``wait_for_interpretation`` returns the first answer with an interpretation."""
    with _Platform(ready_after=3) as platform, _exporter_for(platform.base_url) as exporter:
        response = exporter.wait_for_interpretation(_uuid(1), timeout=30, poll_interval=0.01)
    assert response.data is not None
    assert response.data["interpretedTraceResult"] == {"grade": "A"}
    assert platform.polls == 3


def test_wait_for_interpretation_times_out_with_a_clear_error() -> None:
    """Past the deadline: ``InfiniumTimeoutError`` naming the trace and the timeout, and no
    poll later than the deadline (an injected clock, no real waiting)."""
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    with _Platform(ready_after=10**6) as platform, _exporter_for(platform.base_url) as exporter:
        with pytest.raises(InfiniumTimeoutError) as caught:
            wait_for_interpretation(
                exporter, _uuid(7), timeout=10, poll_interval=3, clock=lambda: now[0], sleep=sleep
            )
    assert _uuid(7) in str(caught.value)
    assert "10 s" in str(caught.value)
    assert caught.value.timeout_duration == 10
    assert waits == [3, 3, 3, 1]
    assert platform.polls == 5


def test_not_found_names_the_resource() -> None:
    """A 404 carries the official ``resource_type`` and ``resource_id``."""
    with _Platform() as platform, _exporter_for(platform.base_url) as exporter:
        with pytest.raises(NotFoundError) as caught:
            exporter.get_interpreted_result(MISSING)
    assert (caught.value.resource_type, caught.value.resource_id) == ("trace", MISSING)


def test_async_client_does_not_stall_the_event_loop() -> None:
    """While a slow platform answers, other coroutines keep running; the wait's polls go
    through the same client."""
    ticks = 0

    async def ticker(done: asyncio.Event) -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def main(base_url: str) -> ApiResponse:
        done = asyncio.Event()
        async with AsyncClient(
            agent_id=TEST_AGENT_ID,
            agent_secret=TEST_AGENT_SECRET,
            base_url=base_url,
            enable_rate_limiting=False,
        ) as client:
            ticking = asyncio.create_task(ticker(done))
            response = await client.wait_for_interpretation(
                _uuid(2), timeout=30, poll_interval=0.01
            )
            done.set()
            await ticking
            return response

    with _Platform(ready_after=2, delay=0.3) as platform:
        response = asyncio.run(main(platform.base_url))
    assert response.data is not None and response.data["interpretedTraceResult"]
    assert ticks >= 10  # 0.6 s of slow answers: a blocked loop would not tick at all


def test_async_client_bounds_concurrency_and_survives_cancellation() -> None:
    """At most ``max_concurrent`` requests are in flight; a cancelled call raises
    CancelledError in its caller and leaves the client usable."""

    async def main(base_url: str) -> list[ApiResponse]:
        exporter = _exporter_for(base_url)
        try:
            client = AsyncClient(exporter, max_concurrent=2)
            slow = asyncio.create_task(client.get_interpreted_result(_uuid(3)))
            await asyncio.sleep(0.05)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            results = await asyncio.gather(
                *(client.get_interpreted_result(_uuid(10 + i)) for i in range(6))
            )
            await client.aclose()
            assert not exporter.closed  # borrowed: left open
            return list(results)
        finally:
            exporter.shutdown()

    with _Platform(ready_after=1, delay=0.1) as platform:
        results = asyncio.run(main(platform.base_url))
    assert all(r.success for r in results)
    assert platform.most_in_flight == 2


def test_async_get_prompt_inside_a_task_links_it(infinium_collector: LocalCollector) -> None:
    """The awaited ``get_prompt`` runs in the caller's context: the running task links it."""
    prompt_id = "0b0a8f6e-3b0e-4c39-9d43-5e9a3d9f2b11"
    infinium_collector._prompts = PromptCatalog(
        {
            prompt_id: {
                "key": "k-1",
                "versions": [
                    {"version": 4, "name": "P", "content": "x", "createdAt": "2026-01-01T00:00:00Z"}
                ],
            }
        }
    )

    async def main(exporter: Exporter) -> None:
        client = AsyncClient(exporter)
        async with task("Async prompt", exporter=exporter):
            await client.get_prompt(prompt_id, "k-1", variables={"a": "1"})
        await client.aclose()

    with Exporter(settings_for(infinium_collector)) as exporter:
        asyncio.run(main(exporter))
        assert exporter.flush(10)
    [received] = infinium_collector.traces()
    used = json.loads(received.body)["prompt_studio"]["prompts_used"]
    assert [(u["prompt_id"], u["version"], u["variables_used"]) for u in used] == [
        (prompt_id, 4, ["a"])
    ]


def test_send_batch_strategies(infinium_collector: LocalCollector) -> None:
    """``max_concurrent=1`` sends in order; ``fail_fast`` stops at the first failure and raises
    BatchError with the official attribute names; without it every trace gets a result."""
    traces = [trace(f"t{i}") for i in range(4)]
    with Exporter(settings_for(infinium_collector, max_retries=0)) as exporter:
        result = exporter.send_batch(traces, max_concurrent=1)
        assert (result.total_tasks, result.successful_tasks, result.failed_tasks) == (4, 4, 0)
        assert [t.task.name for t in infinium_collector.traces()] == ["t0", "t1", "t2", "t3"]
        infinium_collector.fail_next(1, 422)
        with pytest.raises(BatchError) as caught:
            exporter.send_batch(traces, max_concurrent=1, fail_fast=True)
        # Counted as the official client counts: the traces after the stop are not failures.
        assert (caught.value.successful_count, caught.value.failed_count) == (0, 1)
        assert caught.value.total_tasks == 4 and len(caught.value.errors) == 1
        assert "3 not sent" in str(caught.value)
        infinium_collector.fail_next(1, 422)
        result = exporter.send_batch(traces, max_concurrent=1)
        assert (result.successful, result.failed) == (3, 1)
        with pytest.raises(ValueError, match="max_concurrent"):
            exporter.send_batch(traces, max_concurrent=0)


def test_send_task_and_create_task_data_match_the_official_body(
    infinium_collector: LocalCollector,
) -> None:
    """``send_task(name=..., description=..., duration=..., **fields)`` sends what the
    official client's ``send_task`` sends; ``send(dict)`` fills ``current_datetime``."""
    fields: dict[str, Any] = {
        "input_summary": "question",
        "customer": {"customer_name": "Ada", "client_company": "ACME"},
        "llm_usage": {"model": "gpt-4o", "prompt_tokens": 10, "completion_tokens": 2},
    }
    when = "2026-03-01T10:00:00.000000Z"
    theirs = _CLIENT.create_task_data("Send", "one-liner", 2, current_datetime=when, **fields)
    with Exporter(settings_for(infinium_collector)) as exporter:
        exporter.send_task("Send", "one-liner", 2, current_datetime=when, **fields)
        exporter.send({"name": "no time", "description": "d", "duration": 1})
    first, second = infinium_collector.traces()
    assert first.body == official_body(theirs).replace(b'"duration":2,', b'"duration":2.0,')
    assert encode_task(create_task_data("Send", "one-liner", 2, when, **fields)) == first.body
    assert second.task.current_datetime.endswith("Z")
    with pytest.raises(ValidationError) as caught:
        create_task_data("x", "y", 1, customer={"customer_name": 5})
    assert caught.value.field == caught.value.path == "customer.customer_name"


def test_official_exception_attribute_names() -> None:
    """Ported ``except`` blocks that read the official attributes keep working."""
    assert ValidationError("bad", field="steps[0]").field == "steps[0]"
    assert ConfigurationError("bad", "INFINIUM_TIMEOUT").config_key == "INFINIUM_TIMEOUT"
    assert ConfigurationError("bad", config_key="agent_id").variable == "agent_id"
    missing = NotFoundError("gone", resource_type="prompt", resource_id="p1")
    assert (missing.status_code, missing.resource_type, missing.resource_id) == (
        404,
        "prompt",
        "p1",
    )
    batch = BatchError("x", successful_count=3, failed_count=2, errors=["e1", "e2"])
    assert (batch.successful_count, batch.failed_count, batch.total_tasks) == (3, 2, 5)


def test_task_decorator_captures_io_like_trace_agent(infinium_collector: LocalCollector) -> None:
    """``@task(..., capture_io=True)`` records the arguments, the result and the docstring as
    ``@trace_agent`` does (same text for ordinary values); without it, none of them."""
    with Exporter(settings_for(infinium_collector)) as exporter:

        @task("Classify", exporter=exporter, capture_io=True)
        def classify(ticket: str, *, urgent: bool = False) -> dict[str, str]:
            """Classify a support ticket."""
            return {"label": "billing"}

        @task("Plain", exporter=exporter)
        def plain(ticket: str) -> str:
            """Not recorded."""
            return "done"

        @task("Async", exporter=exporter, capture_io=True, output_summary="given")
        async def answer(question: str) -> str:
            return "forty-two"

        assert classify("charged twice", urgent=True) == {"label": "billing"}
        plain("x")
        assert asyncio.run(answer("meaning?")) == "forty-two"
        assert exporter.flush(10)
    by_name = {t.task.name: t.task for t in infinium_collector.traces()}
    classified = by_name["Classify"]
    assert classified.description == "Classify a support ticket."
    expected_input = repr({"args": ("charged twice",), "kwargs": {"urgent": True}})
    assert classified.input_summary == expected_input
    assert classified.output_summary == repr({"label": "billing"})
    assert (by_name["Plain"].input_summary, by_name["Plain"].output_summary) == (None, None)
    assert by_name["Plain"].description == "Plain"
    assert by_name["Async"].input_summary == repr({"args": ("meaning?",), "kwargs": {}})
    assert by_name["Async"].output_summary == "given"  # a value given wins


def test_captured_io_is_bounded_on_the_callers_thread() -> None:
    """A huge argument is summarised within the official limit without formatting all of it."""
    summary = call_summary((list(range(1_000_000)), "x" * 100_000), {})
    assert len(summary) <= 3000
    long_result = result_summary("y" * 20_000)
    assert 7000 < len(long_result) <= 8000
    assert "..." in long_result
    assert result_summary(_Unprintable()).startswith("<_Unprintable")  # never raises


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def test_a_tagged_records_other_fields_reach_the_trace(
    infinium_collector: LocalCollector, stdlib_logger: logging.Logger, tmp_path: Path
) -> None:
    """``extra={"infinium": True, "ticket_id": 42}`` keeps ``ticket_id`` (a custom tag), with
    a spool too; a record with the tag alone gets no tag of its own."""
    with Exporter(settings_for(infinium_collector, spool_dir=tmp_path)) as exporter:
        stdlib_logger.addHandler(InfiniumHandler(exporter=exporter))
        stdlib_logger.info("Routed", extra={"infinium": True, "ticket_id": 42})
        stdlib_logger.info(
            "Answered",
            extra={
                "infinium": {"output_summary": "done"},
                "channel": "email",
                "customer": {"customer_name": "Ada"},
            },
        )
        stdlib_logger.info("Bare", extra={"infinium": {}})
        assert exporter.flush(10)
    by_name = {t.task.name: t.task for t in infinium_collector.traces()}
    tags = {
        name: (t.environment.custom_tags if t.environment else None) or {}
        for name, t in by_name.items()
    }
    assert tags["Routed"]["ticket_id"] == "42"
    assert tags["Answered"]["channel"] == "email"
    customer = by_name["Answered"].customer
    assert customer is not None and customer.customer_name == "Ada"
    assert set(tags["Bare"]) == {"logger"}


def test_a_prompt_link_without_variables_used_is_passed_on_as_given() -> None:
    """A ``_prompt_studio`` entry that does not name ``variables_used`` is sent without it, as
    the official client passes its dict on; one that says ``None`` is sent ``null``."""
    trace = official_trace()
    entry = {k: v for k, v in _PROMPTS["prompts_used"][0].items() if k != "variables_used"}
    trace._prompt_studio = {"prompts_used": [entry, _PROMPTS["prompts_used"][0]]}
    for strict in (True, False):
        ours = encode_task(to_task(trace, strict=strict))
        assert ours == official_body(trace)
        assert ours.count(b'"variables_used":null') == 1


def test_a_tagged_official_trace_keeps_the_librarys_environment(
    stdlib_logger: logging.Logger,
) -> None:
    """An official TaskData with an environment of its own, tagged on a record, gets the
    library's environment and the record's fields added where it has none; a field that is
    None or NaN makes no tag."""
    theirs = official_trace(environment=official.EnvironmentContext(custom_tags={"a": "b"}))
    with capture_tasks() as captured:
        stdlib_logger.addHandler(InfiniumHandler())
        stdlib_logger.info(
            "b", extra={"infinium": theirs, "ticket": 1, "user": None, "ratio": float("nan")}
        )
    [got] = captured
    assert got.environment is not None
    tags = got.environment.custom_tags or {}
    assert tags["a"] == "b" and tags["ticket"] == "1" and tags["logger"] == stdlib_logger.name
    assert "user" not in tags and "ratio" not in tags
    assert got.environment.python_version is not None
