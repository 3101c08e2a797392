"""No credentials anywhere switches export off with one warning; INFINIUM_REQUIRED makes it the
error it is in production; wrong values stay errors naming the variable."""

from __future__ import annotations

import logging
import warnings

import pytest
import structlog
from exporters import make_exporter

from infinium_logging import _default, credentials
from infinium_logging.collector import LocalCollector
from infinium_logging.errors import ConfigurationError, ConfigurationWarning
from infinium_logging.exporter import Exporter
from infinium_logging.handler import InfiniumHandler
from infinium_logging.processor import InfiniumProcessor
from infinium_logging.tasks import task


@pytest.fixture
def fresh(clean_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """No INFINIUM_* variables, no default exporter, and the once-per-process warning unsaid."""
    monkeypatch.setattr(credentials, "_warned_no_credentials", [])


@pytest.mark.usefixtures("fresh")
def test_handler_processor_and_task_without_credentials_count_as_disabled(
    stdlib_logger: logging.Logger,
) -> None:
    """Handler, processor and task() made with no agent id or secret anywhere: one
    ConfigurationWarning naming both variables, nothing raised, every trace counted as
    ``disabled``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handler = InfiniumHandler()
        processor = InfiniumProcessor()
    assert [w.category for w in caught] == [ConfigurationWarning]
    said = str(caught[0].message)
    assert "INFINIUM_AGENT_ID" in said
    assert "INFINIUM_AGENT_SECRET" in said
    assert "INFINIUM_REQUIRED" in said
    stdlib_logger.addHandler(handler)
    stdlib_logger.info("tagged", extra={"infinium": True})
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[processor, structlog.processors.KeyValueRenderer()],
    )
    log.info("from structlog", infinium=True)
    with task("a task"):
        stdlib_logger.info("a step")
    exporter = _default.peek_default_exporter()
    assert exporter is not None and exporter.settings.disabled
    assert exporter.stats().dropped["disabled"] == 3


@pytest.mark.usefixtures("fresh")
def test_exporter_without_credentials_is_disabled() -> None:
    """``Exporter()`` with nothing configured is off (and says so), not a crash."""
    with pytest.warns(ConfigurationWarning, match="INFINIUM_AGENT_ID"):
        exporter = Exporter()
    assert exporter.settings.disabled
    assert exporter.submit({"name": "n", "description": "d"}) is False
    assert exporter.stats().dropped["disabled"] == 1


@pytest.mark.usefixtures("fresh")
def test_required_restores_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """INFINIUM_REQUIRED=true: missing credentials fail where the handler is configured."""
    monkeypatch.setenv("INFINIUM_REQUIRED", "true")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigurationError, match="INFINIUM_AGENT_ID"):
            InfiniumHandler()
        with pytest.raises(ConfigurationError, match="INFINIUM_AGENT_ID"):
            Exporter()


@pytest.mark.usefixtures("fresh")
@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"INFINIUM_AGENT_ID": "5f3c6a2e-8d1b-4c7a-9e2f-1a2b3c4d5e6f"}, "INFINIUM_AGENT_SECRET"),
        ({"INFINIUM_TIMEOUT": "abc"}, "INFINIUM_TIMEOUT"),
        ({"INFINIUM_BASE_URL": "not a url"}, "INFINIUM_BASE_URL"),
    ],
)
def test_wrong_values_still_fail_loudly(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    """One credential without the other, or a value that is set but wrong, is an error naming
    the variable, with or without credentials."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=named):
        InfiniumHandler()


@pytest.mark.usefixtures("fresh")
def test_a_task_with_its_own_exporter_says_nothing_of_the_default(
    infinium_collector: LocalCollector,
) -> None:
    """``task(exporter=...)`` with nothing configured in the environment, ended without a
    handler or processor ever seeing it: its trace goes to its exporter, and no warning
    about the default exporter's credentials is given (it is never needed)."""
    exporter = make_exporter(infinium_collector)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with task("its own exporter", exporter=exporter):
            pass
        assert exporter.flush(10.0)
    assert [w.message for w in caught] == []
    assert [t.task.name for t in infinium_collector.traces()] == ["its own exporter"]
    assert _default.peek_default_exporter() is None
    exporter.shutdown()
