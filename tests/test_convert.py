"""to_task (strict and lenient), decode_task, json_safe and fit_task."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from freezegun import freeze_time
from hostile import ItemsRaise, IterRaises, UnorderableRaises
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infinium_logging import convert
from infinium_logging.convert import (
    MAX_PREVIEW_LENGTH,
    Problem,
    decode_task,
    lenient_task,
    to_task,
)
from infinium_logging.errors import ValidationError
from infinium_logging.fitting import fit_task
from infinium_logging.model import (
    MAX_BODY_BYTES,
    Customer,
    ErrorDetail,
    ExecutionStep,
    ExpectedOutcome,
    LlmCall,
    TaskData,
    encode_task,
)
from infinium_logging.sanitise import TRUNCATION_MARK, json_safe, truncate

NOW = "2026-11-22T08:51:00.000000Z"


def minimal(**extra: Any) -> dict[str, Any]:
    return {"name": "n", "description": "d", "current_datetime": NOW, "duration": 1, **extra}


def test_nested_dicts_become_structs() -> None:
    """Dicts at every level become the nested Structs."""
    task = to_task(
        minimal(
            steps=[
                {
                    "step_number": 1,
                    "action": "llm_inference",
                    "description": "x",
                    "llm_call": {"model": "gpt", "prompt_tokens": 3},
                }
            ],
            customer={"customer_name": "ACME"},
        )
    )
    assert task.steps is not None
    assert task.steps[0].llm_call == LlmCall(model="gpt", prompt_tokens=3)
    assert task.customer == Customer(customer_name="ACME")


def test_sections_accepted_at_top_level_and_under_sections() -> None:
    """A section under "sections" and the same section at top level give the same trace."""
    a = to_task(minimal(customer={"customer_name": "A"}))
    b = to_task(minimal(sections={"customer": {"customer_name": "A"}}))
    assert a == b


def test_section_given_twice_is_an_error_in_strict_mode() -> None:
    """Ambiguity is refused with a path."""
    with pytest.raises(ValidationError, match="customer: given both"):
        to_task(minimal(customer={}, sections={"customer": {"customer_name": "A"}}))


def test_unknown_section_is_named() -> None:
    """An unknown name under sections says which names exist."""
    with pytest.raises(ValidationError, match=r"sections\.weather: unknown section"):
        to_task(minimal(sections={"weather": {}}))


def test_step_extra_keys_go_to_metadata() -> None:
    """Keys that are not ExecutionStep fields are collected into the step's metadata."""
    task = to_task(
        minimal(
            steps=[
                {
                    "step_number": 1,
                    "action": "a",
                    "description": "d",
                    "ticket": 42,
                    "metadata": {"k": 1},
                }
            ]
        )
    )
    assert task.steps is not None
    assert task.steps[0].metadata == {"k": 1, "ticket": 42}


def test_strict_error_names_path_and_problem() -> None:
    """The documented message shape: path: expected X, got Y."""
    steps = [{"step_number": i, "action": "a", "description": "d"} for i in range(1, 3)]
    steps.append(
        {
            "step_number": 3,
            "action": "a",
            "description": "d",
            "llm_call": {"model": "m", "prompt_tokens": "320"},
        }
    )
    with pytest.raises(ValidationError) as info:
        to_task(minimal(steps=steps))
    assert str(info.value) == "steps[2].llm_call.prompt_tokens: expected int, got str"
    assert info.value.path == "steps[2].llm_call.prompt_tokens"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (minimal(customer={"nickname": "x"}), "customer.nickname: unknown field"),
        (minimal(errors=[{"message": "m"}]), "errors[0].error_type: required field missing"),
        (
            {"name": "n", "description": "d", "duration": 1},
            "current_datetime: required field missing",
        ),
        (minimal(name="x" * 501), "name: longer than 500 characters (501)"),
        (minimal(description="x" * 10_001), "description: longer than 10000 characters (10001)"),
        (minimal(name="  "), "name: cannot be empty"),
        (minimal(duration=-1), "duration: expected 0 to 86400 seconds, got -1.0"),
        (minimal(duration=86_401), "duration: expected 0 to 86400 seconds, got 86401.0"),
        (
            minimal(current_datetime="yesterday"),
            "current_datetime: expected an ISO 8601 timestamp, got 'yesterday'",
        ),
        (
            minimal(
                steps=[
                    {
                        "step_number": 1,
                        "action": "a",
                        "description": "d",
                        "input_preview": "p" * 501,
                    }
                ]
            ),
            "steps[0].input_preview: longer than 500 characters (501)",
        ),
        (
            minimal(llm_usage={"estimated_cost_usd": math.nan}),
            "llm_usage.estimated_cost_usd: expected a finite number, got nan",
        ),
        (
            minimal(llm_usage={"prompt_tokens": True}),
            "llm_usage.prompt_tokens: expected int, got bool",
        ),
        (["not", "a", "dict"], "expected a TaskData or a dict, got list"),
    ],
)
def test_strict_rejects_with_clear_messages(obj: Any, message: str) -> None:
    """Every documented limit and type is checked in strict mode, with a precise message."""
    with pytest.raises(ValidationError) as info:
        to_task(obj)
    assert str(info.value) == message


def test_strict_accepts_limits_exactly() -> None:
    """Values exactly at the documented limits pass."""
    task = to_task(
        minimal(
            name="x" * 500,
            description="y" * 10_000,
            duration=86_400,
            steps=[
                {"step_number": 1, "action": "a", "description": "d", "output_preview": "p" * 500}
            ],
        )
    )
    assert len(task.name) == 500
    assert task.duration == 86_400.0


def test_strict_validates_a_taskdata_built_by_hand() -> None:
    """A TaskData with a wrong type inside is caught by strict to_task."""
    task = TaskData("n", "d", NOW, 1.0, steps=[ExecutionStep(1, "a", "d", duration_ms="slow")])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"steps\[0\]\.duration_ms: expected int, got str"):
        to_task(task)


def test_official_client_dataclasses_are_accepted() -> None:
    """Plain dataclasses with the same field names (the official client's types) are read too."""

    @dataclass
    class Outcome:
        task_objective: str
        constraints: list[str] | None = None

    task = to_task(minimal(expected_outcome=Outcome("goal", ["c"])))
    assert task.expected_outcome == ExpectedOutcome("goal", constraints=["c"])


def test_lenient_converts_drops_and_reports() -> None:
    """Lenient mode converts "320", drops what it cannot convert, and reports each change."""
    problems: list[Problem] = []
    task = to_task(
        {
            "name": "n",
            "duration": "2.5",
            "bogus": 1,
            "customer": {"customer_name": "c", "nickname": "x"},
            "steps": [
                {
                    "step_number": "1",
                    "action": "a",
                    "description": "d",
                    "llm_call": {"model": "m", "prompt_tokens": "320", "completion_tokens": "lots"},
                },
                {"action": "no number"},
            ],
        },
        strict=False,
        problems=problems,
    )
    assert task.duration == 2.5
    assert task.description == "n"
    assert task.customer == Customer(customer_name="c")
    assert task.steps == [ExecutionStep(1, "a", "d", llm_call=LlmCall("m", prompt_tokens=320))]
    paths = {p.path for p in problems}
    assert paths == {
        "bogus",
        "customer.nickname",
        "steps[0].llm_call.completion_tokens",
        "steps[1].step_number",
    }
    assert all(p.action == "dropped" for p in problems)


def test_lenient_truncates_visibly_and_clamps() -> None:
    """Over-long strings are cut with a visible mark; numbers are clamped; bad dates replaced."""
    problems: list[Problem] = []
    task = to_task(
        minimal(
            name="x" * 900,
            duration=1e9,
            current_datetime="soon",
            steps=[
                {"step_number": 1, "action": "a", "description": "d", "output_preview": "o" * 2000}
            ],
        ),
        strict=False,
        problems=problems,
    )
    assert len(task.name) == 500 and task.name.endswith(TRUNCATION_MARK)
    assert task.duration == 86_400.0
    assert task.current_datetime.endswith("Z") and task.current_datetime != "soon"
    assert task.steps is not None
    assert len(task.steps[0].output_preview or "") == MAX_PREVIEW_LENGTH
    assert {(p.path, p.action) for p in problems} == {
        ("name", "truncated"),
        ("duration", "clamped"),
        ("current_datetime", "replaced"),
        ("steps[0].output_preview", "truncated"),
    }


def test_lenient_never_raises_on_garbage() -> None:
    """Whatever arrives through logging gives a trace."""
    for garbage in (
        None,
        42,
        "text",
        [1, 2],
        {"name": object()},
        {"steps": "many"},
        {"errors": [None, {"error_type": 1}]},
    ):
        task = to_task(garbage, strict=False)
        assert isinstance(task, TaskData)
        json.loads(encode_task(task))


def test_lenient_does_not_mutate_the_callers_dict() -> None:
    """Dropping a bad field works on a copy."""
    original = minimal(steps=[{"step_number": "x", "action": "a", "description": "d"}])
    snapshot = json.dumps(original)
    to_task(original, strict=False)
    assert json.dumps(original) == snapshot


def _general(obj: Any) -> tuple[TaskData, list[Problem]]:
    """The general lenient path alone (what the fast path must agree with)."""
    problems: list[Problem] = []
    return convert._to_task_lenient(obj, problems), problems


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


_STEP = {
    "step_number": 1,
    "action": "llm_inference",
    "description": "asked",
    "input_preview": "q" * 200,
    "llm_call": {"model": "m", "prompt_tokens": "12", "temperature": 0.2},
}


@pytest.mark.parametrize(
    "trace",
    [
        minimal(steps=[_STEP], llm_usage={"calls": [{"model": "m"}], "estimated_cost_usd": 0.1}),
        minimal(steps=[{**_STEP, "metadata": {"ok": [1, "two", {"three": 3.0}]}}]),
        minimal(steps=[{**_STEP, "metadata": {"nan": math.nan, "kept": 1}}]),
        minimal(steps=[{**_STEP, "metadata": {"none": None, "t": (1, 2), "s": {3, 1}}}]),
        minimal(
            steps=[{**_STEP, "metadata": {"when": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)}}]
        ),
        minimal(steps=[{**_STEP, "metadata": {"obj": _Opaque(), 7: "int key"}}]),
        minimal(steps=[{**_STEP, "metadata": {"k" * 300: "long key"}}]),
        minimal(steps=[{**_STEP, "output_preview": "o" * 600}]),
        minimal(steps=[{**_STEP, "llm_call": {"model": "m", "temperature": math.inf}}]),
        minimal(name="lone \ud800 surrogate"),
        minimal(name="   "),
        minimal(description="d" * 10_001),
        minimal(duration=-1),
        minimal(duration="2.5"),
        minimal(current_datetime="later"),
        minimal(bogus=1),
        minimal(sections={"customer": {"customer_name": "c"}}),
        minimal(sales={"deal_value": math.nan}),
        minimal(development={"performance_metrics": {"p99_ms": 12, "bad": math.inf}}),
        minimal(development={"performance_metrics": {"p99_ms": 12}, "test_coverage": 0.8}),
        minimal(general={"tags": ["a", None]}),
        minimal(**{"key \ud8d0 with a lone surrogate": 1}),
        minimal(steps=[{**_STEP, "metadata": {"key \ud8d0": 1}}]),
        minimal(customer={"customer_name": "c", "\ud800": "x"}),
        minimal(steps=[{**_STEP, "metadata": {"deep": [[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}}]),
    ],
)
def test_lenient_fast_path_agrees_with_the_general_path(trace: dict[str, Any]) -> None:
    """Whichever path to_task takes, the trace, its wire body and the problems are the same."""
    with freeze_time("2026-11-22T08:51:00Z"):  # a replaced timestamp is "now" on both paths
        expected, expected_problems = _general(trace)
        problems: list[Problem] = []
        task, body = convert.lenient_task(trace, problems)
    assert task == expected
    assert problems == expected_problems
    assert encode_task(task) == encode_task(expected)
    if body is not None:
        assert not expected_problems  # only a trace that needed no fixing skips the general path
        assert body == encode_task(expected)


# Generating nested values is slow on a busy machine: that is no failure of the property.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.text(max_size=5) | st.integers(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda children: (
                st.lists(children, max_size=3)
                | st.tuples(children)
                | st.dictionaries(st.text(max_size=5), children, max_size=3)
            ),
            max_leaves=12,
        ),
        max_size=4,
    ),
    st.text(min_size=0, max_size=8),
)
def test_lenient_fast_path_agrees_on_any_metadata(metadata: dict[Any, Any], name: str) -> None:
    """Property: free-form metadata and odd names give the same trace on either path."""
    trace = minimal(name=name or "n", steps=[{**_STEP, "metadata": metadata}])
    expected, expected_problems = _general(trace)
    problems: list[Problem] = []
    task, _ = convert.lenient_task(trace, problems)
    assert encode_task(task) == encode_task(expected)
    assert problems == expected_problems


def test_lenient_fast_path_is_taken_for_a_clean_trace() -> None:
    """A trace that needs no fixing comes back with its body encoded on the way."""
    trace = minimal(steps=[_STEP], development={"performance_metrics": {"p99_ms": 12}})
    task, body = convert.lenient_task(trace)
    assert body is not None
    assert body == encode_task(task)
    assert task.steps is not None
    assert task.steps[0].llm_call == LlmCall("m", prompt_tokens=12, temperature=0.2)


def test_the_inlined_lenient_checks_match_the_model() -> None:
    """The checks inlined for steps and LLM usage are the ones the model calls for."""
    assert convert._INLINED


def test_decode_task_reads_wire_bodies_and_reports_bad_json() -> None:
    """decode_task accepts the nested-sections wire shape and names bad JSON."""
    body = encode_task(TaskData("n", "d", NOW, 1.0, customer=Customer("A")))
    assert decode_task(body).customer == Customer("A")
    with pytest.raises(ValidationError, match="invalid JSON"):
        decode_task(b"{nope")
    with pytest.raises(ValidationError, match="expected a JSON object, got array"):
        decode_task(b"[]")


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_json_safe_handles_awkward_values() -> None:
    """Bytes, sets, NaN, surrogates, cycles, failing repr: all become JSON-safe, nothing raises."""
    cycle: list[Any] = [1]
    cycle.append(cycle)
    value = json_safe(
        {
            "b": b"\xffbytes",
            "s": {3, 1, 2},
            "nan": math.nan,
            "inf": -math.inf,
            "sur": "a\ud800b",
            "cycle": cycle,
            "bad": _BadRepr(),
            7: "int key",
            "t": (1, None),
            "big": "x" * 10_000,
        }
    )
    assert value["b"] == "\ufffdbytes"
    assert value["s"] == [1, 2, 3]
    assert "nan" not in value and "inf" not in value
    assert value["sur"] == "a\ufffdb"
    assert value["cycle"] == [1, "<recursive>"]
    assert value["bad"] == "<unrepresentable _BadRepr>"
    assert value["7"] == "int key"
    assert value["t"] == [1]
    assert len(value["big"]) == 8192
    json.dumps(value, allow_nan=False).encode("utf-8")


@pytest.mark.parametrize("limit", [640, 4300])
def test_an_int_too_long_to_write_becomes_a_marker(limit: int) -> None:
    """Python will not write an int of more digits than its limit as text: one in a free-form
    value would make the whole trace impossible to encode, so it becomes a marker; every int
    the limit allows stays a number, as do subclasses of int that fit."""
    was = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(limit)
    try:
        longest = 10 ** (limit - 1)
        value = json_safe({"n": 10**5000, "neg": -(10**5000), "fits": longest, "flag": True})
        assert value == {
            "n": "<int of about 5001 digits>",
            "neg": "<int of about 5001 digits>",
            "fits": longest,
            "flag": True,
        }
        assert json_safe([_Int(10**limit), _Int(7)]) == [f"<int of about {limit + 1} digits>", 7]
        problems: list[Problem] = []
        task, _ = lenient_task(_with_metadata({"x": 10**limit, "y": 1}), problems)
        assert task.steps is not None
        assert task.steps[0].metadata == {"x": f"<int of about {limit + 1} digits>", "y": 1}
        assert b'"x":"<int of about' in encode_task(task)
    finally:
        sys.set_int_max_str_digits(was)


def test_nesting_too_deep_to_encode_is_a_clear_error_not_a_recursion_error() -> None:
    """Containers nested past the recursion limit: encode_task raises ValueError, decode_task a
    ValidationError, each saying why (a RecursionError says nothing to a caller)."""
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(50_000):  # past any interpreter's recursion limit (3.13's is 10,000)
        inner["a"] = {}
        inner = inner["a"]
    task = to_task(_with_metadata({"deep": deep}))
    with pytest.raises(ValueError, match="nested too deeply"):
        encode_task(task)
    with pytest.raises(ValidationError, match="nested too deeply"):
        decode_task(b"[" * 100_000)
    lenient = to_task(_with_metadata({"deep": deep}), strict=False)
    assert b"<too deep>" in encode_task(lenient)


class _Int(int):
    pass


def _with_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "n",
        "description": "d",
        "current_datetime": "2026-01-01T00:00:00Z",
        "duration": 1.0,
        "steps": [{"step_number": 1, "action": "a", "description": "d", "metadata": metadata}],
    }


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4)
            | st.frozensets(st.integers(), max_size=3)
        ),
        max_leaves=20,
    )
)
def test_json_safe_output_always_encodes(value: Any) -> None:
    """Property: json_safe output always encodes as strict UTF-8 JSON."""
    json.dumps(json_safe(value), allow_nan=False).encode("utf-8")


def test_truncate_marks_and_respects_limit() -> None:
    """truncate never exceeds the limit and leaves short text alone."""
    assert truncate("short", 10) == "short"
    cut = truncate("x" * 50, 20)
    assert len(cut) == 20 and cut.endswith(TRUNCATION_MARK)


def _big_task(steps: int, preview: int) -> TaskData:
    return TaskData(
        "big",
        "desc",
        NOW,
        1.0,
        expected_outcome=ExpectedOutcome("goal"),
        errors=[ErrorDetail("E", "kept")],
        output_summary="o" * 50_000,
        input_summary="i" * 50_000,
        steps=[
            ExecutionStep(
                i,
                "log",
                f"step {i}",
                input_preview="p" * preview,
                output_preview="q" * preview,
                metadata={"blob": "m" * 5000},
            )
            for i in range(1, steps + 1)
        ],
    )


def test_fit_task_returns_small_traces_unchanged() -> None:
    """A trace under the limit is returned as is (same object)."""
    task = _big_task(3, 10)
    assert fit_task(task) is task


def test_fit_task_shrinks_previews_first() -> None:
    """Previews and step detail go first; steps and summaries survive when that is enough."""
    task = _big_task(120, 500)
    limit = len(encode_task(task)) - 100_000
    fitted = fit_task(task, max_bytes=limit)
    assert len(encode_task(fitted)) <= limit
    assert fitted.steps is not None and len(fitted.steps) == 120
    assert fitted.output_summary == task.output_summary
    assert fitted.environment is not None and fitted.environment.custom_tags is not None
    assert fitted.environment.custom_tags["truncated"] == "true"
    assert "step previews" in fitted.environment.custom_tags["truncated_fields"]
    assert (
        task.steps is not None and len(task.steps[0].input_preview or "") == 500
    )  # original untouched


def test_fit_task_says_when_it_left_step_metadata_out() -> None:
    """Step metadata over 1 KiB is replaced by a marker, and truncated_fields says so."""
    task = _big_task(120, 500)  # each step's metadata is a 5 KB blob
    small = _big_task(120, 500)
    for step in small.steps or []:
        step.metadata = {"k": "v"}
    fitted = fit_task(task, max_bytes=len(encode_task(task)) - 100_000)
    assert fitted.steps is not None
    assert fitted.steps[0].metadata == {"truncated": "metadata over 1 KiB left out"}
    assert fitted.environment is not None and fitted.environment.custom_tags is not None
    assert "step metadata over 1 KiB" in fitted.environment.custom_tags["truncated_fields"]
    plain = fit_task(small, max_bytes=len(encode_task(small)) - 100_000)
    assert plain.environment is not None and plain.environment.custom_tags is not None
    assert "metadata" not in plain.environment.custom_tags["truncated_fields"]


def test_fit_task_drops_middle_steps_keeping_first_and_last() -> None:
    """Middle steps go next, with a marker step saying how many were left out."""
    task = _big_task(300, 500)
    fitted = fit_task(task, max_bytes=200_000)
    body = encode_task(fitted)
    assert len(body) <= 200_000
    assert fitted.steps is not None
    assert fitted.steps[0].step_number == 1 and fitted.steps[-1].step_number == 300
    marker = [s for s in fitted.steps if s.action == "truncated"]
    assert len(marker) == 1
    left_out = 300 - (len(fitted.steps) - 1)
    assert marker[0].description.startswith(f"{left_out} steps left out")
    assert (fitted.name, fitted.description, fitted.current_datetime, fitted.duration) == (
        task.name,
        task.description,
        task.current_datetime,
        task.duration,
    )
    assert fitted.errors == task.errors and fitted.expected_outcome == task.expected_outcome


def test_fit_task_cuts_summary_tails_when_needed() -> None:
    """With few steps, the summaries lose their tails: first what the platform's judge does not
    read (past 3,000 characters of input_summary, 8,000 of output_summary), then the rest."""
    task = _big_task(2, 10)
    task.output_summary = "o" * 2_000_000
    fitted = fit_task(task)
    assert len(encode_task(fitted)) <= MAX_BODY_BYTES
    assert fitted.output_summary is not None and fitted.output_summary.endswith(TRUNCATION_MARK)
    assert len(fitted.output_summary) > 900_000
    assert fitted.input_summary is not None and len(fitted.input_summary) == 3_000
    assert task.input_summary is not None
    assert fitted.input_summary.startswith(task.input_summary[:2_000])


def test_fit_task_keeps_the_graded_answer_over_a_huge_input() -> None:
    """A huge retrieved context and a modest answer: the answer is kept whole."""
    answer = "Refund issued for order #1234; customer notified. " * 100
    task = TaskData("n", "d", NOW, 1.0, input_summary="context " * 200_000, output_summary=answer)
    fitted = fit_task(task)
    assert len(encode_task(fitted)) <= MAX_BODY_BYTES
    assert fitted.output_summary == answer
    assert fitted.environment is not None and fitted.environment.custom_tags is not None
    assert fitted.environment.custom_tags["truncated_fields"] == "input_summary"
    alone = fit_task(TaskData("n", "d", NOW, 1.0, output_summary="o" * 2_000_000))
    assert alone.environment is not None and alone.environment.custom_tags is not None
    assert alone.environment.custom_tags["truncated_fields"] == "output_summary"


def test_fit_task_last_resort_cuts_long_strings() -> None:
    """Even a trace whose size is in unexpected places ends up within the limit."""
    task = TaskData(
        "n",
        "d",
        NOW,
        1.0,
        customer=Customer(customer_address="a" * 3_000_000),
        errors=[ErrorDetail("E", "m", stack_trace="s" * 100_000)],
    )
    fitted = fit_task(task)
    assert len(encode_task(fitted)) <= MAX_BODY_BYTES
    assert fitted.errors is not None and len(fitted.errors) == 1


def test_fit_task_keeps_every_error_but_cuts_long_messages_when_it_must() -> None:
    """Many errors with long messages: every error stays, their messages are cut, and the
    trace fits (it was lost whole as too large)."""
    errors = [
        ErrorDetail(f"E{n}", f"{n} " + "m" * 10_000, stack_trace="s" * 5_000) for n in range(120)
    ]
    fitted = fit_task(TaskData("n", "d", NOW, 1.0, errors=errors))
    assert len(encode_task(fitted)) <= MAX_BODY_BYTES
    assert fitted.errors is not None
    assert [e.error_type for e in fitted.errors] == [f"E{n}" for n in range(120)]
    assert all(e.message.startswith(f"{n} m") for n, e in enumerate(fitted.errors))
    assert len(fitted.errors[0].message) < 10_000
    assert fitted.environment is not None and fitted.environment.custom_tags is not None
    assert fitted.environment.custom_tags["truncated_fields"] == "error messages"


def test_fit_task_keeps_floats_as_the_official_client_writes_them() -> None:
    """A trace with exponent-form floats (a tiny temperature, metadata) fits, and they are
    still written as json.dumps writes them (fit_task raised on them)."""
    steps = [
        ExecutionStep(
            n,
            "llm_inference",
            "d" * 3_000,
            llm_call=LlmCall("m", temperature=1e-05),
            metadata={"cost": 2.5e-05},
        )
        for n in range(1, 600)
    ]
    fitted = fit_task(TaskData("n", "d", NOW, 1e-05, steps=steps))
    body = encode_task(fitted)
    assert len(body) <= MAX_BODY_BYTES
    assert b'"duration":1e-05' in body
    assert b'"temperature":1e-05' in body and b'"metadata":{"cost":2.5e-05}' in body
    assert b"0.00001" not in body and b"0.000025" not in body


# --- lenient coercion keeps the trace whatever a key holds --------------------------------------


_PLAIN_STEP: dict[str, Any] = {"step_number": 1, "action": "a", "description": "d"}


@pytest.mark.parametrize(
    "fields",
    [
        {"llm_usage": {"x.y": 1}},
        {"llm_usage": {"a`b[0].c": 1}},
        {"steps": [_PLAIN_STEP | {"tool_call": {"tool_name": "t", "http.status": 200}}]},
        {"steps": [_PLAIN_STEP | {"llm_call": {"model": "m", "[0]": 1}}]},
    ],
)
def test_lenient_drops_an_unknown_key_holding_path_characters(fields: dict[str, Any]) -> None:
    problems: list[Problem] = []
    task = to_task({"name": "kept", "description": "d", **fields}, strict=False, problems=problems)
    assert task.name == "kept"
    assert [p.action for p in problems] == ["dropped"]
    assert problems[0].reason == "unknown field"
    if "steps" in fields:
        assert task.steps is not None and task.steps[0].action == "a"


def test_lenient_drops_a_value_inside_a_dict_keyed_with_a_dot() -> None:
    problems: list[Problem] = []
    task = to_task(
        {
            "name": "kept",
            "description": "d",
            "environment": {"custom_tags": {"a.b": [3], "c": "d"}},
        },
        strict=False,
        problems=problems,
    )
    assert task.name == "kept"
    assert task.environment is not None and task.environment.custom_tags == {"c": "d"}
    assert [(p.path, p.action) for p in problems] == [("environment.custom_tags.a.b", "dropped")]


@pytest.mark.parametrize("duration", [10**400, -(10**400)])
def test_lenient_replaces_a_duration_beyond_the_float_range(duration: int) -> None:
    problems: list[Problem] = []
    task = to_task(
        {"name": "kept", "description": "d", "duration": duration}, strict=False, problems=problems
    )
    assert (task.name, task.duration) == ("kept", 0.0)
    assert [(p.path, p.action) for p in problems] == [("duration", "dropped")]


# --- values that raise while read, nulls and non-finite floats in free-form values --------------


def test_json_safe_never_raises_for_values_that_raise_when_read() -> None:
    """items(), __iter__, __lt__ (sorting a set) raising: that value becomes its repr (or a
    placeholder when the repr raises too), as plain text; the rest is copied."""

    class BadBoth(list[Any]):
        def __iter__(self) -> Any:
            raise RuntimeError("iter")

        def __repr__(self) -> str:
            raise RuntimeError("repr")

    value = json_safe(
        {
            "m": ItemsRaise(a=1),
            "l": [IterRaises([1]), 2],
            "s": {UnorderableRaises(), UnorderableRaises()},
            "both": BadBoth(),
        }
    )
    assert value == {
        "m": "{'a': 1}",
        "l": ["[1]", 2],
        "s": ["u", "u"],
        "both": "<unrepresentable BadBoth>",
    }
    assert all(type(text) is str for text in (value["m"], value["l"][0], value["both"]))
    assert json_safe(ItemsRaise(a=1)) == "{'a': 1}"


def test_lenient_reading_reports_each_unreadable_value_at_its_path() -> None:
    """to_task(strict=False) keeps the trace: an unreadable value is replaced by its repr and
    reported there; one where an object belongs is then dropped, reported too."""
    problems: list[Problem] = []
    task = to_task(
        minimal(
            name="x" * 600,
            customer=ItemsRaise(customer_name="c"),
            steps=[{**_STEP, "metadata": {"m": ItemsRaise(a=1), "ok": 1}}],
        ),
        strict=False,
        problems=problems,
    )
    assert task.steps is not None
    assert task.steps[0].metadata == {"m": "{'a': 1}", "ok": 1}
    assert task.customer is None
    found = [(p.path, p.action) for p in problems]
    assert ("steps[0].metadata.m", "replaced") in found
    assert ("customer", "replaced") in found
    assert ("customer", "dropped") in found
    assert not any(p.path == "" for p in problems)


def test_a_trace_that_cannot_be_read_at_all_is_reported_at_the_top() -> None:
    """The whole dict raising when read is what the exporter counts as invalid: path ""."""
    problems: list[Problem] = []
    to_task(ItemsRaise(name="n"), strict=False, problems=problems)
    assert [(p.path, p.action) for p in problems] == [("", "replaced")]


_LOG_STEP = {"step_number": 1, "action": "log", "description": "d"}


@pytest.mark.parametrize(
    ("trace", "message"),
    [
        (
            minimal(steps=[{**_LOG_STEP, "metadata": {"x": math.nan}}]),
            "steps[0].metadata.x: expected a finite number, got nan",
        ),
        (
            minimal(steps=[{**_LOG_STEP, "metadata": {"x": None}}]),
            "steps[0].metadata.x: null is not sent (the body carries no nulls): leave it out",
        ),
        (
            minimal(steps=[{**_LOG_STEP, "metadata": {"a": [1, {"b": (2, -math.inf)}]}}]),
            "steps[0].metadata.a[1].b[1]: expected a finite number, got -inf",
        ),
        (
            minimal(development={"performance_metrics": {"p99": None}}),
            "development.performance_metrics.p99: null is not sent (the body carries no nulls): "
            "leave it out",
        ),
        (
            minimal(sections={"development": {"performance_metrics": {"p99": math.inf}}}),
            "development.performance_metrics.p99: expected a finite number, got inf",
        ),
    ],
)
def test_strict_refuses_null_and_non_finite_floats_in_free_form_values(
    trace: dict[str, Any], message: str
) -> None:
    """Either would be written as null: strict reading names where, as for any other field."""
    with pytest.raises(ValidationError) as info:
        to_task(trace)
    assert str(info.value) == message
    assert info.value.path == message.split(":", maxsplit=1)[0]


def test_lenient_leaves_out_what_ends_up_empty_after_dropping_nulls() -> None:
    """NaN and None are dropped from free-form values, and so is a dict or list they leave
    empty (metadata included); a dict given empty is sent as given, as the official client
    sends it."""
    cases: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
        ({"x": None}, None),
        ({"m": {"x": None}, "k": 1}, {"k": 1}),
        ({"l": [None, math.nan], "e": {}}, {"e": {}}),
    ]
    for metadata, expected in cases:
        task = to_task(minimal(steps=[{**_STEP, "metadata": metadata}]), strict=False)
        assert task.steps is not None
        assert task.steps[0].metadata == expected
        assert b"null" not in encode_task(task)
        assert b'"metadata":{}' not in encode_task(task)


def test_a_taskdata_with_exponent_form_floats_can_be_checked_and_shrunk() -> None:
    """to_task and fit_task copy a TaskData through builtins: floats the model marked for their
    exponent form (2.5e-05) are floats there, not an unsupported type."""
    task = TaskData("n", "d", NOW, 5e-05, input_summary="x" * (MAX_BODY_BYTES + 10))
    assert to_task(task, strict=False).duration == 5e-05
    fitted = fit_task(task)
    assert len(encode_task(fitted)) <= MAX_BODY_BYTES
    assert encode_task(fitted).startswith(
        b'{"name":"n","description":"d","current_datetime":"' + NOW.encode() + b'","duration":5e-05'
    )
    small = TaskData("n", "d", NOW, 5e-05)
    assert to_task(small) == small


def test_lenient_custom_tags_keep_every_tag_they_can() -> None:
    """Custom tags are text: a number or bool (which the official client's dataclass takes)
    is written as text, anything else dropped alone, never the whole mapping with it."""
    problems: list[convert.Problem] = []
    task = convert.to_task(
        {
            "name": "n",
            "description": "d",
            "current_datetime": "2026-01-01T00:00:00Z",
            "duration": 1.0,
            "environment": {
                "region": "eu",
                "custom_tags": {"team": "x", "attempt": 3, "ratio": 0.5, "ok": True, "bad": [1]},
            },
        },
        strict=False,
        problems=problems,
    )
    assert task.environment is not None
    assert task.environment.custom_tags == {
        "team": "x",
        "attempt": "3",
        "ratio": "0.5",
        "ok": "true",
    }
    assert sorted((p.path, p.action) for p in problems) == [
        ("environment.custom_tags.attempt", "replaced"),
        ("environment.custom_tags.bad", "dropped"),
        ("environment.custom_tags.ok", "replaced"),
        ("environment.custom_tags.ratio", "replaced"),
    ]
