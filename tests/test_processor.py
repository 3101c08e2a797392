"""InfiniumProcessor: tagged events, task steps, levels, exceptions, chain positions, bridges."""

from __future__ import annotations

import datetime as dt
import gc
import importlib.metadata
import io
import json
import logging
import sys
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from freezegun import freeze_time
from sinks import OFFICIAL_BODY_PART, ListSink, official_trace
from structlog.contextvars import bind_contextvars, clear_contextvars, merge_contextvars
from structlog.processors import (
    EventRenamer,
    JSONRenderer,
    TimeStamper,
    add_log_level,
    dict_tracebacks,
    format_exc_info,
)
from structlog.stdlib import ProcessorFormatter, render_to_log_kwargs
from structlog.typing import Processor

from infinium_logging import _default
from infinium_logging._capture import capture_tasks
from infinium_logging.collector import LocalCollector
from infinium_logging.handler import InfiniumHandler
from infinium_logging.model import TaskData, encode_task
from infinium_logging.processor import InfiniumProcessor
from infinium_logging.tasks import task
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET


@pytest.fixture(autouse=True)
def clean_context(clean_environment: None) -> Iterator[None]:
    """The clean environment of conftest, and no bound structlog context left."""
    clear_contextvars()
    yield
    clear_contextvars()


@pytest.fixture
def sink() -> ListSink:
    """Where the processor sends traces."""
    return ListSink()


def chain(*processors: Processor) -> Any:
    """A structlog logger whose calls return what the last processor made (no output)."""
    return structlog.wrap_logger(
        structlog.ReturnLogger(), processors=list(processors), cache_logger_on_first_use=False
    )


def returned(value: Any) -> dict[str, Any]:
    """ReturnLogger hands back ``(args, kwargs)``-free event dicts as its single argument."""
    assert isinstance(value, dict), value
    return value


def to_kwargs(_: Any, __: str, event_dict: Any) -> Any:
    """Final processor: hand the event dict itself to ReturnLogger."""
    return ((event_dict,), {})


# --- tagged events --------------------------------------------------------------------------------


def test_tagged_events_of_every_kind(sink: ListSink) -> None:
    """True, a dict, a TaskData and a name each become one trace."""
    log = chain(add_log_level, InfiniumProcessor(exporter=sink), to_kwargs)
    given = TaskData("Given", "By hand", "2026-01-01T00:00:00.000000Z", 1.0)
    log.info("Answered", infinium=True, output_summary="42", ticket=7)
    log.info("Classified ticket", infinium={"name": "Classify", "duration": 0.5})
    log.info("Sent the struct", infinium=given)
    log.info("Escalated", infinium="Escalate ticket")
    log.info("untagged", infinium=False)
    assert [(t.name, t.description) for t in sink.tasks] == [
        ("Answered", "Answered"),
        ("Classify", "Classified ticket"),
        ("Given", "By hand"),
        ("Escalate ticket", "Escalated"),
    ]
    assert sink.tasks[0].output_summary == "42"
    environment = sink.tasks[1].environment
    assert environment is not None
    assert environment.framework == "structlog"
    assert environment.framework_version == structlog_version()


def structlog_version() -> str:
    """The installed structlog's version, as the processor reports it."""
    return importlib.metadata.version("structlog")


def test_the_tag_is_removed_and_the_dict_is_returned(sink: ListSink) -> None:
    """The processor returns the same dict without its tag key; a renderer never sees a TaskData."""
    processor = InfiniumProcessor(exporter=sink)
    event = {"event": "hi", "infinium": TaskData("n", "d", "2026-01-01T00:00:00Z", 0.0), "a": 1}
    result = processor(None, "info", event)
    assert result is event
    assert result == {"event": "hi", "a": 1}
    rendered = chain(InfiniumProcessor(exporter=sink), JSONRenderer()).info("x", infinium=True)
    assert rendered == '{"event": "x"}'


def test_timestamp_from_timestamper(sink: ListSink) -> None:
    """The trace's time is TimeStamper's timestamp, ISO or epoch."""
    iso = chain(TimeStamper(fmt="iso"), InfiniumProcessor(exporter=sink), to_kwargs)
    stamped = returned(iso.info("iso", infinium=True))
    epoch = chain(TimeStamper(), InfiniumProcessor(exporter=sink), to_kwargs)
    with freeze_time("2026-02-03T04:05:06.5Z"):
        epoch.info("epoch", infinium=True)
    assert sink.tasks[0].current_datetime == stamped["timestamp"]
    assert sink.tasks[1].current_datetime == "2026-02-03T04:05:06.500000Z"


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time 9 hours ahead of UTC (the process's time zone, restored afterwards)."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    "stamper",
    [
        TimeStamper(fmt="iso", utc=False),
        TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),  # structlog's default configuration
        TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=True),
        TimeStamper(fmt="iso", utc=True),
    ],
    ids=["iso-local", "default-config-local", "custom-utc", "iso-utc"],
)
def test_timestamps_without_a_zone_are_read_in_the_zone_they_were_written_in(
    sink: ListSink, tokyo: None, stamper: TimeStamper
) -> None:
    """Text without a zone is local time (``utc=False``) or UTC (``utc=True`` with a format
    of one's own): read when the event is logged, the trace's time is the event's either
    way, not 9 hours off."""
    log = chain(stamper, InfiniumProcessor(exporter=sink), to_kwargs)
    before = time.time()
    log.info("stamped", infinium=True)
    written = dt.datetime.strptime(sink.tasks[0].current_datetime, "%Y-%m-%dT%H:%M:%S.%fZ")
    at = written.replace(tzinfo=dt.timezone.utc).timestamp()
    assert before - 1.5 <= at <= time.time() + 0.5


def test_time_without_timestamper_is_when_logged(sink: ListSink) -> None:
    """Without TimeStamper, the trace's time is when the event was logged, not when it is built."""
    log = chain(InfiniumProcessor(exporter=sink), to_kwargs)
    with freeze_time("2026-02-03T04:05:06.5Z"):
        log.info("no timestamp", infinium=True)
    assert sink.tasks[0].current_datetime == "2026-02-03T04:05:06.500000Z"


def test_an_exception_in_a_task_keeps_no_frames_alive(sink: ListSink) -> None:
    """exc_info is rendered when the event is processed: no traceback is kept by the task."""
    processor = InfiniumProcessor(exporter=sink)

    class Payload:
        pass

    def fail() -> weakref.ref[Payload]:
        payload = Payload()
        reference = weakref.ref(payload)
        try:
            raise ValueError(f"failed with {payload!r}")
        except ValueError as exc:
            processor(None, "error", {"event": "failed", "exc_info": exc, "n": 1})
        return reference

    with task("t"):
        reference = fail()
        gc.collect()
        assert reference() is None
    (step,) = sink.tasks[0].steps or []
    assert (step.action, step.metadata) == ("error", {"n": 1})
    assert step.error is not None
    assert step.error.error_type == "ValueError"


def test_tagged_events_reach_the_collector(
    infinium_collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With credentials in the environment, the default exporter delivers to the collector."""
    monkeypatch.setenv("INFINIUM_BASE_URL", infinium_collector.base_url)
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    monkeypatch.setenv("INFINIUM_TAGS", "team=search")
    log = chain(merge_contextvars, add_log_level, TimeStamper(fmt="iso"), InfiniumProcessor(),
                to_kwargs)  # fmt: skip
    bind_contextvars(request_id="r-9")
    log.info("Classified ticket", infinium={"output_summary": "billing"})
    with task("Answer"):
        log.info("looked it up", tool_call={"tool_name": "kb"})
    assert _default.get_default_exporter().flush(timeout=10)
    assert infinium_collector.wait_for(2, timeout=10)
    traces = {t.task.name: t.task for t in infinium_collector.traces()}
    assert traces["Classified ticket"].output_summary == "billing"
    environment = traces["Classified ticket"].environment
    assert environment is not None
    # The event's own fields (a bound request id here) are its trace's custom tags.
    assert environment.custom_tags == {"team": "search", "request_id": "r-9"}
    (step,) = traces["Answer"].steps or []
    assert (step.action, step.metadata) == ("tool_use", {"request_id": "r-9"})


# --- task steps and levels ------------------------------------------------------------------------


def test_steps_with_context_variables(sink: ListSink) -> None:
    """Inside a task every event is a step; merge_contextvars fields land in metadata."""
    log = chain(merge_contextvars, add_log_level, TimeStamper(fmt="iso"),
                InfiniumProcessor(exporter=sink), to_kwargs)  # fmt: skip
    bind_contextvars(user="ada")
    with task("Answer"):
        log.info("asked", llm_call={"model": "m", "prompt_tokens": 3})
        log.warning("slow", latency=2.5)
    trace = sink.tasks[0]
    assert [(s.action, s.description, s.metadata) for s in trace.steps or ()] == [
        ("llm_inference", "asked", {"user": "ada"}),
        ("log", "slow", {"user": "ada", "latency": 2.5}),
    ]
    assert trace.llm_usage is not None
    assert trace.llm_usage.prompt_tokens == 3


@pytest.mark.parametrize(
    ("method", "level", "recorded"),
    [
        ("debug", None, False),
        ("info", None, False),
        ("warning", None, True),
        ("warn", None, True),
        ("error", None, True),
        ("critical", None, True),
        ("info", "error", True),  # an explicit level wins over the method
        ("error", "debug", False),
    ],
)
def test_min_level(sink: ListSink, method: str, level: str | None, recorded: bool) -> None:
    """Events below min_level are not recorded; level comes from the event, else the method."""
    processor = InfiniumProcessor(exporter=sink, min_level="warning")
    event: dict[str, Any] = {"event": "e"}
    if level is not None:
        event["level"] = level
    with task("t", exporter=sink):
        processor(None, method, event)
    assert len(sink.tasks[0].steps or ()) == (1 if recorded else 0)


def test_error_action_for_error_levels(sink: ListSink) -> None:
    """exception and critical events are error steps."""
    processor = InfiniumProcessor(exporter=sink)
    with task("t"):
        processor(None, "critical", {"event": "down"})
        processor(None, "info", {"event": "fine"})
    assert [s.action for s in sink.tasks[0].steps or ()] == ["error", "log"]


def test_bad_min_level() -> None:
    """An unknown level name is refused at construction."""
    with pytest.raises(ValueError, match="min_level"):
        InfiniumProcessor(exporter=ListSink(), min_level="loud")


# --- exceptions -----------------------------------------------------------------------------------


def _fail() -> None:
    raise ValueError("bad input")


@pytest.mark.parametrize("position", ["before", "after", "dict_before", "none"])
def test_exception_with_formatters_anywhere(sink: ListSink, position: str) -> None:
    """exc_info is read before format_exc_info/dict_tracebacks run, or from what they left."""
    processors: list[Processor] = [add_log_level]
    if position == "before":
        processors.append(format_exc_info)
    if position == "dict_before":
        processors.append(dict_tracebacks)
    processors.append(InfiniumProcessor(exporter=sink))
    if position == "after":
        processors.append(format_exc_info)
    processors.append(to_kwargs)
    log = chain(*processors)
    with task("t"):
        try:
            _fail()
        except ValueError:
            log.exception("failed")
    trace = sink.tasks[0]
    (error,) = trace.errors or []
    assert (error.error_type, error.message, error.recoverable) == ("ValueError", "bad input", True)
    assert error.stack_trace is not None
    assert "_fail" in error.stack_trace
    assert [s.action for s in trace.steps or ()] == ["error"]


def test_exc_info_as_exception_or_tuple(sink: ListSink) -> None:
    """exc_info may be an exception instance or a sys.exc_info() tuple."""
    log = chain(InfiniumProcessor(exporter=sink), to_kwargs)
    try:
        _fail()
    except ValueError as exc:
        caught = exc
        triple = sys.exc_info()
    log.error("as instance", exc_info=caught, infinium=True)
    log.error("as tuple", exc_info=triple, infinium=True)
    assert [[e.error_type for e in t.errors or ()] for t in sink.tasks] == [
        ["ValueError"],
        ["ValueError"],
    ]


# --- robustness -----------------------------------------------------------------------------------


def test_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """A failing exporter never reaches the caller (no DropEvent either); the event passes on."""

    class Broken:
        def submit(self, task: object) -> bool:
            raise RuntimeError("sink is broken")

    log = chain(InfiniumProcessor(exporter=Broken()), to_kwargs)
    event = returned(log.info("still logged", infinium=True, a=1))
    assert event == {"event": "still logged", "a": 1}
    assert "could not record" in caplog.text


@pytest.mark.parametrize(
    "renderer",
    [
        JSONRenderer(),
        JSONRenderer(serializer=lambda event, **kw: json.dumps(event, **kw).encode()),
        to_kwargs,
    ],
    ids=["str", "bytes", "args-kwargs"],
)
def test_after_the_renderer_it_passes_the_output_on_and_says_where_it_belongs(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    sink: ListSink,
    renderer: Processor,
) -> None:
    """Placed after a renderer, it is handed text, bytes or (args, kwargs), even ones that
    contain its tag key: it passes them on untouched, inside a task too, and warns once (on
    the library's logger) that it belongs before the renderer."""
    monkeypatch.setattr(_default, "_warned", {})
    log, alone = chain(renderer, InfiniumProcessor(exporter=sink)), chain(renderer)
    plain = log.info("quiet")
    tagged = log.info("tagged infinium event", infinium=True)
    with task("Renderer first", exporter=sink):
        in_task = log.info("in a task")
    assert plain == alone.info("quiet")
    assert tagged == alone.info("tagged infinium event", infinium=True)
    assert in_task == alone.info("in a task")
    warnings = [r for r in caplog.records if "before the renderer" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].name.startswith("infinium_logging")
    assert len(sink.tasks) == 1 and not sink.tasks[0].steps  # the task, without the event


def test_after_render_to_log_kwargs_it_records_nothing_and_says_where_it_belongs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, sink: ListSink
) -> None:
    """After ``render_to_log_kwargs`` the event is logging's keyword arguments (a dict with
    ``msg`` and ``extra``): inside a task it is no step of junk, and it warns once."""
    monkeypatch.setattr(_default, "_warned", {})
    log = chain(render_to_log_kwargs, InfiniumProcessor(exporter=sink))
    with task("Bridge first", exporter=sink):
        out = log.info("in a task", a=1)
        log.info("again")
    assert out == ((), {"msg": "in a task", "extra": {"a": 1}})
    assert len(sink.tasks) == 1 and not sink.tasks[0].steps
    warnings = [r for r in caplog.records if "before the bridge" in r.getMessage()]
    assert len(warnings) == 1


def test_after_event_renamer_the_message_is_still_the_description(sink: ListSink) -> None:
    """``EventRenamer`` before the processor moves the message to ``msg`` / ``message``."""
    for key in ("msg", "message"):
        log = chain(EventRenamer(key), InfiniumProcessor(exporter=sink), to_kwargs)
        log.info("Renamed trace", infinium=True, k=1)
        with task("Renamed steps", exporter=sink):
            log.info("a step", k=2)
    names = [t.name for t in sink.tasks]
    assert names == ["Renamed trace", "Renamed steps"] * 2
    for trace in sink.tasks[1::2]:
        # The message is the description, not a field of the step's metadata as well.
        assert [(s.description, s.metadata) for s in trace.steps or ()] == [("a step", {"k": 2})]


def test_the_official_clients_task_data_as_a_tag_is_that_trace(sink: ListSink) -> None:
    """The official client's TaskData (a dataclass) under the tag: its fields are the trace."""
    log = chain(InfiniumProcessor(exporter=sink), to_kwargs)
    assert returned(log.info("processed", infinium=official_trace())) == {"event": "processed"}
    (trace,) = sink.tasks
    assert trace.name == "Classify ticket" and trace.output_summary == "billing"
    assert OFFICIAL_BODY_PART in encode_task(trace)


def test_disabled_only_removes_the_tag(monkeypatch: pytest.MonkeyPatch, sink: ListSink) -> None:
    """INFINIUM_DISABLED=true: nothing is recorded, the tag is still removed; capture works."""
    monkeypatch.setenv("INFINIUM_DISABLED", "true")
    log = chain(InfiniumProcessor(), to_kwargs)
    assert returned(log.info("x", infinium=True)) == {"event": "x"}
    own = chain(InfiniumProcessor(exporter=sink), to_kwargs)
    own.info("y", infinium=True)
    assert sink.tasks == []
    with capture_tasks() as captured:
        log.info("z", infinium=True)
    assert [t.name for t in captured] == ["z"]


def test_custom_tag_key(sink: ListSink) -> None:
    """tag_key renames the control key."""
    log = chain(InfiniumProcessor(exporter=sink, tag_key="trace"), to_kwargs)
    assert returned(log.info("x", trace=True, infinium="kept")) == {
        "event": "x",
        "infinium": "kept",
    }
    assert [t.name for t in sink.tasks] == ["x"]


# --- structlog bridged into stdlib: one step and one trace per event ---------------------------------


def _bridged(stdlib_logger: logging.Logger, last: Processor, *, processor: bool) -> Any:
    processors: list[Processor] = [merge_contextvars, add_log_level]
    if processor:
        processors.append(InfiniumProcessor(exporter=SINK_FOR_BRIDGE))
    processors.append(last)
    return structlog.wrap_logger(
        stdlib_logger,
        processors=processors,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


SINK_FOR_BRIDGE = ListSink()


@pytest.mark.parametrize(
    "last",
    [ProcessorFormatter.wrap_for_formatter, render_to_log_kwargs, JSONRenderer()],
    ids=["wrap_for_formatter", "render_to_log_kwargs", "JSONRenderer"],
)
def test_bridge_without_duplicates(stdlib_logger: logging.Logger, last: Processor) -> None:
    """Processor and handler both see each event: one trace per tagged event, one step per event."""
    SINK_FOR_BRIDGE.tasks.clear()
    handler = InfiniumHandler(exporter=SINK_FOR_BRIDGE)
    handler.setFormatter(ProcessorFormatter(processors=[ProcessorFormatter.remove_processors_meta,
                                                        JSONRenderer()]))  # fmt: skip
    stdlib_logger.addHandler(handler)
    log = _bridged(stdlib_logger, last, processor=True)
    log.info("Classified ticket", infinium={"output_summary": "billing"})
    with task("Answer"):
        log.info("first step", n=1)
        log.warning("second step", n=2)
        stdlib_logger.info("plain stdlib step")
    names = [t.name for t in SINK_FOR_BRIDGE.tasks]
    assert names == ["Classified ticket", "Answer"]
    steps = SINK_FOR_BRIDGE.tasks[1].steps or []
    assert [s.description for s in steps] == ["first step", "second step", "plain stdlib step"]
    assert steps[0].metadata == {"n": 1}


@pytest.mark.parametrize(
    "last",
    [ProcessorFormatter.wrap_for_formatter, render_to_log_kwargs, JSONRenderer()],
    ids=["wrap_for_formatter", "render_to_log_kwargs", "JSONRenderer"],
)
def test_bridge_inside_a_task_one_record_per_event_whatever_its_text(
    stdlib_logger: logging.Logger, last: Processor
) -> None:
    """Inside a task, each event gives one step however the renderer writes its text
    (escaped non-ASCII, quotes, line breaks), and a tagged event one trace and no step."""
    SINK_FOR_BRIDGE.tasks.clear()
    stdlib_logger.addHandler(InfiniumHandler(exporter=SINK_FOR_BRIDGE))
    log = _bridged(stdlib_logger, last, processor=True)
    texts = ["Résumé parsed", 'said "hi"', "two\nlines", "back\\slash"]
    with task("Outer"):
        for text in texts:
            log.info(text)
        log.info("Classified", infinium={"output_summary": "billing"})
    names = [t.name for t in SINK_FOR_BRIDGE.tasks]
    assert names == ["Classified", "Outer"]
    assert [s.description for s in SINK_FOR_BRIDGE.tasks[1].steps or ()] == texts


@pytest.mark.parametrize(
    "last",
    [ProcessorFormatter.wrap_for_formatter, render_to_log_kwargs, JSONRenderer()],
    ids=["wrap_for_formatter", "render_to_log_kwargs", "JSONRenderer"],
)
def test_bridge_with_handlers_on_a_logger_and_its_parent(
    stdlib_logger: logging.Logger, last: Processor
) -> None:
    """The processor in the chain and an InfiniumHandler on both a child logger and its
    parent (the root, say): the first handler knows the record as the processor's event, and
    the second must too: one step, one error, and a tagged event is one trace and no step."""
    SINK_FOR_BRIDGE.tasks.clear()
    child = stdlib_logger.getChild("app")
    child.propagate = True
    for logger in (stdlib_logger, child):
        logger.addHandler(InfiniumHandler(exporter=SINK_FOR_BRIDGE))
    try:
        log = _bridged(child, last, processor=True)
        with task("T"):
            log.info("one event")
            try:
                _fail()
            except ValueError:
                log.exception("failed once")
            log.info("Classified", infinium={"output_summary": "billing"})
    finally:
        for handler in list(child.handlers):
            child.removeHandler(handler)
            handler.close()
    assert [t.name for t in SINK_FOR_BRIDGE.tasks] == ["Classified", "T"]
    trace = SINK_FOR_BRIDGE.tasks[1]
    assert [s.description for s in trace.steps or ()] == ["one event", "failed once"]
    assert [e.error_type for e in trace.errors or ()] == ["ValueError"]


def test_processor_in_the_foreign_pre_chain_of_two_formatters_and_a_handler(
    stdlib_logger: logging.Logger,
) -> None:
    """structlog's documented setup: one list of shared processors (the processor among
    them) for configure() and for each ProcessorFormatter's foreign_pre_chain, with an
    InfiniumHandler too.  A stdlib record is formatted by each formatter, so the processor
    sees it twice, and the handler sees it once: one step, one error, one trace."""
    sink = ListSink()
    shared: list[Processor] = [
        add_log_level,
        structlog.stdlib.ExtraAdder(),
        InfiniumProcessor(exporter=sink),
    ]
    streams = []
    stdlib_logger.addHandler(InfiniumHandler(exporter=sink))
    for renderer in (JSONRenderer(), structlog.dev.ConsoleRenderer(colors=False)):
        stream = logging.StreamHandler(io.StringIO())
        stream.setFormatter(ProcessorFormatter(foreign_pre_chain=shared, processor=renderer))
        stdlib_logger.addHandler(stream)
        streams.append(stream)
    stdlib_logger.addHandler(InfiniumHandler(exporter=sink))  # after the formatters as well
    with task("T", exporter=sink):
        stdlib_logger.info("stdlib event")
        try:
            _fail()
        except ValueError:
            stdlib_logger.exception("stdlib failure")
    stdlib_logger.info("tagged", extra={"infinium": {"output_summary": "done"}})
    assert [t.name for t in sink.tasks] == ["T", "tagged"]
    trace = sink.tasks[0]
    assert [s.description for s in trace.steps or ()] == ["stdlib event", "stdlib failure"]
    assert [e.error_type for e in trace.errors or ()] == ["ValueError"]
    assert all("stdlib event" in s.stream.getvalue() for s in streams)


@pytest.mark.parametrize("lost_by", ["DropEvent", "handler level", "handler filter"])
def test_bridge_an_event_that_never_reaches_the_handler_costs_no_other_record(
    stdlib_logger: logging.Logger, lost_by: str
) -> None:
    """The processor records an event that the stdlib side then never hands to the handler
    (a later processor drops it, the handler's level or filter refuses it): a record logged
    straight to the same stdlib logger afterwards, at the same level and containing the same
    text, is still a step."""
    SINK_FOR_BRIDGE.tasks.clear()
    handler = InfiniumHandler(exporter=SINK_FOR_BRIDGE)
    stdlib_logger.addHandler(handler)
    processors: list[Processor] = [add_log_level, InfiniumProcessor(exporter=SINK_FOR_BRIDGE)]

    def drop(_: Any, __: str, event_dict: Any) -> Any:
        raise structlog.DropEvent

    if lost_by == "DropEvent":
        processors.append(drop)
    elif lost_by == "handler level":
        handler.setLevel(logging.WARNING)
    else:
        handler.addFilter(lambda record: record.msg != "a")
    processors.append(render_to_log_kwargs)
    log = structlog.wrap_logger(
        stdlib_logger,
        processors=processors,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    level = logging.WARNING if lost_by == "handler level" else logging.INFO
    with task("T"):
        log.info("a")
        stdlib_logger.log(level, "a disk almost full")
    steps = SINK_FOR_BRIDGE.tasks[0].steps or ()
    assert [s.description for s in steps] == ["a", "a disk almost full"]


def test_bridge_with_the_handler_alone(stdlib_logger: logging.Logger) -> None:
    """Without the processor, the handler reads bridged event dicts itself."""
    SINK_FOR_BRIDGE.tasks.clear()
    stdlib_logger.addHandler(InfiniumHandler(exporter=SINK_FOR_BRIDGE))
    log = _bridged(stdlib_logger, ProcessorFormatter.wrap_for_formatter, processor=False)
    bind_contextvars(request_id="r-1")
    log.info("Classified ticket", infinium=True, output_summary="billing")
    with task("Answer"):
        log.info("looked up", tool_call={"tool_name": "kb"})
        try:
            _fail()
        except ValueError:
            log.exception("lookup failed")
    tagged, answer = SINK_FOR_BRIDGE.tasks
    assert (tagged.name, tagged.output_summary) == ("Classified ticket", "billing")
    assert tagged.environment is not None
    assert tagged.environment.framework == "structlog"
    assert tagged.environment.framework_version == importlib.metadata.version("structlog")
    assert answer.environment is not None
    assert answer.environment.framework_version == tagged.environment.framework_version
    steps = answer.steps or []
    assert [(s.action, s.metadata) for s in steps] == [
        ("tool_use", {"request_id": "r-1"}),
        ("error", {"request_id": "r-1"}),
    ]
    assert [e.error_type for e in answer.errors or ()] == ["ValueError"]


def test_bridge_with_the_handler_alone_through_render_to_log_kwargs(
    stdlib_logger: logging.Logger,
) -> None:
    """render_to_log_kwargs hands the event dict to the record as ``extra``: structlog's
    ``level`` and ``logger`` only repeat the record's own and are not step fields (as through
    the processor); the application's fields are, and so are ``level``/``logger`` fields that
    say something else."""
    SINK_FOR_BRIDGE.tasks.clear()
    stdlib_logger.addHandler(InfiniumHandler(exporter=SINK_FOR_BRIDGE))
    log = structlog.wrap_logger(
        stdlib_logger,
        processors=[add_log_level, structlog.stdlib.add_logger_name, render_to_log_kwargs],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    with task("T"):
        log.info("hello", k=1)
        log.warning("careful", k=2)
        stdlib_logger.info("plain", extra={"level": "high", "logger": "pump-7"})
    steps = SINK_FOR_BRIDGE.tasks[0].steps or ()
    assert [s.metadata for s in steps] == [
        {"k": 1},
        {"k": 2},
        {"level": "high", "logger": "pump-7"},
    ]


def test_the_librarys_own_records_never_become_steps_through_a_formatter(
    stdlib_logger: logging.Logger,
) -> None:
    """With the processor in a ``ProcessorFormatter`` (stdlib records formatted by structlog),
    the library's own warnings and urllib3's records are not steps of the application's task,
    as they are not through the handler; the application's own records are."""
    sink = ListSink()
    stream = logging.StreamHandler(io.StringIO())
    stream.setFormatter(
        ProcessorFormatter(
            processors=[
                InfiniumProcessor(exporter=sink),
                ProcessorFormatter.remove_processors_meta,
                JSONRenderer(),
            ]
        )
    )
    loggers = [
        stdlib_logger,
        logging.getLogger("infinium_logging.tasks"),
        logging.getLogger("urllib3"),
    ]
    for logger in loggers:
        logger.addHandler(stream)
    try:
        with task("T", exporter=sink):
            stdlib_logger.warning("the application's")
            loggers[1].warning("infinium_logging: the library's own")
            loggers[2].warning("urllib3's")
    finally:
        for logger in loggers:
            logger.removeHandler(stream)
    assert [s.description for s in sink.tasks[0].steps or ()] == ["the application's"]


@pytest.mark.parametrize("value", [0, "", False, None, [], 0.0])
def test_a_value_that_is_no_tag_leaves_an_ordinary_event(sink: ListSink, value: object) -> None:
    """A false tag value (``0``, ``""``, ...) makes no trace: the event stays an ordinary one,
    a step inside a task, and the key is still removed."""
    log = chain(InfiniumProcessor(exporter=sink), to_kwargs)
    outside = returned(log.info("outside", infinium=value))
    with task("T", exporter=sink):
        inside = returned(log.info("inside", infinium=value))
    assert outside == {"event": "outside"} and inside == {"event": "inside"}
    assert [t.name for t in sink.tasks] == ["T"]
    assert [s.description for s in sink.tasks[0].steps or ()] == ["inside"]
