"""InfiniumHandler: tagged records, task steps, dictConfig, recursion, robustness, lifecycle.

The tests that deliver go through the real Exporter to the real LocalCollector.
"""

from __future__ import annotations

import logging
import logging.config
import os
import subprocess
import sys
import threading
import time
import uuid
import weakref
from typing import Any

import pytest
from freezegun import freeze_time
from sinks import OFFICIAL_BODY_PART, ListSink, official_trace

from infinium_logging import _default
from infinium_logging._capture import capture_tasks
from infinium_logging.collector import LocalCollector
from infinium_logging.errors import ConfigurationError
from infinium_logging.exporter import Exporter
from infinium_logging.handler import InfiniumHandler
from infinium_logging.model import TaskData
from infinium_logging.tasks import task
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET


class RaisingSink:
    """A sink that fails, as a broken user-provided exporter might."""

    def submit(self, task: object) -> bool:
        raise RuntimeError("sink is broken")


pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def collector_env(
    infinium_collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> LocalCollector:
    """The environment points the default exporter at a local collector."""
    monkeypatch.setenv("INFINIUM_BASE_URL", infinium_collector.base_url)
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    monkeypatch.setenv("INFINIUM_ENABLE_RATE_LIMITING", "false")
    return infinium_collector


@pytest.fixture
def logger(stdlib_logger: logging.Logger) -> logging.Logger:
    """The test's own logger (see conftest)."""
    return stdlib_logger


def _attach(log: logging.Logger, handler: logging.Handler) -> logging.Handler:
    log.addHandler(handler)
    return handler


# --- tagged records through the real exporter to the collector --------------------------------------


def test_tagged_records_of_every_kind_reach_the_collector(
    collector_env: LocalCollector, logger: logging.Logger
) -> None:
    """True, a dict, a TaskData and a name each give one trace, as the collector stores it."""
    handler = _attach(logger, InfiniumHandler())
    given = TaskData("Given struct", "Built by hand", "2026-01-01T00:00:00.000000Z", 1.5)
    logger.info("Answered %s", "question", extra={"infinium": True, "output_summary": "42"})
    logger.info("Classified ticket", extra={"infinium": {"name": "Classify", "duration": 0.8}})
    logger.info("Sent the struct", extra={"infinium": given})
    logger.warning("Escalated", extra={"infinium": "Escalate ticket"})
    logger.info("not tagged", extra={"infinium": False})
    handler.flush()
    assert collector_env.wait_for(4, timeout=10)
    traces = {t.task.name: t.task for t in collector_env.traces()}
    assert set(traces) == {"Answered question", "Classify", "Given struct", "Escalate ticket"}
    assert traces["Answered question"].output_summary == "42"
    assert traces["Classify"].description == "Classified ticket"
    assert traces["Classify"].duration == 0.8
    assert traces["Given struct"].description == "Built by hand"
    assert traces["Escalate ticket"].description == "Escalated"
    environment = traces["Classify"].environment
    assert environment is not None
    assert environment.framework == "logging"
    assert environment.custom_tags == {"logger": logger.name}


def test_the_official_clients_task_data_as_a_tag_is_that_trace(
    collector_env: LocalCollector, logger: logging.Logger
) -> None:
    """Migrating ``send_task_data(task)`` to ``extra={"infinium": task}`` with the official
    client's TaskData (a dataclass): its fields are the trace, not the log message."""
    handler = _attach(logger, InfiniumHandler())
    logger.info("processed", extra={"infinium": official_trace()})
    handler.flush()
    assert collector_env.wait_for(1, timeout=10)
    (received,) = collector_env.traces()
    assert received.task.name == "Classify ticket"
    assert OFFICIAL_BODY_PART in received.body


def test_task_with_odd_fields_reaches_the_collector(
    collector_env: LocalCollector, logger: logging.Logger
) -> None:
    """A task whose events carry values JSON cannot hold arrives as a valid trace."""

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    handler = _attach(logger, InfiniumHandler())
    with task("Odd fields"):
        logger.info(
            "odd",
            extra={"data": b"\xff\xfe", "big": 10**40, "s": {3, 1}, "b": Broken(), "u": "\ud800"},
        )
        logger.info("huge", extra={"text": "x" * 3_000_000})
    handler.flush()
    assert collector_env.wait_for(1, timeout=10)
    (received,) = collector_env.traces()
    steps = received.task.steps or []
    assert steps[0].metadata is not None
    assert steps[0].metadata["s"] == [1, 3]
    assert steps[0].metadata["b"] == "<unrepresentable Broken>"
    assert steps[0].metadata["big"] == 10**40
    assert len(received.body) < 1_048_576


def test_dictconfig_with_credentials_from_the_environment(collector_env: LocalCollector) -> None:
    """dictConfig builds the handler from its dotted name; the environment supplies the rest."""
    name = f"tests.handler.dictconfig.{uuid.uuid4().hex}"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "infinium": {
                    "class": "infinium_logging.handler.InfiniumHandler",
                    "level": "INFO",
                    "tag_key": "trace",
                }
            },
            "loggers": {name: {"handlers": ["infinium"], "level": "DEBUG", "propagate": False}},
        }
    )
    log = logging.getLogger(name)
    (handler,) = log.handlers
    try:
        assert isinstance(handler, InfiniumHandler)
        assert handler.level == logging.INFO
        log.debug("below the handler's level", extra={"trace": True})
        log.info("Configured by dict", extra={"trace": {"input_summary": "dictConfig"}})
        handler.flush()
        assert collector_env.wait_for(1, timeout=10)
        (received,) = collector_env.traces()
        assert received.task.name == "Configured by dict"
        assert received.task.input_summary == "dictConfig"
    finally:
        log.removeHandler(handler)
        handler.close()


def test_dictconfig_without_credentials_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Missing credentials, where they are required, fail where the handler is configured,
    naming what to set.

    Built through the configurator dictConfig uses, without resetting the
    process's logging as a full dictConfig call would.
    """
    monkeypatch.setenv("INFINIUM_REQUIRED", "true")
    configurator = logging.config.DictConfigurator({"version": 1})
    with pytest.raises(ConfigurationError, match="INFINIUM_AGENT_ID"):
        configurator.configure_handler({"class": "infinium_logging.handler.InfiniumHandler"})
    with pytest.raises(ConfigurationError, match="INFINIUM_AGENT_ID"):
        InfiniumHandler()


def test_a_sink_of_ones_own_that_logs_does_not_recurse(stdlib_logger: logging.Logger) -> None:
    """A sink that logs (a tagged event, or anything inside a task) through the logger whose
    handler called it: what it logs is not recorded, as the exporter's own logging is not,
    and the application's call returns."""

    class LoggingSink(ListSink):
        def submit(self, task: Any) -> bool:
            accepted = super().submit(task)
            stdlib_logger.info("the sink got %s", self.tasks[-1].name, extra={"infinium": True})
            return accepted

    sink = LoggingSink()
    stdlib_logger.addHandler(InfiniumHandler(exporter=sink))
    stdlib_logger.info("tagged", extra={"infinium": True})
    with task("outer"), task("inner"):
        stdlib_logger.info("a step")
    assert [t.name for t in sink.tasks] == ["tagged", "inner", "outer"]
    steps = sink.tasks[2].steps or ()
    assert [s.description for s in steps] == ["inner"]  # the subtask; not the sink's line


def test_no_recursion_with_urllib3_debug_on_the_root_logger(collector_env: LocalCollector) -> None:
    """The handler on the root logger with urllib3 at DEBUG: every trace once, nothing more."""
    root = logging.getLogger()
    urllib3_logger = logging.getLogger("urllib3")
    seen: list[logging.LogRecord] = []

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    counter = Counter()
    old_root_level, old_urllib3_level = root.level, urllib3_logger.level
    handler = InfiniumHandler()
    root.addHandler(handler)
    urllib3_logger.addHandler(counter)
    root.setLevel(logging.DEBUG)
    urllib3_logger.setLevel(logging.DEBUG)
    try:
        with task("Recursion check"):
            for i in range(3):
                logging.getLogger("tests.recursion").info("step %d", i)
            # A synchronous send inside the task: urllib3 logs on this very thread, in the task.
            direct = TaskData("Sent synchronously", "direct", "2026-01-01T00:00:00Z", 0.0)
            assert _default.get_default_exporter().send(direct).success
        for i in range(3):
            logging.getLogger("tests.recursion").info("tagged %d", i, extra={"infinium": True})
        handler.flush()
        assert collector_env.wait_for(5, timeout=10)
        handler.flush()
    finally:
        root.removeHandler(handler)
        urllib3_logger.removeHandler(counter)
        root.setLevel(old_root_level)
        urllib3_logger.setLevel(old_urllib3_level)
        handler.close()
    names = sorted(t.task.name for t in collector_env.traces())
    assert names == ["Recursion check", "Sent synchronously", "tagged 0", "tagged 1", "tagged 2"]
    (traced,) = [t.task for t in collector_env.traces() if t.task.name == "Recursion check"]
    assert [s.description for s in traced.steps or ()] == ["step 0", "step 1", "step 2"]
    # urllib3 did log at DEBUG, also on the task's own thread.
    assert any(r.thread == threading.get_ident() for r in seen)
    assert any(r.thread != threading.get_ident() for r in seen)


def test_handler_with_its_own_exporter(infinium_collector: LocalCollector) -> None:
    """Settings given to the handler make an exporter of its own, shut down by close()."""
    log = logging.getLogger(f"tests.handler.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = InfiniumHandler(
        logging.INFO,
        base_url=infinium_collector.base_url,
        agent_id=TEST_AGENT_ID,
        agent_secret=TEST_AGENT_SECRET,
        tags={"team": "search"},
    )
    log.addHandler(handler)
    log.info("own exporter", extra={"infinium": True})
    handler.flush()
    assert infinium_collector.wait_for(1, timeout=10)
    own = handler.exporter
    assert isinstance(own, Exporter)
    log.removeHandler(handler)
    handler.close()
    handler.close()  # idempotent
    assert own.closed
    (received,) = infinium_collector.traces()
    assert received.task.environment is not None
    assert received.task.environment.custom_tags == {"team": "search", "logger": log.name}


def test_close_leaves_a_shared_exporter_running(infinium_collector: LocalCollector) -> None:
    """An exporter passed in is the caller's: close() flushes nothing away and shuts nothing."""
    with Exporter(
        base_url=infinium_collector.base_url, agent_id=TEST_AGENT_ID, agent_secret=TEST_AGENT_SECRET
    ) as exporter:
        handler = InfiniumHandler(exporter=exporter)
        handler.close()
        assert not exporter.closed


def test_configure_after_the_handler_is_used(
    collector_env: LocalCollector, logger: logging.Logger
) -> None:
    """configure() replaces the default exporter for handlers that rely on the default."""
    _attach(logger, InfiniumHandler())
    exporter = _default.configure(tags={"stage": "test"})
    logger.info("after configure", extra={"infinium": True})
    assert exporter.flush(timeout=10)
    assert exporter.stats().sent == 1
    (received,) = collector_env.traces()
    assert received.task.environment is not None
    assert received.task.environment.custom_tags == {"stage": "test", "logger": logger.name}


# --- behaviour without the network ----------------------------------------------------------------


def test_fields_come_from_extra_only(logger: logging.Logger) -> None:
    """Standard record attributes and private keys are not fields; extra= keys are."""
    sink = ListSink()
    handler = _attach(logger, InfiniumHandler(exporter=sink))
    formatter = logging.Formatter("%(asctime)s %(message)s")
    with task("t", exporter=sink):
        record = logger.makeRecord(
            logger.name, logging.INFO, __file__, 1, "hi %s", ("there",), None,
            extra={"ticket": 7, "_hidden": 1, "category": "billing"},
        )  # fmt: skip
        formatter.format(record)  # adds message and asctime, as another handler would
        handler.handle(record)
    (trace,) = sink.tasks
    (step,) = trace.steps or []
    assert step.description == "hi there"
    assert step.metadata == {"ticket": 7, "category": "billing"}


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        ("infinium_logging", True),
        ("infinium_logging.exporter", True),
        ("urllib3", True),
        ("urllib3.connectionpool", True),
        ("urllib3_extra", False),
        ("myapp.urllib3", False),
    ],
)
def test_ignored_loggers(name: str, ignored: bool) -> None:
    """The library's own and urllib3's loggers (and their children) never become traces."""
    sink = ListSink()
    handler = InfiniumHandler(exporter=sink)
    record = logging.LogRecord(name, logging.INFO, __file__, 1, "x", (), None)
    record.infinium = True
    handler.handle(record)
    assert len(sink.tasks) == (0 if ignored else 1)


def test_records_on_exporter_threads_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the exporter is exporting on this thread, nothing is captured."""
    sink = ListSink()
    handler = InfiniumHandler(exporter=sink)
    monkeypatch.setattr("infinium_logging.handler.in_export", lambda: True)
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "x", (), None)
    record.infinium = True
    handler.handle(record)
    assert sink.tasks == []


def test_emit_never_raises(logger: logging.Logger) -> None:
    """A failing exporter goes to handleError; the caller never sees an exception."""
    errors: list[logging.LogRecord] = []

    class Quiet(InfiniumHandler):
        def handleError(self, record: logging.LogRecord) -> None:
            errors.append(record)

    _attach(logger, Quiet(exporter=RaisingSink()))
    logger.info("tagged", extra={"infinium": True})
    assert [r.getMessage() for r in errors] == ["tagged"]


def test_bad_format_arguments_still_give_a_trace() -> None:
    """A message whose %-arguments do not fit is named by its format string."""
    sink = ListSink()
    handler = InfiniumHandler(exporter=sink)
    record = logging.LogRecord(
        "app", logging.INFO, __file__, 1, "needs %d numbers %d", ("one",), None
    )
    record.infinium = True
    handler.handle(record)
    assert [t.name for t in sink.tasks] == ["needs %d numbers %d"]


def test_disabled_does_nothing_but_capture_still_works(
    monkeypatch: pytest.MonkeyPatch, logger: logging.Logger
) -> None:
    """INFINIUM_DISABLED=true: no credentials needed, nothing sent, capture_tasks still sees it."""
    monkeypatch.setenv("INFINIUM_DISABLED", "true")
    sink = ListSink()
    _attach(logger, InfiniumHandler())
    _attach(logger, InfiniumHandler(exporter=sink))
    logger.info("while disabled", extra={"infinium": True})
    with task("disabled task"):
        logger.info("a step")
    assert sink.tasks == []
    with capture_tasks() as captured:
        logger.info("captured", extra={"infinium": True})
    assert [t.name for t in captured] == ["captured"]


def test_two_handlers_one_destination_send_once() -> None:
    """A handler on a parent and one on a child, same destination: one trace, one step."""
    sink = ListSink()
    parent = logging.getLogger(f"tests.handler.{uuid.uuid4().hex}")
    child = parent.getChild("child")
    parent.propagate = False
    parent.setLevel(logging.INFO)
    handlers = [InfiniumHandler(exporter=sink), InfiniumHandler(exporter=sink)]
    parent.addHandler(handlers[0])
    child.addHandler(handlers[1])
    try:
        child.info("tagged", extra={"infinium": True})
        with task("t"):
            child.info("a step")
    finally:
        parent.removeHandler(handlers[0])
        child.removeHandler(handlers[1])
    assert [t.name for t in sink.tasks] == ["tagged", "t"]
    assert [s.description for s in sink.tasks[1].steps or ()] == ["a step"]


@pytest.mark.parametrize("handlers", [1, 2])
def test_records_made_within_one_clock_tick_are_all_kept(handlers: int) -> None:
    """Records logged one after another share their time on a coarse clock (and under
    freezegun), and a freed record's memory goes to the next one: each is still a trace or a
    step of its own, and one record seen by two handlers still counts once."""
    sink = ListSink()
    parent = logging.getLogger(f"tests.handler.{uuid.uuid4().hex}")
    child = parent.getChild("child")
    parent.propagate = False
    parent.setLevel(logging.INFO)
    attached = [(parent, InfiniumHandler(exporter=sink))]
    if handlers == 2:
        attached.append((child, InfiniumHandler(exporter=sink)))
    for logger, handler in attached:
        logger.addHandler(handler)
    try:
        with freeze_time("2026-01-01 12:00:00"):
            with task("frozen", exporter=sink):
                for number in range(5):
                    child.info("step %d", number)
            for number in range(5):
                child.info("tagged %d", number, extra={"infinium": True})
    finally:
        for logger, handler in attached:
            logger.removeHandler(handler)
    assert [t.name for t in sink.tasks] == ["frozen"] + [f"tagged {n}" for n in range(5)]
    assert [s.description for s in sink.tasks[0].steps or ()] == [f"step {n}" for n in range(5)]


def test_filters_apply_to_captured_records(logger: logging.Logger) -> None:
    """A handler filter that rejects a record keeps it out of traces."""
    sink = ListSink()
    handler = _attach(logger, InfiniumHandler(exporter=sink))
    handler.addFilter(lambda record: "secret" not in record.getMessage())
    logger.info("secret stuff", extra={"infinium": True})
    logger.info("public stuff", extra={"infinium": True})
    assert [t.name for t in sink.tasks] == ["public stuff"]


def test_a_handler_filter_sees_every_record_and_may_tag_it(logger: logging.Logger) -> None:
    """As for any handler, its filters see every record, untagged ones included: a filter that
    tags (here: every WARNING and above is a trace) works on the handler, not only the logger."""
    sink = ListSink()
    handler = _attach(logger, InfiniumHandler(exporter=sink))
    seen: list[str] = []

    def tag_warnings(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        if record.levelno >= logging.WARNING:
            record.infinium = True
        return True

    handler.addFilter(tag_warnings)
    logger.info("routine")
    logger.warning("disk almost full")
    assert seen == ["routine", "disk almost full"]
    assert [t.name for t in sink.tasks] == ["disk almost full"]


def test_logging_shutdown_waits_once_for_handlers_sharing_an_exporter(
    infinium_collector: LocalCollector,
) -> None:
    """logging.shutdown() flushes every handler in turn: three handlers on one exporter whose
    traces are stuck wait for them once, not three times."""
    infinium_collector.hang_next(100)
    exporter = Exporter(
        base_url=infinium_collector.base_url,
        agent_id=TEST_AGENT_ID,
        agent_secret=TEST_AGENT_SECRET,
        timeout=30.0,
        shutdown_timeout=1.0,
        enable_rate_limiting=False,
    )
    handlers = [InfiniumHandler(exporter=exporter) for _ in range(3)]
    loggers = [logging.getLogger(f"tests.handler.shutdown.{i}") for i in range(3)]
    try:
        for logger, handler in zip(loggers, handlers, strict=True):
            logger.addHandler(handler)
            logger.warning("stuck", extra={"infinium": True})
        started = time.monotonic()
        logging.shutdown([weakref.ref(h) for h in handlers])
        took = time.monotonic() - started
        assert 1.0 <= took < 2.0
        exporter.submit(TaskData("new", "d", "2026-01-01T00:00:00Z", 1.0))
        started = time.monotonic()
        handlers[0].flush()  # something new was submitted: this one waits again
        assert time.monotonic() - started >= 1.0
    finally:
        for logger, handler in zip(loggers, handlers, strict=True):
            logger.removeHandler(handler)
        exporter.shutdown(0)


def test_constructor_checks() -> None:
    """Bad options fail at construction with a clear message."""
    with pytest.raises(ValueError, match="tag_key"):
        InfiniumHandler(exporter=ListSink(), tag_key="")
    with pytest.raises(TypeError, match="submit"):
        InfiniumHandler(exporter=object())  # type: ignore[arg-type]
    handler = InfiniumHandler(exporter=ListSink())
    assert "ListSink" in repr(handler)


def test_flush_without_an_exporter_is_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    """flush() before any default exporter exists creates none and returns at once."""
    monkeypatch.setenv("INFINIUM_DISABLED", "true")
    handler = InfiniumHandler()
    handler.flush()
    assert _default.peek_default_exporter() is None


def test_the_handler_works_without_structlog() -> None:
    """The stdlib path never imports structlog: it works where structlog cannot be imported."""
    code = "\n".join(
        [
            "import logging, sys",
            "sys.modules['structlog'] = None  # any import of structlog now fails",
            "from infinium_logging.handler import InfiniumHandler",
            "from infinium_logging.tasks import task",
            "from infinium_logging._capture import capture_tasks",
            "log = logging.getLogger('no_structlog')",
            "log.addHandler(InfiniumHandler())",
            "log.setLevel(logging.INFO)",
            "with capture_tasks() as tasks:",
            "    log.info('tagged', extra={'infinium': True})",
            "    with task('t'):",
            "        log.info('step')",
            "assert [t.name for t in tasks] == ['tagged', 't'], tasks",
            "print('ok')",
        ]
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    environment["INFINIUM_DISABLED"] = "true"
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_a_dict_logged_as_the_message(logger: logging.Logger) -> None:
    """A dict message that did not come from structlog is a step with the dict as its fields."""
    sink = ListSink()
    _attach(logger, InfiniumHandler(exporter=sink))
    with task("t", exporter=sink):
        logger.info({"order": 17, "status": "shipped"})
    (step,) = sink.tasks[0].steps or []
    assert step.description == "{'order': 17, 'status': 'shipped'}"
    assert step.metadata == {"order": 17, "status": "shipped"}


@pytest.mark.parametrize("value", [0, "", False, None, [], 0.0])
def test_a_value_that_is_no_tag_leaves_an_ordinary_record(
    logger: logging.Logger, value: object
) -> None:
    """A false tag value (``0``, ``""``, ...) makes no trace: the record stays an ordinary
    one, a step inside a task, as a plain record or a dict message."""
    sink = ListSink()
    _attach(logger, InfiniumHandler(exporter=sink))
    logger.info("outside", extra={"infinium": value})
    with task("T", exporter=sink):
        logger.info("inside", extra={"infinium": value})
        logger.info({"event": "as a dict", "infinium": value})
    assert [t.name for t in sink.tasks] == ["T"]
    assert [s.description for s in sink.tasks[0].steps or ()] == ["inside", "as a dict"]


def test_a_dict_message_with_its_own_extra_fields(logger: logging.Logger) -> None:
    """A dict message's record may carry ``extra=`` too: its tag makes a trace, and its fields
    join the dict's (which win over them)."""
    sink = ListSink()
    _attach(logger, InfiniumHandler(exporter=sink))
    logger.info({"k": 1}, extra={"infinium": {"output_summary": "done"}})
    logger.info({"k": 2, "n": 2}, extra={"infinium": True, "n": 1, "m": 3})
    with task("t", exporter=sink):
        logger.info({"a": 1}, extra={"tool_call": {"tool_name": "search"}})
    tagged, fields, in_task = sink.tasks
    assert (tagged.name, tagged.output_summary) == ("{'k': 1}", "done")
    assert fields.name == "{'k': 2, 'n': 2}"
    (step,) = in_task.steps or []
    assert step.action == "tool_use"
    assert step.tool_call is not None and step.tool_call.tool_name == "search"
    assert step.metadata == {"a": 1}


def test_record_classes_with_their_own_get_message(logger: logging.Logger) -> None:
    """A record factory whose records format their own way ({}-style here) is honoured."""

    class BraceRecord(logging.LogRecord):
        def getMessage(self) -> str:
            args = self.args if isinstance(self.args, tuple) else ()
            return str(self.msg).format(*args)

    sink = ListSink()
    _attach(logger, InfiniumHandler(exporter=sink))
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(BraceRecord)
    try:
        logger.info("Classified {}", "ticket 7", extra={"infinium": True})  # noqa: PLE1205
        with task("t", exporter=sink):
            logger.info("asked {} {}", "for", "a label")  # noqa: PLE1205
    finally:
        logging.setLogRecordFactory(previous)
    assert [t.name for t in sink.tasks] == ["Classified ticket 7", "t"]
    assert [s.description for s in sink.tasks[1].steps or ()] == ["asked for a label"]


def test_fields_set_on_the_tag_dict_after_logging_are_not_sent(
    collector_env: LocalCollector, logger: logging.Logger
) -> None:
    """The trace is built later, on a sender thread, from a copy of the tag dict made when
    logging: keys set or removed afterwards do not reach it."""
    handler = _attach(logger, InfiniumHandler())
    given: dict[str, Any] = {"name": "Classify", "input_summary": "ticket 7"}
    logger.info("Classified ticket", extra={"infinium": given})
    given["output_summary"] = "set after logging"
    del given["input_summary"]
    handler.flush()
    assert collector_env.wait_for(1, timeout=10)
    (received,) = collector_env.traces()
    assert (received.task.name, received.task.input_summary) == ("Classify", "ticket 7")
    assert received.task.output_summary is None


def test_long_text_logged_as_a_field_counts_against_max_queue_bytes(
    infinium_collector: LocalCollector, stdlib_logger: logging.Logger
) -> None:
    """A document logged as a field (tagged, or in a task's step) is held until a sender
    builds the trace: with the platform unreachable, max_queue_bytes counts it, so the queue
    stays within the bound and the rest is refused and counted, not held beyond it."""
    exporter = Exporter(
        base_url=infinium_collector.base_url,
        agent_id=TEST_AGENT_ID,
        agent_secret=TEST_AGENT_SECRET,
        requests_per_second=0.001,  # one request, then none: everything else waits
        burst_size=1,
        max_queue_bytes=2 * 2**20,
    )
    stdlib_logger.addHandler(InfiniumHandler(exporter=exporter))
    try:
        for i in range(30):
            document = f"{i:06d}" * 20_000  # 120,000 characters, a new string each time
            stdlib_logger.info("retrieved", extra={"infinium": True, "document": document})
            with task(f"task {i}", exporter=exporter):
                stdlib_logger.info("read", extra={"document": document})
        stats = exporter.stats()
        assert stats.buffered_bytes <= 2 * 2**20
        assert stats.queued * 100_000 <= stats.buffered_bytes + 200_000
        assert stats.dropped["queue_full"] >= 30
    finally:
        exporter.shutdown(0)
