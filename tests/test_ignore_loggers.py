"""ignore_loggers: the provider SDKs' and HTTP clients' lines are no steps by default; the
option names loggers (each with the loggers below it) for the handler and the processor."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from infinium_logging import (
    DEFAULT_IGNORED_LOGGERS,
    InfiniumHandler,
    InfiniumProcessor,
    capture_tasks,
    task,
)
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINIUM_AGENT_ID", TEST_AGENT_ID)
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)


class Sink:
    """Takes traces (capture_tasks() takes them first)."""

    def submit(self, trace: Any) -> bool:
        return True


def _steps(trace: Any) -> list[str]:
    return [step.description for step in trace.steps or []]


@pytest.fixture
def loggers() -> Iterator[dict[str, logging.Logger]]:
    """Loggers named like the SDKs' and the application's, at DEBUG, not propagating."""
    names = ["openai", "openai._base_client", "httpx", "httpcore2.http11", "httpx2", "anthropic"]
    names += ["app", "app.noisy", "app.noisy.deep", "app.noisyx", "httpx_sse"]
    found = {name: logging.getLogger(name) for name in names}
    saved = {name: (log.level, log.propagate) for name, log in found.items()}
    for log in found.values():
        log.setLevel(logging.DEBUG)
        log.propagate = False
    yield found
    for name, log in found.items():
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()
        log.level, log.propagate = saved[name]


def _log_each(loggers: dict[str, logging.Logger], handler: logging.Handler) -> None:
    for log in loggers.values():
        log.addHandler(handler)
    try:
        with task("ignored"):
            for name, log in loggers.items():
                log.debug(name)
    finally:
        for log in loggers.values():
            log.removeHandler(handler)
        handler.close()


def test_the_sdks_lines_are_not_steps_by_default(loggers: dict[str, logging.Logger]) -> None:
    """openai, anthropic, httpx, httpcore and their *2 loggers (and those below them) add
    no step; a logger whose name only starts the same way does."""
    assert set(DEFAULT_IGNORED_LOGGERS) >= {"openai", "anthropic", "httpx", "httpcore2"}
    with capture_tasks() as traces:
        _log_each(loggers, InfiniumHandler(exporter=Sink()))
    assert _steps(traces[0]) == ["app", "app.noisy", "app.noisy.deep", "app.noisyx", "httpx_sse"]


def test_ignore_loggers_names_the_loggers(loggers: dict[str, logging.Logger]) -> None:
    """ignore_loggers replaces the default: () keeps every line, a name drops that logger
    and the ones below it."""
    with capture_tasks() as traces:
        _log_each(loggers, InfiniumHandler(exporter=Sink(), ignore_loggers=()))
    assert "httpx" in _steps(traces[0]) and "openai._base_client" in _steps(traces[0])
    with capture_tasks() as traces:
        _log_each(loggers, InfiniumHandler(exporter=Sink(), ignore_loggers=["app.noisy"]))
    kept = _steps(traces[0])
    assert "app.noisy" not in kept and "app.noisy.deep" not in kept
    assert "app.noisyx" in kept and "openai" in kept


def test_the_processor_takes_the_same_option() -> None:
    """A structlog logger named like an SDK's is ignored by default, kept with ()."""

    def run(processor: InfiniumProcessor) -> list[str]:
        with capture_tasks() as traces:
            for name in ("httpx", "app"):
                log = structlog.wrap_logger(
                    structlog.ReturnLogger(),
                    processors=[processor, lambda *a: a[2]],
                )
                with task(name):
                    log.info("event", logger=name)
        return [trace.name for trace in traces if trace.steps]

    assert run(InfiniumProcessor(exporter=Sink())) == ["app"]
    assert run(InfiniumProcessor(exporter=Sink(), ignore_loggers=())) == ["httpx", "app"]


def test_ignore_loggers_rejects_what_is_not_a_name() -> None:
    """A non-string or empty name is a TypeError where the handler is made."""
    with pytest.raises(TypeError, match="ignore_loggers"):
        InfiniumHandler(exporter=Sink(), ignore_loggers=[""])
    with pytest.raises(TypeError, match="ignore_loggers"):
        InfiniumProcessor(exporter=Sink(), ignore_loggers=[3])  # type: ignore[list-item]
