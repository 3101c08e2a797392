"""The library's own logger and the exception hierarchy."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import infinium_logging
from infinium_logging import errors, settings
from infinium_logging._logsetup import LOGGER_NAME, setup_logging


@pytest.fixture
def clean_logger() -> Iterator[logging.Logger]:
    """The package logger, restored after the test."""
    log = logging.getLogger(LOGGER_NAME)
    handlers, level = list(log.handlers), log.level
    yield log
    for handler in list(log.handlers):
        if handler not in handlers:
            log.removeHandler(handler)
    log.setLevel(level)


def test_package_logger_has_a_null_handler() -> None:
    """Silent unless the application configures logging (urllib3's habit)."""
    log = logging.getLogger("infinium_logging")
    assert any(isinstance(h, logging.NullHandler) for h in log.handlers)


def test_setup_logging_sends_only_our_lines_to_stderr(
    clean_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """setup_logging configures the library's logger only, at the given level, once."""
    root_handlers = list(logging.getLogger().handlers)
    setup_logging("DEBUG")
    setup_logging("DEBUG")
    logging.getLogger("infinium_logging.exporter").debug("hello from the exporter")
    logging.getLogger("someone.else").warning("not ours")
    err = capsys.readouterr().err
    assert "hello from the exporter" in err
    assert "[infinium_logging.exporter]" in err
    assert "not ours" not in err
    assert err.count("hello from the exporter") == 1
    assert logging.getLogger().handlers == root_handlers
    setup_logging("ERROR")
    logging.getLogger("infinium_logging").warning("quiet now")
    assert "quiet now" not in capsys.readouterr().err


def test_enable_logging_takes_effect_when_the_environment_is_read(
    clean_logger: logging.Logger,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``INFINIUM_ENABLE_LOGGING=true`` is ``setup_logging()`` as soon as the settings are
    read (a handler relying on the lazy default exporter, disabled export, a misspelt
    variable's warning), not only once an exporter is made."""
    monkeypatch.setattr(settings, "_warned_variables", set())
    environ = {
        "INFINIUM_ENABLE_LOGGING": "true",
        "INFINIUM_LOG_LEVEL": "warning",
        "INFINIUM_DISABLED": "true",
        "INFINIUM_TIMEOUTT": "3",
    }
    with pytest.warns(errors.ConfigurationWarning):
        settings.Settings.from_env({**environ, "INFINIUM_ENABLE_LOGGING": "false"})
    assert capsys.readouterr().err == ""  # off: the log line went to the NullHandler only
    monkeypatch.setattr(settings, "_warned_variables", set())
    with pytest.warns(errors.ConfigurationWarning):
        assert settings.Settings.from_env(environ).disabled
    assert "did you mean INFINIUM_TIMEOUT?" in capsys.readouterr().err
    assert clean_logger.level == logging.WARNING


def test_setup_logging_rejects_unknown_level() -> None:
    """A typo in the level is a clear error."""
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        setup_logging("LOUD")


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (errors.ConfigurationError, errors.InfiniumError),
        (errors.ValidationError, errors.InfiniumError),
        (errors.AuthenticationError, errors.InfiniumError),
        (errors.RateLimitError, errors.InfiniumError),
        (errors.NetworkError, errors.InfiniumError),
        (errors.InfiniumTimeoutError, errors.NetworkError),
        (errors.ServerError, errors.InfiniumError),
        (errors.NotFoundError, errors.InfiniumError),
        (errors.BatchError, errors.InfiniumError),
        (errors.InfiniumError, Exception),
    ],
)
def test_hierarchy_matches_the_official_client(child: type, parent: type) -> None:
    """The same names and parents as the official client's exceptions."""
    assert issubclass(child, parent)
    assert getattr(infinium_logging, child.__name__) is child


def test_error_attributes() -> None:
    """Typed errors carry what a caller needs."""
    assert errors.RateLimitError(retry_after=2.5).retry_after == 2.5
    assert errors.RateLimitError().status_code == 429
    batch = errors.BatchError("all failed", total_tasks=3, failed_tasks=3, errors=["a", "b", "c"])
    assert (batch.total_tasks, batch.failed_tasks, batch.errors) == (3, 3, ["a", "b", "c"])
    assert errors.ValidationError("x: bad", path="x").path == "x"
    assert (
        errors.ConfigurationError("bad", variable="INFINIUM_TIMEOUT").variable == "INFINIUM_TIMEOUT"
    )
    assert errors.NotFoundError().status_code == 404
    timeout = errors.InfiniumTimeoutError(timeout_duration=1.5)
    assert isinstance(timeout, errors.NetworkError) and timeout.timeout_duration == 1.5


def test_public_names_are_sorted_and_importable() -> None:
    """__all__ is sorted, and every name in it imports."""
    assert infinium_logging.__all__ == sorted(infinium_logging.__all__)
    for name in infinium_logging.__all__:
        assert getattr(infinium_logging, name) is not None
