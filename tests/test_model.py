"""The wire model: exact bodies, key order, no nulls, empties left out, round trips."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infinium_logging.convert import decode_task, to_task
from infinium_logging.model import (
    ApiResponse,
    BatchResult,
    Customer,
    Development,
    EnvironmentContext,
    ErrorDetail,
    ExecutionStep,
    Executive,
    ExpectedOutcome,
    General,
    LlmCall,
    LlmUsage,
    Marketing,
    Project,
    Research,
    Sales,
    Support,
    TaskData,
    TimeTracking,
    ToolCall,
    encode_task,
    format_timestamp,
    utc_now_iso,
)
from infinium_logging.model import (
    Content as ContentSection,
)

VECTORS_PATH = (
    Path(__file__).resolve().parents[2] / "shared" / "wire" / "official-client-vectors.json"
)
LOCAL_VECTORS = Path(__file__).resolve().parent / "data" / "official-client-vectors.json"


def _vectors() -> list[dict[str, Any]]:
    path = VECTORS_PATH if VECTORS_PATH.exists() else LOCAL_VECTORS
    data: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def base(**fields: Any) -> TaskData:
    return TaskData("t", "d", "2026-11-22T08:51:00.000000Z", 1.5, **fields)


HEAD = (
    '{"name":"t","description":"d","current_datetime":"2026-11-22T08:51:00.000000Z","duration":1.5'
)


@pytest.mark.parametrize(
    "vector", _vectors(), ids=lambda v: str(v.get("name", v["input"]["name"]))[:30]
)
def test_official_client_vectors_byte_for_byte(vector: dict[str, Any]) -> None:
    """encode_task(to_task(input)) is exactly the body the official client sends."""
    assert encode_task(to_task(vector["input"])) == vector["body"].encode("utf-8")


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: str(v["input"]["name"])[:30])
def test_vectors_decode_back_from_the_wire(vector: dict[str, Any]) -> None:
    """A wire body decodes (sections nested) to a trace that encodes to the same bytes."""
    body = vector["body"].encode("utf-8")
    assert encode_task(decode_task(body)) == body


def test_minimal_trace_has_the_four_required_keys_only() -> None:
    """Nothing but the required fields is sent for a bare trace; duration is a float."""
    assert encode_task(TaskData("t", "d", "2026-11-22T08:51:00.000000Z", 2)) == (
        b'{"name":"t","description":"d","current_datetime":"2026-11-22T08:51:00.000000Z",'
        b'"duration":2.0}'
    )


def test_top_level_key_order_follows_platform_priority() -> None:
    """Summaries, expected outcome, steps, errors, llm_usage, sections, environment, in that order."""
    task = base(
        environment=EnvironmentContext(framework="logging"),
        general=General(tags=["x"]),
        llm_usage=LlmUsage(model="m"),
        errors=[ErrorDetail("E", "m")],
        steps=[ExecutionStep(1, "log", "s")],
        expected_outcome=ExpectedOutcome("goal"),
        output_summary="out",
        input_summary="in",
    )
    keys = list(json.loads(encode_task(task)))
    assert keys == [
        "name",
        "description",
        "current_datetime",
        "duration",
        "input_summary",
        "output_summary",
        "expected_outcome",
        "steps",
        "errors",
        "llm_usage",
        "sections",
        "environment",
    ]


def test_every_section_nested_in_documented_order() -> None:
    """All eleven domain sections go under "sections", in the documented order, never top level."""
    task = base(
        general=General(agent_notes="g"),
        executive=Executive(meeting_type="standup"),
        development=Development(bugs_found=1),
        project=Project(project_name="p"),
        research=Research(research_topic="r"),
        content=ContentSection(content_type="blog"),
        marketing=Marketing(campaign_name="c"),
        sales=Sales(deal_value=10.5),
        support=Support(follow_up_required=False),
        customer=Customer(customer_name="ACME"),
        time_tracking=TimeTracking(start_time="a", end_time="b"),
    )
    body = encode_task(task)
    assert body == (
        HEAD.encode() + b',"sections":{"time_tracking":{"start_time":"a","end_time":"b"},'
        b'"customer":{"customer_name":"ACME"},"support":{"follow_up_required":false},'
        b'"sales":{"deal_value":10.5},"marketing":{"campaign_name":"c"},'
        b'"content":{"content_type":"blog"},"research":{"research_topic":"r"},'
        b'"project":{"project_name":"p"},"development":{"bugs_found":1},'
        b'"executive":{"meeting_type":"standup"},"general":{"agent_notes":"g"}}}'
    )


def test_empty_nested_objects_and_lists_are_left_out() -> None:
    """Empty sections, an empty llm_usage/environment and empty lists never reach the wire."""
    task = base(
        customer=Customer(),
        llm_usage=LlmUsage(calls=[]),
        environment=EnvironmentContext(custom_tags=None),
        steps=[],
        errors=[],
        research=Research(key_findings=[None, None]),  # type: ignore[list-item]
        general=General(tags=["a", None]),  # type: ignore[list-item]
    )
    assert encode_task(task) == HEAD.encode() + b',"sections":{"general":{"tags":["a"]}}}'


def test_empties_created_after_construction_are_still_left_out() -> None:
    """Top-level fields set to empty values after the trace was built are re-checked on encode."""
    task = base()
    task.customer = Customer()
    task.steps = []
    task.environment = EnvironmentContext()
    assert encode_task(task) == HEAD.encode() + b"}"


def test_error_detail_defaults_are_always_sent() -> None:
    """recoverable=false and retry_count=0 are sent even when nobody set them; None fields are not."""
    task = base(errors=[ErrorDetail("KeyError", "'k'")])
    assert encode_task(task).endswith(
        b'"errors":[{"error_type":"KeyError","message":"\'k\'","recoverable":false,"retry_count":0}]}'
    )


def test_nested_error_details_keep_their_defaults() -> None:
    """ErrorDetail inside a step, a tool call and general.errors_encountered all carry the defaults."""
    err = ErrorDetail("T", "m")
    task = base(
        steps=[ExecutionStep(1, "tool_use", "s", error=err, tool_call=ToolCall("crm", error=err))],
        general=General(errors_encountered=[err]),
    )
    body = encode_task(task)
    assert body.count(b'"recoverable":false,"retry_count":0') == 3


def test_free_form_dicts_are_sent_as_given() -> None:
    """metadata, custom_tags and performance_metrics keep their content and key order."""
    task = base(
        steps=[ExecutionStep(1, "log", "s", metadata={"z": 1, "a": [1, 2], "e": {}})],
        development=Development(performance_metrics={"p99_ms": 12}),
        environment=EnvironmentContext(custom_tags={"team": "search"}),
    )
    body = encode_task(task)
    assert b'"metadata":{"z":1,"a":[1,2],"e":{}}' in body
    assert b'"development":{"performance_metrics":{"p99_ms":12}}' in body
    assert body.endswith(b'"environment":{"custom_tags":{"team":"search"}}}')


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.5e-05, b"2.5e-05"),
        (1e16, b"1e+16"),
        (1e-07, b"1e-07"),
        (0.0421, b"0.0421"),
        (3.0, b"3.0"),
    ],
)
def test_floats_are_written_as_the_official_client_writes_them(value: float, text: bytes) -> None:
    """Python's float repr, exponent form included (msgspec alone would write 0.000025)."""
    task = base(llm_usage=LlmUsage(estimated_cost_usd=value))
    assert encode_task(task).endswith(b'"llm_usage":{"estimated_cost_usd":' + text + b"}}")
    assert json.loads(encode_task(task))["llm_usage"]["estimated_cost_usd"] == value


def test_floats_in_free_form_values_are_written_as_the_official_client_writes_them() -> None:
    """In metadata, custom_tags and performance_metrics too, nested or not; the dict given
    is not changed (the struct holds a marked copy)."""
    metadata = {"cost": 2.5e-05, "big": 1e20, "nested": [1.5e-07, {"x": 1e300}], "ok": 0.5}
    task = base(
        steps=[ExecutionStep(1, "log", "s", metadata=metadata)],
        development=Development(performance_metrics={"p99": 1e-9}),
        environment=EnvironmentContext(custom_tags={"ratio": 1e16}),  # type: ignore[dict-item]
    )
    body = encode_task(task)
    assert b'"metadata":{"cost":2.5e-05,"big":1e+20,"nested":[1.5e-07,{"x":1e+300}],"ok":0.5}' in (
        body
    )
    assert b'"performance_metrics":{"p99":1e-09}' in body
    assert b'"custom_tags":{"ratio":1e+16}' in body
    assert body == _official_body(task)
    assert type(metadata["cost"]) is float and type(metadata["nested"][0]) is float  # type: ignore[index]
    step_only = base(steps=[ExecutionStep(1, "log", "s", metadata=metadata)])
    assert decode_task(encode_task(step_only)) == step_only


def test_subclasses_of_float_str_and_int_are_written_as_their_base_type() -> None:
    """numpy's float64 and the like (float, str, int subclasses msgspec does not take), and
    dict subclasses, anywhere: the body json.dumps would write, not an encoding error."""

    class Score(float):
        pass

    class Label(str):
        pass

    class Count(int):
        pass

    metadata = collections.OrderedDict(score=Score(0.93), tiny=Score(1e-07), label=Label("x"))
    task = base(
        steps=[
            ExecutionStep(
                Count(1),
                Label("tool_use"),
                "search",
                llm_call=LlmCall(Label("gpt-4o"), temperature=Score(1e-05)),
                metadata=metadata,
            )
        ],
        sales=Sales(deal_value=Score(12.5)),
    )
    body = encode_task(task)
    assert body == _official_body(task)
    assert b'"temperature":1e-05' in body
    assert b'"metadata":{"score":0.93,"tiny":1e-07,"label":"x"}' in body
    assert to_task(task) is not None  # strict reading takes them too
    assert decode_task(body) == to_task(task)


def test_steps_and_environments_are_normalised_as_every_model_is() -> None:
    """ExecutionStep and EnvironmentContext mark their free-form dicts, then normalise as every
    model does: with every nested object set, the body is the official client's."""
    step = ExecutionStep(
        1,
        "tool_use",
        "search",
        duration_ms=5,
        error=ErrorDetail("Timeout", "slow", stack_trace="trace"),
        tool_call=ToolCall("search", http_status=200),
        llm_call=LlmCall("gpt-4o", temperature=2e-05),
        metadata={"tiny": 1e-07, "nested": [1, 2.5e-08]},
    )
    environment = EnvironmentContext(framework="f", custom_tags={"team": "search"})
    task = base(steps=[step], environment=environment)
    body = encode_task(task)
    assert body == _official_body(task)
    assert b'"metadata":{"tiny":1e-07,"nested":[1,2.5e-08]}' in body
    assert b'"temperature":2e-05' in body
    assert b'"custom_tags":{"team":"search"}' in body


def test_whole_numbers_in_float_fields_stay_whole_as_the_official_client_writes_them() -> None:
    """``temperature=0``, ``deal_value=5000``: the official client writes ``0`` and ``5000``;
    read by to_task (strict or lenient) or from the wire they stay so (they became ``0.0``).
    ``duration`` is the exception: always a float (the official ``send_task`` makes it one)."""
    fields = {
        "name": "n",
        "description": "d",
        "current_datetime": "2026-11-22T08:51:00.000000Z",
        "duration": 3,
        "steps": [
            {
                "step_number": 1,
                "action": "a",
                "description": "d",
                "llm_call": {"model": "m", "temperature": 0},
            }
        ],
        "sections": {"sales": {"deal_value": 5000, "conversion_rate": 12345678901234567890}},
    }
    expected = (
        b'"duration":3.0,"steps":[{"step_number":1,"action":"a","description":"d",'
        b'"llm_call":{"model":"m","temperature":0}}],'
        b'"sections":{"sales":{"deal_value":5000,"conversion_rate":12345678901234567890}}}'
    )
    for strict in (True, False):
        body = encode_task(to_task(fields, strict=strict))
        assert body.endswith(expected)
        assert encode_task(decode_task(body)) == body


def test_exponent_float_in_duration() -> None:
    """A tiny duration is written in exponent form like json.dumps does."""
    task = TaskData("t", "d", "2026-11-22T08:51:00.000000Z", 5e-05)
    assert encode_task(task).endswith(b'"duration":5e-05}')


def test_unicode_is_utf8_not_escaped() -> None:
    """Non-ASCII text goes out as UTF-8, control characters escaped as json.dumps does."""
    task = TaskData("Résumé – 日本語 ✓", 'a"b\\c\n\x00', "2026-11-22T08:51:00.000000Z", 1.0)
    body = encode_task(task)
    assert body == json.dumps(
        {
            "name": task.name,
            "description": task.description,
            "current_datetime": task.current_datetime,
            "duration": 1.0,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


def test_api_response_and_batch_result() -> None:
    """ApiResponse exposes the trace id; BatchResult counts its total and has the JS aliases."""
    ok = ApiResponse(True, 200, "ok", {"traceId": "abc"})
    assert ok.trace_id == "abc"
    assert ApiResponse(False).trace_id is None
    result = BatchResult(successful=2, failed=1, results=[ok, ok, ApiResponse(False)], errors=["x"])
    assert (result.total, result.total_tasks, result.successful_tasks, result.failed_tasks) == (
        3,
        3,
        2,
        1,
    )


def test_timestamps_are_utc_iso_with_microseconds_and_z() -> None:
    """Library-made timestamps have the documented shape."""
    assert format_timestamp(0.5) == "1970-01-01T00:00:00.500000Z"
    now = utc_now_iso()
    assert len(now) == 27 and now.endswith("Z") and now[10] == "T"


# --- property: what is encoded decodes to the same trace ------------------------------------

_text = st.text(max_size=20)
_text_base = st.text(max_size=8)
_opt_text = st.none() | _text
_small_int = st.integers(min_value=0, max_value=10**6)
_float = st.floats(min_value=-1e18, max_value=1e18, allow_nan=False, allow_infinity=False)
#: What a float field is given: the official client writes a whole number as given (``0``).
_number = _float | st.integers(min_value=-(10**20), max_value=10**20)
#: Free-form values as JSON carries them, floats of every magnitude included (json.dumps
#: writes 1e+20 and 2.5e-05 where msgspec alone writes 1e20 and 0.000025).
_free_value = st.recursive(
    st.booleans() | st.integers() | _text_base | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(_text_base, children, max_size=3)
    ),
    max_leaves=8,
)

_error = st.builds(
    ErrorDetail,
    error_type=_text,
    message=_text,
    recoverable=st.booleans(),
    retry_count=_small_int,
    stack_trace=_opt_text,
    error_code=_opt_text,
)
_llm_call = st.builds(
    LlmCall,
    model=_text,
    provider=_opt_text,
    prompt_tokens=st.none() | _small_int,
    completion_tokens=st.none() | _small_int,
    latency_ms=st.none() | _small_int,
    temperature=st.none() | _number,
    purpose=_opt_text,
)
_step = st.builds(
    ExecutionStep,
    step_number=_small_int,
    action=_text,
    description=_text,
    duration_ms=st.none() | _small_int,
    input_preview=_opt_text,
    output_preview=_opt_text,
    error=st.none() | _error,
    tool_call=st.none()
    | st.builds(
        ToolCall, tool_name=_text, http_status=st.none() | _small_int, error=st.none() | _error
    ),
    llm_call=st.none() | _llm_call,
    metadata=st.none() | st.dictionaries(_text, _free_value, max_size=3),
)
_task = st.builds(
    TaskData,
    name=st.text(min_size=1, max_size=20).filter(str.strip),
    description=st.text(min_size=1, max_size=20).filter(str.strip),
    current_datetime=st.floats(min_value=0, max_value=4e9).map(format_timestamp),
    duration=st.floats(min_value=0, max_value=86_400),
    customer=st.none() | st.builds(Customer, customer_name=_opt_text, customer_email=_opt_text),
    research=st.none()
    | st.builds(
        Research,
        key_findings=st.none() | st.lists(_text, max_size=3),
        sources_consulted=st.none() | _small_int,
    ),
    general=st.none()
    | st.builds(
        General,
        errors_encountered=st.none() | st.lists(_error, max_size=2),
        tags=st.none() | st.lists(_text, max_size=2),
    ),
    sales=st.none() | st.builds(Sales, deal_value=st.none() | _number),
    development=st.none()
    | st.builds(
        Development,
        performance_metrics=st.none() | _text | st.dictionaries(_text, _free_value, max_size=3),
    ),
    llm_usage=st.none()
    | st.builds(
        LlmUsage,
        model=_opt_text,
        estimated_cost_usd=st.none() | _number,
        calls=st.none() | st.lists(_llm_call, max_size=3),
    ),
    input_summary=_opt_text,
    output_summary=_opt_text,
    steps=st.none() | st.lists(_step, max_size=4),
    expected_outcome=st.none()
    | st.builds(
        ExpectedOutcome, task_objective=_text, constraints=st.none() | st.lists(_text, max_size=2)
    ),
    environment=st.none()
    | st.builds(
        EnvironmentContext,
        framework=_opt_text,
        custom_tags=st.none() | st.dictionaries(_text, _text, max_size=2),
    ),
    errors=st.none() | st.lists(_error, max_size=3),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_task)
def test_decoding_what_was_encoded_gives_the_same_trace(task: TaskData) -> None:
    """Property: decode(encode(task)) == task, and the body never holds a null."""
    body = encode_task(task)
    assert b"null" not in body.replace(b'"null', b"").replace(b'null"', b"") or "null" in repr(task)
    assert msgspec.json.decode(body) == json.loads(body)
    back = decode_task(body)
    assert back == task
    assert encode_task(back) == body


@settings(max_examples=100, deadline=None)
@given(_task)
def test_body_matches_official_client_algorithm(task: TaskData) -> None:
    """Property: the body equals json.dumps of the official client's dict-building rules."""
    assert encode_task(task) == _official_body(task)


def _official_dict(obj: Any) -> Any:
    """The official client's dataclass_to_dict, re-stated for msgspec Structs."""
    result: dict[str, Any] = {}
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        if value is None:
            continue
        if isinstance(value, msgspec.Struct):
            nested = _official_dict(value)
            if nested:
                result[name] = nested
        elif isinstance(value, (list, tuple)):
            items = []
            for item in value:
                if isinstance(item, msgspec.Struct):
                    nested = _official_dict(item)
                    if nested:
                        items.append(nested)
                elif item is not None:
                    items.append(item)
            if items:
                result[name] = items
        else:
            result[name] = value
    return result


def _official_body(task: TaskData) -> bytes:
    out: dict[str, Any] = {
        "name": task.name,
        "description": task.description,
        "current_datetime": task.current_datetime,
        "duration": task.duration,
    }
    for name in ("input_summary", "output_summary"):
        if getattr(task, name) is not None:
            out[name] = getattr(task, name)
    if task.expected_outcome is not None and (eo := _official_dict(task.expected_outcome)):
        out["expected_outcome"] = eo
    for name in ("steps", "errors"):
        items = [d for s in getattr(task, name) or [] if (d := _official_dict(s))]
        if items:
            out[name] = items
    if task.llm_usage is not None and (lu := _official_dict(task.llm_usage)):
        out["llm_usage"] = lu
    sections = {}
    for name in (
        "time_tracking",
        "customer",
        "support",
        "sales",
        "marketing",
        "content",
        "research",
        "project",
        "development",
        "executive",
        "general",
    ):
        value = getattr(task, name)
        if value is not None and (d := _official_dict(value)):
            sections[name] = d
    if sections:
        out["sections"] = sections
    if task.environment is not None and (env := _official_dict(task.environment)):
        out["environment"] = env
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def test_a_non_finite_float_is_a_value_error_naming_the_field_not_a_null() -> None:
    """JSON has no NaN or infinity and the platform takes no null: encode_task refuses a
    hand-built trace holding one, and says which field."""
    with pytest.raises(ValueError, match=r"^duration: expected a finite number, got nan"):
        encode_task(TaskData("t", "d", "2026-11-22T08:51:00.000000Z", float("nan")))
    stepped = base(steps=[ExecutionStep(1, "llm_inference", "s")])
    assert stepped.steps is not None
    stepped.steps[0].llm_call = LlmCall("m", temperature=float("inf"))
    with pytest.raises(ValueError, match=r"^steps\[0\]\.llm_call\.temperature: .* got inf"):
        encode_task(stepped)
    later = base()
    later.duration = float("-inf")  # set after it was built: still caught
    with pytest.raises(ValueError, match=r"^duration: expected a finite number, got -inf"):
        encode_task(later)
