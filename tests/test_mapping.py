"""Event mapping: timestamps, field values, errors, tagged traces and steps, LLM usage."""

from __future__ import annotations

import datetime as dt
import logging
import math
import platform
import sys
import time
import traceback
from typing import Any

import msgspec
import pytest
from exporters import make_exporter
from freezegun import freeze_time
from hostile import FloatRaises, IndexRaises, IsoformatRaises, ItemsRaise, IterRaises
from hypothesis import given, settings
from hypothesis import strategies as st

from infinium_logging import __version__, errorinfo, sanitise, timestamps
from infinium_logging._capture import CapturingSink
from infinium_logging.collector import LocalCollector
from infinium_logging.convert import MAX_PREVIEW_LENGTH, Problem, to_task
from infinium_logging.durability import captured_record
from infinium_logging.environment import environment, merge_environment
from infinium_logging.events import TaggedTrace, is_tag, tagged_trace
from infinium_logging.fields import FROM_EVENT, FROM_RECORD, preview, safe_value
from infinium_logging.handler import InfiniumHandler
from infinium_logging.model import (
    MAX_BODY_BYTES,
    EnvironmentContext,
    ExecutionStep,
    LlmCall,
    LlmUsage,
    TaskData,
    ToolCall,
    encode_task,
    format_timestamp,
)
from infinium_logging.payload import MAX_TAG_VALUE, tagged_payload
from infinium_logging.sanitise import TRUNCATION_MARK
from infinium_logging.steps import build_step, event_step
from infinium_logging.tasks import task
from infinium_logging.usage import Usage

ENV: dict[str, Any] = environment("logging", "app.agent", (("team", "search"),))


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __str__(self) -> str:
        raise RuntimeError("no str")


# --- time -----------------------------------------------------------------------------------------


@given(st.floats(min_value=946_684_800.0, max_value=4_102_444_799.0, allow_nan=False))
def test_iso_timestamp_matches_format_timestamp(timestamp: float) -> None:
    """The cached fast formatter writes exactly what model.format_timestamp writes."""
    assert timestamps.iso_timestamp(timestamp) == format_timestamp(timestamp)


@pytest.mark.parametrize(
    "timestamp",
    [
        1_700_000_000.0,
        1_700_000_000.9999995,  # rounds up into the next second
        1_700_000_000.0000005,  # half to even
        1_700_000_000.0000015,
        1.5,  # before the fast range
        5_000_000_000.25,  # after it
    ],
)
def test_iso_timestamp_edges(timestamp: float) -> None:
    """Rounding at second boundaries and the slow path outside the cached range agree too."""
    assert timestamps.iso_timestamp(timestamp) == format_timestamp(timestamp)


@freeze_time("2026-03-01T12:00:00Z")
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-02-03T04:05:06.123456Z", "2026-02-03T04:05:06.123456Z"),
        ("2026-02-03T05:05:06+01:00", "2026-02-03T04:05:06.000000Z"),
        ("2026-02-03 04:05:06", "2026-02-03T04:05:06.000000Z"),  # no zone: local (here UTC)
        (1_770_091_506.5, "2026-02-03T04:05:06.500000Z"),
        (dt.datetime(2026, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc), "2026-02-03T04:05:06.000000Z"),
        ("1770091506", "2026-02-03T04:05:06.000000Z"),  # TimeStamper(fmt="%s")
        ("1770091506.5", "2026-02-03T04:05:06.500000Z"),
        ("yesterday-ish", "2026-03-01T12:00:00.000000Z"),  # unreadable: now
        (None, "2026-03-01T12:00:00.000000Z"),
        (float("nan"), "2026-03-01T12:00:00.000000Z"),
    ],
)
def test_event_time_reads_structlog_timestamps(value: object, expected: str) -> None:
    """TimeStamper's outputs are read as the event's time; anything else means now."""
    assert format_timestamp(timestamps.event_time(value)) == expected


def test_event_time_without_a_zone_takes_the_reading_nearer_to_when_it_was_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Naive text is local time or UTC: given when the event was logged, the nearer reading
    wins; without it, local time, as Python reads a naive datetime."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        as_utc = dt.datetime(2026, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc).timestamp()
        as_local = as_utc + 5 * 3600  # New York is 5 hours behind UTC in February
        for value in ("2026-02-03 04:05:06", dt.datetime(2026, 2, 3, 4, 5, 6)):
            assert timestamps.event_time(value, now=as_utc + 2) == as_utc
            assert timestamps.event_time(value, now=as_local + 2) == as_local
            assert timestamps.event_time(value) == as_local
        assert timestamps.captured_timestamp("2026-02-03T04:05:06Z") == "2026-02-03T04:05:06Z"
        assert timestamps.captured_timestamp("2026-02-03T04:05:06-05:00") == (
            "2026-02-03T04:05:06-05:00"
        )
        assert timestamps.captured_timestamp(1.5) == 1.5
    finally:
        monkeypatch.undo()
        time.tzset()


def test_event_timestamp_keeps_wire_format_text() -> None:
    """A timestamp already in the wire format is used as it is, without parsing."""
    text = "2026-02-03T04:05:06.123456Z"
    assert timestamps.event_timestamp(text) is text
    assert timestamps.event_timestamp(1_770_091_506.0) == 1_770_091_506.0


# --- values ---------------------------------------------------------------------------------------


def test_safe_value_keeps_scalars_and_copies_the_rest() -> None:
    """Scalars pass as they are; containers are JSON-safe copies, unaffected by later changes."""
    items = [1, {2, 3}]
    copied = safe_value(items)
    items.append("later")
    assert copied == [1, [2, 3]]
    assert safe_value("text") == "text"
    assert safe_value(7) == 7
    assert safe_value(float("inf")) is None
    assert safe_value(_BadRepr()) == "<unrepresentable _BadRepr>"
    assert safe_value(b"bytes") == "bytes"


def test_safe_value_cuts_huge_strings() -> None:
    """A huge string is cut now, visibly, instead of being held until the task ends."""
    cut = safe_value("x" * 100_000)
    assert len(cut) == 8192
    assert cut.endswith(TRUNCATION_MARK)


def test_preview_truncates_and_renders() -> None:
    """Previews are text within the platform's limit; structures are rendered as JSON."""
    long = preview("y" * 2000)
    assert len(long) == MAX_PREVIEW_LENGTH
    assert long.endswith(TRUNCATION_MARK)
    assert preview({"q": [1, 2]}) == '{"q":[1,2]}'
    assert preview(42) == "42"
    assert sanitise.safe_str(_BadRepr()) == "<unprintable _BadRepr>"


def test_level_number() -> None:
    """structlog method names and stdlib names map to stdlib numbers."""
    assert timestamps.level_number("warn") == 30
    assert timestamps.level_number("exception") == 40
    assert timestamps.level_number("CRITICAL") == 50
    assert timestamps.level_number("msg") == 20
    assert timestamps.level_number(15) == 15
    assert timestamps.level_number("nonsense", -1) == -1


# --- errors ---------------------------------------------------------------------------------------


def _raise() -> None:
    raise ValueError("bad input")


def test_error_from_exc_info_true_reads_the_current_exception() -> None:
    """``True`` means sys.exc_info(), read inside the except block."""
    try:
        _raise()
    except ValueError:
        info = errorinfo.error_from_exc_info(True)
    assert info is not None
    assert info.detail["error_type"] == "ValueError"
    assert info.detail["message"] == "bad input"
    assert info.detail["recoverable"] is False
    assert "in _raise" in info.detail["stack_trace"]
    assert errorinfo.error_from_exc_info(True) is None  # outside any except block


def test_error_from_exc_info_accepts_exceptions_and_tuples() -> None:
    """An exception instance and a 3-tuple give the same detail; an empty message uses the type."""
    try:
        _raise()
    except ValueError as exc:
        caught = exc
        triple = sys.exc_info()
    from_exc = errorinfo.error_from_exc_info(caught)
    from_tuple = errorinfo.error_from_exc_info(triple)
    assert from_exc is not None
    assert from_tuple is not None
    assert from_exc.detail == from_tuple.detail
    assert from_exc.key == from_tuple.key
    empty = errorinfo.error_from_exc_info(KeyError())
    assert empty is not None
    assert empty.detail["message"] == "KeyError"
    assert errorinfo.error_from_exc_info((None, None, None)) is None
    assert errorinfo.error_from_exc_info(False) is None


def test_error_from_rendered_formatted_traceback() -> None:
    """What format_exc_info left behind is read back: type, message and the text as stack."""
    text = (
        'Traceback (most recent call last):\n  File "a.py", line 1, in f\nValueError: bad input\n'
    )
    info = errorinfo.error_from_rendered(text)
    assert info is not None
    assert (info.detail["error_type"], info.detail["message"]) == ("ValueError", "bad input")
    assert info.detail["stack_trace"] == text


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _chained() -> BaseException:
    try:
        try:
            raise KeyError("k")
        except KeyError as inner:
            raise RuntimeError("wrapped\nsecond line") from inner
    except RuntimeError as outer:
        return outer


_RENDERED = [
    ("no message", _raised(ValueError()), ("ValueError", "ValueError")),
    ("chained, two lines", _chained(), ("RuntimeError", "wrapped\nsecond line")),
    ("never raised", ValueError("never raised"), ("ValueError", "never raised")),
]
if sys.version_info >= (3, 11):  # notes and exception groups
    _noted = ValueError("with a note")
    _noted.add_note("the note")
    _RENDERED += [
        ("note", _raised(_noted), ("ValueError", "with a note\nthe note")),
        (
            "group",
            _raised(ExceptionGroup("both", [ValueError("a"), TypeError("b")])),  # noqa: F821
            ("ExceptionGroup", "both (2 sub-exceptions)"),
        ),
    ]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [case[1:] for case in _RENDERED],
    ids=[case[0] for case in _RENDERED],
)
def test_error_from_rendered_reads_every_shape_of_traceback(
    exc: BaseException, expected: tuple[str, str]
) -> None:
    """The exception's own line is found after the last traceback's frames, whatever follows
    it or comes before: a message without text, chained exceptions, lines of a message or a
    note, an exception group, an exception never raised (no traceback)."""
    info = errorinfo.error_from_rendered("".join(traceback.format_exception(exc)))
    assert info is not None
    assert (info.detail["error_type"], info.detail["message"]) == expected


def test_error_from_rendered_dict_tracebacks() -> None:
    """What dict_tracebacks left behind is read back, frames rendered as a stack trace."""
    value = [
        {
            "exc_type": "ValueError",
            "exc_value": "bad input",
            "frames": [{"filename": "a.py", "lineno": 3, "name": "f"}],
        }
    ]
    info = errorinfo.error_from_rendered(value)
    assert info is not None
    assert info.detail["error_type"] == "ValueError"
    assert 'File "a.py", line 3, in f' in info.detail["stack_trace"]
    assert errorinfo.error_from_rendered(42) is None


# --- tagged traces --------------------------------------------------------------------------------

WHEN = 1_770_091_506.25


def _payload(value: object, **kw: Any) -> TaskData:
    payload = tagged_payload(
        value,
        kw.pop("message", "Classified ticket"),
        kw.pop("timestamp", WHEN),
        kw.pop("fields", None),
        kw.pop("error", None),
        kw.pop("env", ENV),
    )
    assert payload is not None
    return payload if isinstance(payload, TaskData) else to_task(payload, strict=True)


def test_tagged_true_builds_the_trace_from_the_event() -> None:
    """``True``: name and description from the message, time from the event, TaskData fields;
    the event's other fields are custom tags, as text, before the library's own."""
    task = _payload(True, fields=[("output_summary", "billing"), ("ticket", 7)])
    assert task.name == task.description == "Classified ticket"
    assert task.current_datetime == "2026-02-03T04:05:06.250000Z"
    assert task.duration == 0.0
    assert task.output_summary == "billing"
    assert task.environment == EnvironmentContext(
        framework="logging",
        python_version=platform.python_version(),
        sdk_version=__version__,
        runtime=platform.python_implementation(),
        custom_tags={"ticket": "7", "team": "search", "logger": "app.agent"},
    )


def test_a_tagged_events_other_fields_are_kept() -> None:
    """Beside a dict tag, fields named like TaskData fields fill what the tag left unset and
    the others are custom tags (JSON text, cut); the tag's own tags and fields win."""
    task = _payload(
        {"output_summary": "given", "environment": {"custom_tags": {"ticket": "from tag"}}},
        fields=[
            ("output_summary", "ignored"),
            ("input_summary", "from field"),
            ("ticket", 7),
            ("flags", {"vip": True, "ids": [1, 2]}),
            ("ok", False),
            ("team", "overrides INFINIUM_TAGS"),
            ("blob", "x" * 5000),
        ],
    )
    assert (task.output_summary, task.input_summary) == ("given", "from field")
    assert task.environment is not None
    tags = task.environment.custom_tags or {}
    assert tags["ticket"] == "from tag"
    assert tags["flags"] == '{"vip":true,"ids":[1,2]}'
    assert tags["ok"] == "false"
    assert tags["team"] == "overrides INFINIUM_TAGS"
    assert tags["logger"] == "app.agent"
    assert len(tags["blob"]) == MAX_TAG_VALUE


def test_tagged_dict_overwrites_nothing_it_gives() -> None:
    """Every field the dict gives stays; the library only fills what is missing."""
    given_env = {"framework": "langgraph", "custom_tags": {"team": "ops", "run": "7"}}
    task = _payload(
        {
            "name": "Classify",
            "description": "Route a ticket",
            "current_datetime": "2026-01-01T00:00:00.000000Z",
            "duration": 2.5,
            "environment": given_env,
            "support": {"priority": "high"},
        }
    )
    assert (task.name, task.description, task.duration) == ("Classify", "Route a ticket", 2.5)
    assert task.current_datetime == "2026-01-01T00:00:00.000000Z"
    assert task.support is not None
    assert task.support.priority == "high"
    assert task.environment is not None
    assert task.environment.framework == "langgraph"
    assert task.environment.sdk_version == __version__
    assert task.environment.custom_tags == {"team": "ops", "run": "7", "logger": "app.agent"}
    assert given_env == {"framework": "langgraph", "custom_tags": {"team": "ops", "run": "7"}}


def test_tagged_dict_without_description_uses_the_message() -> None:
    """The description defaults to the message, not to the given name."""
    task = _payload({"name": "Classify"}, message="Classified ticket 7")
    assert (task.name, task.description) == ("Classify", "Classified ticket 7")


def test_tagged_message_callable_is_called_only_when_needed() -> None:
    """A message given as a callable is built only if name or description is missing."""
    calls: list[int] = []

    def message() -> str:
        calls.append(1)
        return "built"

    _payload({"name": "n", "description": "d"}, message=message)
    assert calls == []
    assert _payload({"name": "n"}, message=message).description == "built"
    assert calls == [1]


def test_tagged_taskdata_gets_environment_and_error_without_being_changed() -> None:
    """A TaskData is copied with the environment filled in; the original is untouched."""
    original = TaskData("Classify", "Route", "2026-01-01T00:00:00.000000Z", 1.0)
    try:
        _raise()
    except ValueError:
        error = errorinfo.error_from_exc_info(True)
    task = _payload(original, error=error)
    assert original.environment is None
    assert original.errors is None
    assert task.environment is not None
    assert task.environment.custom_tags == {"team": "search", "logger": "app.agent"}
    assert task.errors is not None
    assert task.errors[0].error_type == "ValueError"


def test_tagged_string_is_the_name_and_false_values_do_not_tag() -> None:
    """A string names the trace; False, None, 0 and "" leave the event untagged."""
    assert _payload("Classify").name == "Classify"
    for value in (False, None, 0, ""):
        assert tagged_payload(value, "m", WHEN, None, None, ENV) is None


def test_tagged_error_is_appended_to_given_errors() -> None:
    """An exception on a tagged event adds to the errors the dict gave."""
    try:
        _raise()
    except ValueError:
        error = errorinfo.error_from_exc_info(True)
    task = _payload({"errors": [{"error_type": "Timeout", "message": "slow"}]}, error=error)
    assert task.errors is not None
    assert [e.error_type for e in task.errors] == ["Timeout", "ValueError"]


def test_tagged_long_message_is_cut_to_the_limits() -> None:
    """Name and description built from a long message respect the platform's limits."""
    task = _payload(True, message="m" * 20_000)
    assert len(task.name) == 500
    assert len(task.description) == 10_000


# --- steps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "levelno", "action"),
    [
        ([("action", "retrieve")], 20, "retrieve"),
        ([("llm_call", {"model": "m"})], 20, "llm_inference"),
        ([("tool_call", {"tool_name": "search"})], 20, "tool_use"),
        ([], 40, "error"),
        ([], 50, "error"),
        ([], 30, "log"),
        ([("action", "plan"), ("llm_call", {"model": "m"})], 40, "plan"),
    ],
)
def test_step_action_rules(fields: list[tuple[str, Any]], levelno: int, action: str) -> None:
    """action field > llm_call > tool_call > ERROR and above > log."""
    assert build_step("msg", levelno, fields, None)["action"] == action


def test_step_fields_and_metadata() -> None:
    """Known fields fill the step; the rest goes to metadata, JSON-safe; call extras too."""
    step = build_step(
        "Called the model",
        20,
        [
            ("llm_call", {"model": "gpt-4o", "prompt_tokens": "12", "cost_usd": 0.002}),
            ("duration_ms", 12.6),
            ("input_preview", "q" * 1000),
            ("output_preview", {"answer": 42}),
            ("ticket", 7),
            ("tags", {"a", "b"}),
            ("broken", _BadRepr()),
            ("ratio", math.nan),
        ],
        None,
    )
    assert step["llm_call"] == {"model": "gpt-4o", "prompt_tokens": 12}  # read as a number now
    assert step["duration_ms"] == 13
    assert len(step["input_preview"]) == MAX_PREVIEW_LENGTH
    assert step["output_preview"] == '{"answer":42}'
    assert step["metadata"] == {
        "llm_call.cost_usd": 0.002,
        "ticket": 7,
        "tags": ["a", "b"],
        "broken": "<unrepresentable _BadRepr>",
    }
    task = to_task({"name": "n", "steps": [{**step, "step_number": 1}]}, strict=False)
    assert task.steps is not None
    assert task.steps[0].llm_call == LlmCall(model="gpt-4o", prompt_tokens=12)
    assert b'"ratio"' not in encode_task(task)


def test_step_accepts_structs_and_bad_durations() -> None:
    """LlmCall/ToolCall structs are kept; a duration that is not a number goes to metadata."""
    call = ToolCall(tool_name="search", duration_ms=5)
    step = build_step("m", 20, [("tool_call", call), ("duration_ms", "soon")], None)
    assert step["tool_call"] is call
    assert "duration_ms" not in step
    assert step["metadata"] == {"duration_ms": "soon"}


def test_usage_sums_and_multiple_models() -> None:
    """Tokens, latency and cost are summed; two models make ``multiple``."""
    usage = Usage()
    usage.add({"model": "a", "provider": "p", "prompt_tokens": 10, "completion_tokens": 5,
               "latency_ms": 100}, {"llm_call.cost_usd": 0.25}, keep=True)  # fmt: skip
    usage.add(LlmCall(model="b", provider="p", prompt_tokens=1, latency_ms=50), None, keep=True)
    usage.add({"model": "a", "completion_tokens": "4"}, None, keep=False)
    assert usage.as_dict() == {
        "api_calls_count": 3,
        "model": "multiple",
        "provider": "p",
        "prompt_tokens": 11,
        "completion_tokens": 9,
        "total_tokens": 20,
        "estimated_cost_usd": 0.25,
        "total_latency_ms": 150,
        "calls": [
            {"model": "a", "provider": "p", "prompt_tokens": 10, "completion_tokens": 5,
             "latency_ms": 100},
            LlmCall(model="b", provider="p", prompt_tokens=1, latency_ms=50),
        ],
    }  # fmt: skip


def test_environment_is_cached_and_shared() -> None:
    """The same logger and tags give the same (shared, read-only) environment dict."""
    first = environment("structlog", "svc", (), "25.1.0")
    assert first is environment("structlog", "svc", (), "25.1.0")
    assert first["framework_version"] == "25.1.0"
    assert first["custom_tags"] == {"logger": "svc"}
    assert "custom_tags" not in environment(None, None, ())


def test_merge_environment_accepts_structs() -> None:
    """A given EnvironmentContext is merged field by field, custom tags key by key."""
    given_env = EnvironmentContext(region="eu", custom_tags={"logger": "mine"})
    merged = merge_environment(given_env, ENV)
    assert merged["region"] == "eu"
    assert merged["framework"] == "logging"
    assert merged["custom_tags"] == {"logger": "mine", "team": "search"}
    assert msgspec.convert(merged, EnvironmentContext).region == "eu"


# --- deferred traces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [True, False, None, "", "Classify", {}, {"name": "n"}, 0, 1, [], [1], object()]
)
def test_is_tag_decides_as_tagged_payload_does(value: object) -> None:
    """is_tag (what the logging thread checks) agrees with tagged_payload (what builds it)."""
    expected = tagged_payload(value, "m", WHEN, None, None, ENV) is not None
    assert is_tag(value) is expected


def test_tagged_trace_is_built_later_from_what_was_captured() -> None:
    """The captured trace formats the message when built, and copies the tag dict when made."""
    given = {"description": "Route a ticket"}
    pending = tagged_trace(given, "Classified %s", ("ticket 7",), WHEN, None, None, ENV)
    given["name"] = "added after logging"
    del given["description"]
    assert pending.basis == {"description": "Route a ticket"}
    task = to_task(pending.materialize(), strict=True)
    assert (task.name, task.description) == ("Classified ticket 7", "Route a ticket")
    assert task.current_datetime == "2026-02-03T04:05:06.250000Z"


def test_a_captured_dict_tag_read_back_from_its_spool_form_builds_the_same_trace() -> None:
    """The spool form formats the message at once and keeps the error's detail; read back
    through MessagePack, it builds what the captured trace builds."""
    try:
        raise ValueError("bad ticket")
    except ValueError as exc:
        error = errorinfo.error_from_exc_info(exc)
    pending = tagged_trace(
        {"description": "Route", "input_summary": b"caf\xc3\xa9"},
        "Classified %s",
        ("ticket 7",),
        WHEN,
        None,
        error,
        ENV,
    )
    form = pending.spool_form()
    assert form is not None
    assert form[1] == "Classified ticket 7"
    again = TaggedTrace.from_spool_form(msgspec.msgpack.decode(msgspec.msgpack.encode(form)))
    assert again.materialize() == pending.materialize()
    task = to_task(again.materialize(), strict=False)
    assert task.input_summary == "café"
    assert task.errors is not None
    assert task.errors[0].message == "bad ticket"


def test_many_values_each_short_but_long_together_are_cut_in_the_spool_record() -> None:
    """No value is long in plain sight, yet together they hold more than a trace can carry:
    the record (encoded first, as the write-ahead does) comes out over the budget, is asked
    for again cut, and then stays under the body limit with the cut marked."""
    steps = [
        {"step_number": n, "action": "a", "description": "d", "output_preview": "p" * 60_000}
        for n in range(1, 21)
    ]
    pending = tagged_trace(
        {"description": "many", "steps": steps}, "m", None, WHEN, None, None, ENV
    )
    assert pending.spool_form() == pending.spool_form(cut=False)  # nothing long in sight
    record = captured_record(pending)
    assert record is not None and len(record) <= MAX_BODY_BYTES
    basis, _, _, _, env = msgspec.msgpack.decode(record)
    assert len(basis["steps"]) == 20
    assert all(len(step["output_preview"]) < 60_000 for step in basis["steps"])
    assert env["custom_tags"]["truncated"] == "true"
    small = tagged_trace({"description": "small"}, "m", None, WHEN, None, None, ENV)
    assert msgspec.msgpack.decode(captured_record(small) or b"") == list(small.spool_form() or ())


@pytest.mark.parametrize(
    "value", [True, "a name", TaskData("Classify", "Route", "2026-01-01T00:00:00.000000Z", 1.0)]
)
def test_only_a_dict_tag_has_a_spool_form(value: object) -> None:
    """Other tags are built before they are written (a tag of True reads the event's fields)."""
    assert tagged_trace(value, "m", None, WHEN, None, None, ENV).spool_form() is None


@pytest.mark.parametrize(
    "form",
    [
        None,
        [],
        [{}, "m", WHEN, None],
        [[], "m", WHEN, None, {}],
        [{}, 7, WHEN, None, {}],
        [{}, "m", WHEN, "boom", {}],
        [{}, "m", WHEN, None, []],
    ],
)
def test_a_spool_form_that_is_not_one_is_refused(form: object) -> None:
    with pytest.raises(ValueError, match="not the record of a captured event"):
        TaggedTrace.from_spool_form(form)


def test_tagged_trace_reads_structlog_timestamps_when_built() -> None:
    """A TimeStamper value (ISO text or epoch number) becomes the trace's time when built."""
    iso = tagged_trace(True, "m", None, "2026-02-03T04:05:06Z", None, None, ENV)
    epoch = tagged_trace(True, "m", None, WHEN, None, None, ENV)
    assert to_task(iso.materialize()).current_datetime == "2026-02-03T04:05:06.000000Z"
    assert to_task(epoch.materialize()).current_datetime == "2026-02-03T04:05:06.250000Z"


def test_tagged_trace_with_bad_arguments_is_named_by_its_format() -> None:
    """%-arguments that do not fit the format leave the format string as the message."""
    pending = tagged_trace(True, "needs %d", ("one",), WHEN, None, None, ENV)
    assert to_task(pending.materialize()).name == "needs %d"


def test_tagged_taskdata_is_copied_when_captured() -> None:
    """Fields of a logged TaskData set after logging do not reach the trace."""
    given = TaskData("Classify", "Route", "2026-01-01T00:00:00.000000Z", 1.0)
    pending = tagged_trace(given, "m", None, WHEN, None, None, ENV)
    given.name = "changed after logging"
    built = to_task(pending.materialize(), strict=False)
    assert built.name == "Classify"


def test_raw_events_become_the_same_steps() -> None:
    """A captured record or structlog event gives the step build_step gives for its fields."""
    record = logging.LogRecord("app", logging.WARNING, __file__, 1, "asked %s", ("twice",), None)
    record.__dict__.update(
        {"ticket": 7, "_private": 1, "infinium": False, "llm_call": {"model": "m"}}
    )
    record.message = "formatted by another handler"
    from_record = event_step((FROM_RECORD, 30, record.__dict__.copy(), "infinium", None, None))
    assert from_record == build_step(
        "asked twice", 30, [("ticket", 7), ("llm_call", {"model": "m"})], None
    )
    event = {"event": "asked", "level": "info", "timestamp": "t", "user": "ada", "_x": 1}
    from_event = event_step((FROM_EVENT, 20, event, "infinium", None, "asked"))
    assert from_event == build_step("asked", 20, [("user", "ada")], None)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "model": st.sampled_from(["a", "b", "c", ""]),
                "provider": st.sampled_from(["p", "q", "r"]),
                "prompt_tokens": st.integers(0, 1000),
                "latency_ms": st.integers(0, 100),
            }
        ),
        max_size=12,
    ),
    st.integers(0, 12),
    st.integers(1, 6),
)
def test_usage_merge_equals_adding_one_by_one(
    calls: list[dict[str, Any]], split: int, limit: int
) -> None:
    """Property: merging the later calls' usage gives what adding them one by one gives."""
    whole, first, later = Usage(), Usage(), Usage()
    for call in calls:
        whole.add(call, {"llm_call.cost_usd": 0.5}, len(whole.calls) < limit)
    for call in calls[:split]:
        first.add(call, {"llm_call.cost_usd": 0.5}, len(first.calls) < limit)
    for call in calls[split:]:
        later.add(call, {"llm_call.cost_usd": 0.5}, len(later.calls) < limit)
    first.merge(later, limit)
    assert first.as_dict() == whole.as_dict()


def test_captured_events_are_distinct_objects_however_alike() -> None:
    """Two events captured with the same content are two traces: compared and hashed by
    identity, so that a sink keeping them in a set or a dict keeps both."""
    first = tagged_trace({"name": "same"}, "message", None, WHEN, None, None, ENV)
    second = tagged_trace({"name": "same"}, "message", None, WHEN, None, None, ENV)
    assert first != second
    assert len({first, second}) == 2
    assert first.materialize() == second.materialize()


# --- values that raise while they are read --------------------------------------------------------


WHEN_TEXT = "2026-01-01T00:00:00.000000Z"

_UNREADABLE: list[tuple[object, str]] = [
    (ItemsRaise(a=1), "{'a': 1}"),
    (IterRaises([1, 2]), "[1, 2]"),
    (IndexRaises(7), "7"),
    (FloatRaises(2.5), "2.5"),
    (IsoformatRaises(2026, 1, 2), "IsoformatRaises(2026, 1, 2, 0, 0)"),
]


@pytest.mark.parametrize(("value", "text"), _UNREADABLE, ids=lambda v: type(v).__name__)
def test_a_field_that_raises_when_read_costs_only_itself(value: object, text: str) -> None:
    """A logged value whose own methods raise becomes its repr in the step's metadata, reported
    as replaced at its path; the rest of the step and of the trace is kept."""
    step = {"step_number": 1, **build_step("asked", 20, [("ok", 1), ("v", value)], None)}
    problems: list[Problem] = []
    trace = to_task(
        {
            "name": "n",
            "description": "d",
            "current_datetime": WHEN_TEXT,
            "duration": 1.0,
            "steps": [step],
        },
        strict=False,
        problems=problems,
    )
    assert trace.steps is not None
    assert trace.steps[0].metadata == {"ok": 1, "v": text}
    assert [(p.path, p.action) for p in problems] == [("steps[0].metadata.v", "replaced")]
    assert type(value).__name__ in problems[0].reason


def test_a_call_that_raises_when_read_goes_to_metadata_as_text() -> None:
    """An llm_call mapping whose items() raises is no LLM call: it is kept as text in metadata,
    and the step is still a step."""
    step = build_step("asked", 20, [("llm_call", ItemsRaise(model="m"))], None)
    assert step["action"] == "log"
    assert str(step["metadata"]["llm_call"]) == "{'model': 'm'}"


def test_an_action_that_raises_when_compared_is_read_as_text() -> None:
    """The action is made text before it is tested, so its own __eq__ never runs."""

    class Action:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("eq")

        __hash__ = object.__hash__

        def __str__(self) -> str:
            return "decide"

    assert build_step("m", 20, [("action", Action())], None)["action"] == "decide"


def test_a_tag_whose_errors_cannot_be_iterated_keeps_the_events_error() -> None:
    """A tag's errors list that raises when iterated is reported and left out; the logged
    exception is still recorded."""
    try:
        _raise()
    except ValueError:
        error = errorinfo.error_from_exc_info(True)
    payload = tagged_payload(
        {"name": "n", "errors": IterRaises([{"error_type": "E", "message": "m"}])},
        "m",
        WHEN,
        None,
        error,
        ENV,
    )
    problems: list[Problem] = []
    trace = to_task(payload, strict=False, problems=problems)
    assert trace.errors is not None
    assert [e.error_type for e in trace.errors] == ["ValueError"]
    assert ("errors[0]", "replaced") in [(p.path, p.action) for p in problems]


def test_unreadable_values_and_bad_taskdata_tags_reach_the_collector(
    infinium_collector: LocalCollector, stdlib_logger: logging.Logger
) -> None:
    """Through the real exporter: events holding values that raise when read, and TaskData tags
    that break the platform's limits, are each delivered as a valid trace; what was fixed is
    counted in ``coerced``, nothing is dropped as invalid."""
    exporter = make_exporter(infinium_collector)
    handler = InfiniumHandler(exporter=exporter)
    stdlib_logger.addHandler(handler)
    try:
        with task("in a task"):
            stdlib_logger.info("a", extra={"v": ItemsRaise(a=1), "ok": 1})
            stdlib_logger.info("b", extra={"w": IterRaises([1])})
        stdlib_logger.info("c", extra={"infinium": {"name": "customer", "customer": ItemsRaise()}})
        stdlib_logger.info(
            "d",
            extra={
                "infinium": {
                    "name": "tag metadata",
                    "steps": [
                        {
                            "step_number": 1,
                            "action": "a",
                            "description": "d",
                            "metadata": {"m": ItemsRaise(a=1)},
                        }
                    ],
                }
            },
        )
        stdlib_logger.info("e", extra={"infinium": TaskData("nan", "d", WHEN_TEXT, math.nan)})
        stdlib_logger.info("f", extra={"infinium": TaskData("x" * 2000, "d", WHEN_TEXT, 1.0)})
        assert exporter.flush(10)
        stats = exporter.stats()
    finally:
        stdlib_logger.removeHandler(handler)
        exporter.shutdown(5)
    received = {t.task.name[:20]: t.task for t in infinium_collector.traces()}
    assert sorted(received) == sorted(["in a task", "customer", "tag metadata", "nan", "x" * 20])
    steps = received["in a task"].steps or []
    assert [s.metadata for s in steps] == [{"v": "{'a': 1}", "ok": 1}, {"w": "[1]"}]
    tagged_steps = received["tag metadata"].steps or []
    assert tagged_steps[0].metadata == {"m": "{'a': 1}"}
    assert received["nan"].duration == 0.0
    assert len(received["x" * 20].name) == 500
    assert stats.dropped.get("invalid", 0) == 0
    assert stats.coerced.get("replaced", 0) >= 3
    assert stats.coerced.get("truncated", 0) >= 1


def test_a_tagged_taskdata_is_read_leniently() -> None:
    """A TaskData tag is fixed like a tag dict: what capture_tasks() (like the exporter) gets
    has its over-long name cut, its NaN duration and infinite temperature replaced, each fix
    reported; exponent-form floats are kept exactly, and the caller's object is unchanged."""
    given = TaskData(
        "n" * 2000,
        "d",
        WHEN_TEXT,
        math.nan,
        steps=[
            ExecutionStep(1, "llm_inference", "asked", llm_call=LlmCall("m", temperature=math.inf))
        ],
        llm_usage=LlmUsage(estimated_cost_usd=2.5e-05),
    )
    pending = tagged_trace(given, "m", None, WHEN, None, None, ENV)
    sink = CapturingSink()
    sink.submit(pending)
    (trace,) = sink.tasks
    assert len(trace.name) == 500
    assert trace.duration == 0.0
    assert trace.steps is not None and trace.steps[0].llm_call == LlmCall("m")
    assert b'"estimated_cost_usd":2.5e-05' in encode_task(trace)
    problems: list[Problem] = []
    to_task(pending.materialize(), strict=False, problems=problems)
    assert ("name", "truncated") in [(p.path, p.action) for p in problems]
    assert given.name == "n" * 2000


def test_a_field_emptied_by_dropping_nulls_is_left_out() -> None:
    """``extra={"m": {"x": None}}`` leaves no ``"m":{}`` behind; a dict given empty is kept."""
    step = build_step(
        "m", 20, [("gone", {"x": None, "y": [None, math.nan]}), ("kept", {}), ("n", None)], None
    )
    assert step["metadata"] == {"kept": {}}
    assert "metadata" not in build_step("m", 20, [("gone", {"x": None})], None)
