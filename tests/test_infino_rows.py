"""Infino rows, the bulk answer, settings and the signed client against the local endpoint."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator

import pytest
from exporters import trace
from infino_server import ACCESS_KEY, SECRET_KEY, InfinoServer, running

from infinium_logging.errors import AuthenticationError, ConfigurationError
from infinium_logging.infino_client import InfinoClient
from infinium_logging.infino_rows import (
    bulk_entry,
    read_bulk_answer,
    step_rows,
    trace_id_of,
    trace_row,
)
from infinium_logging.infino_settings import InfinoSettings, core_settings
from infinium_logging.model import (
    EnvironmentContext,
    ErrorDetail,
    ExecutionStep,
    LlmCall,
    LlmUsage,
    TaskData,
    ToolCall,
    encode_task,
)


@pytest.fixture
def infino() -> Iterator[InfinoServer]:
    """A local Infino endpoint."""
    yield from running()


def _rich_trace() -> object:
    return trace(
        "Classify ticket",
        steps=[
            ExecutionStep(
                1,
                "llm",
                "ask the model",
                llm_call=LlmCall("gpt-4o", prompt_tokens=300, completion_tokens=20),
            ),
            ExecutionStep(
                2,
                "tool",
                "look it up",
                tool_call=ToolCall("search", error=ErrorDetail("timeout", "search timed out")),
            ),
            ExecutionStep(3, "llm", "again", llm_call=LlmCall("claude-x", prompt_tokens=5)),
        ],
        llm_usage=LlmUsage(estimated_cost_usd=0.0123),
        environment=EnvironmentContext(custom_tags={"team": "support"}),
        errors=[ErrorDetail("ValueError", "bad ticket")],
    )


def test_trace_row_flattens_the_trace() -> None:
    """One document: totals over the steps, models and tools, tags as fields, steps as text."""
    task = _rich_trace()
    row = trace_row(task, "abc", agent="agent-1")  # type: ignore[arg-type]
    assert row["@timestamp"] == "2026-01-01T00:00:00Z"
    assert row["trace_id"] == "abc"
    assert row["agent"] == "agent-1"
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (305, 20, 325)
    assert row["models"] == ["claude-x", "gpt-4o"]
    assert row["tools"] == ["search"]
    assert row["cost_usd"] == 0.0123
    assert row["tags"] == {"team": "support"}
    assert row["outcome"] == "error"
    assert row["error_count"] == 1
    assert row["error"] == "ValueError: bad ticket"
    assert "search timed out" in row["steps"]
    assert json.loads(row["steps"])[0]["llm_call"]["model"] == "gpt-4o"


def test_step_rows_carry_trace_id_model_tokens_tool_and_error() -> None:
    """One row per step, each with an _id of its own under the trace's."""
    rows = step_rows(_rich_trace(), "abc")  # type: ignore[arg-type]
    assert [doc_id for doc_id, _ in rows] == ["abc-00000", "abc-00001", "abc-00002"]
    first, second, _ = (row for _, row in rows)
    assert first["model"] == "gpt-4o" and first["prompt_tokens"] == 300
    assert second["tool"] == "search" and second["error_type"] == "timeout"
    assert all(row["trace_id"] == "abc" for _, row in rows)


def test_trace_id_is_stable_and_tells_traces_apart() -> None:
    """The same trace, encoded again (a retry, a replay, another process), gets the same id;
    another trace another id."""
    task = _rich_trace()
    assert trace_id_of(encode_task(task)) == trace_id_of(encode_task(_rich_trace()))  # type: ignore[arg-type]
    assert trace_id_of(encode_task(trace("a"))) != trace_id_of(encode_task(trace("b")))


def test_bulk_entry_is_an_action_line_and_a_document_line() -> None:
    """The NDJSON pair Infino's bulk API takes, final newline included."""
    entry = bulk_entry("t-1", {"name": "要約 🚀"})
    action, document, end = entry.split(b"\n")
    assert json.loads(action) == {"index": {"_id": "t-1"}}
    assert json.loads(document) == {"name": "要約 🚀"}
    assert end == b""


def test_bulk_answer_without_errors_accepts_all() -> None:
    """``errors: false`` stores every record."""
    answer = read_bulk_answer(["a", "b"], b'{"took":1,"errors":false,"items":[]}')
    assert answer.accepted == {"a", "b"} and not answer.retry and not answer.failed


def test_bulk_answer_sorts_items_by_status() -> None:
    """2xx stored, 429/5xx to retry, others refused with their error type; an item missing
    from the answer is retried."""
    raw = json.dumps(
        {
            "errors": True,
            "items": [
                {"index": {"_id": "a", "status": 201}},
                {"index": {"_id": "b", "status": 429, "error": {"type": "busy"}}},
                {"index": {"_id": "c", "status": 400, "error": {"type": "mapper_parsing"}}},
                {"index": {"_id": "d", "status": 409}},
            ],
        }
    ).encode()
    answer = read_bulk_answer(["a", "b", "c", "d", "e"], raw)
    assert answer.accepted == {"a"}
    assert answer.retry == {"b", "e"}
    assert answer.failed == {"c": "mapper_parsing", "d": "status_409"}


def test_unreadable_bulk_answer_retries_everything() -> None:
    """An answer that is no JSON object says nothing was stored."""
    assert read_bulk_answer(["a"], b"<html>").retry == {"a"}


# --- settings ----------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    return {
        "INFINIUM_INFINO_ENDPOINT": "https://api.infino.ws",
        "INFINIUM_INFINO_ACCESS_KEY": ACCESS_KEY,
        "INFINIUM_INFINO_SECRET_KEY": SECRET_KEY,
        **extra,
    }


def test_settings_from_environment_with_default_dataset() -> None:
    """The variables are read; the dataset defaults to infinium-traces."""
    settings = InfinoSettings.from_env(_env())
    assert settings.endpoint == "https://api.infino.ws"
    assert settings.datasets == ("infinium-traces",)
    assert settings.host == "api.infino.ws"
    with_steps = InfinoSettings.from_env(_env(INFINIUM_INFINO_STEPS_DATASET="steps"))
    assert with_steps.datasets == ("infinium-traces", "steps")
    assert settings.sample_rate == 1.0
    sampled = InfinoSettings.from_env(_env(INFINIUM_SAMPLE_RATE="0.25"))
    assert sampled.sample_rate == 0.25 and core_settings(sampled).sample_rate == 0.25


def test_keyword_arguments_win_over_the_environment() -> None:
    """An argument replaces its variable."""
    settings = InfinoSettings.from_env(_env(), dataset="mine")
    assert settings.dataset == "mine"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INFINIUM_INFINO_ENDPOINT", "ftp://x"),
        ("INFINIUM_INFINO_ENDPOINT", "http://example.com"),
        ("INFINIUM_INFINO_DATASET", "Has Spaces"),
        ("INFINIUM_INFINO_STEPS_DATASET", "_bad"),
        ("INFINIUM_INFINO_ACCESS_KEY", "line\nbreak"),
        ("INFINIUM_SAMPLE_RATE", "half"),
        ("INFINIUM_SAMPLE_RATE", "1.5"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    """The error says which variable to fix, and its value."""
    with pytest.raises(ConfigurationError) as caught:
        InfinoSettings.from_env(_env(**{variable: value}))
    assert caught.value.variable == variable
    assert variable in str(caught.value)


def test_a_missing_key_names_its_variable() -> None:
    """Without a secret key the error says which variable to set."""
    env = _env()
    del env["INFINIUM_INFINO_SECRET_KEY"]
    with pytest.raises(ConfigurationError, match="INFINIUM_INFINO_SECRET_KEY"):
        InfinoSettings.from_env(env)


def test_the_secret_key_is_masked() -> None:
    """Neither repr nor a bad secret's error shows the secret key."""
    settings = InfinoSettings.from_env(_env())
    assert SECRET_KEY not in repr(settings) and SECRET_KEY not in str(settings)
    with pytest.raises(ConfigurationError) as caught:
        InfinoSettings.from_env(_env(INFINIUM_INFINO_SECRET_KEY="short\x01secret-value"))
    assert "short" not in str(caught.value)
    assert caught.value.variable == "INFINIUM_INFINO_SECRET_KEY"
    with pytest.raises(TypeError):
        pickle.dumps(settings)


# --- the client against the local endpoint -----------------------------------------------------


def _client(infino: InfinoServer, **overrides: str) -> InfinoClient:
    values = {"endpoint": infino.url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
    values.update(overrides)
    return InfinoClient(InfinoSettings(**values))  # type: ignore[arg-type]


def test_client_bulk_upload_is_signed_and_stored(infino: InfinoServer) -> None:
    """The endpoint checks the signature with botocore and stores the records by _id."""
    client = _client(infino)
    raw = client.bulk("traces", bulk_entry("t-1", {"a": 1}) + bulk_entry("t-2", {"a": 2}))
    assert read_bulk_answer(["t-1", "t-2"], raw).accepted == {"t-1", "t-2"}
    assert infino.ids("traces") == {"t-1", "t-2"}
    assert infino.bad_signatures == 0


def test_a_wrong_secret_is_refused_without_showing_it(infino: InfinoServer) -> None:
    """A bad signature is a 403, raised as an AuthenticationError that names the variables,
    not the secret."""
    client = _client(infino, secret_key="another-secret-value")
    with pytest.raises(AuthenticationError) as caught:
        client.bulk("traces", bulk_entry("t-1", {}))
    assert infino.bad_signatures == 1
    assert "INFINIUM_INFINO_SECRET_KEY" in str(caught.value)
    assert "another-secret-value" not in str(caught.value)


def test_client_creates_datasets_and_queries(infino: InfinoServer) -> None:
    """PUT creates a dataset (a second time is fine); SQL answers columns and rows."""
    client = _client(infino)
    assert client.create_dataset("traces") is True
    assert client.create_dataset("traces") is False
    client.bulk("traces", bulk_entry("t-1", {"model": "gpt-4o", "tokens": 3}))
    answer = client.sql('SELECT * FROM "traces"')
    assert [column["name"] for column in answer["columns"]] == ["model", "tokens"]
    assert answer["rows"] == [["gpt-4o", 3]]


def test_rows_of_a_trace_with_marked_floats_encode() -> None:
    """Floats the model marks for the wire (exponent form, like 2.5e-05) encode in rows too."""
    task = TaskData(
        "tiny", "d", "2026-01-01T00:00:00Z", 2.5e-05, llm_usage=LlmUsage(estimated_cost_usd=1e-07)
    )
    entry = bulk_entry("t", trace_row(task, "t"))
    document = json.loads(entry.split(b"\n")[1])
    assert document["duration"] == 2.5e-05 and document["cost_usd"] == 1e-07
