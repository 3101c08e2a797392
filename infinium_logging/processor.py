"""``InfiniumProcessor``: the structlog processor; tagged events and task events become traces.

This is the only module that imports structlog, so the stdlib handler works
without it.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any, Final

from structlog.typing import EventDict, WrappedLogger

from . import _default
from ._default import Options, TaskSink, default_options, options_for
from .exporter import in_export
from .mapping import (
    LEVELS,
    STRUCTLOG_RESERVED,
    ErrorInfo,
    build_step,
    environment,
    error_from_exc_info,
    error_from_rendered,
    event_timestamp,
    level_number,
    safe_str,
    tagged_payload,
)
from .tasks import Recorder, _current, active_state, bridge

__all__ = ["InfiniumProcessor"]


def _structlog_version() -> str | None:
    try:
        return importlib.metadata.version("structlog")
    except Exception:  # an unusual installation: the version is optional
        return None


_STRUCTLOG_VERSION: Final = _structlog_version()
_current_get: Final = _current.get


class InfiniumProcessor:
    """A structlog processor that sends traces to Infinium.

    An event logged with ``infinium=...`` (``True``, a dict of TaskData fields,
    or a TaskData) becomes one trace; inside :func:`~infinium_logging.task`,
    every event at or above ``min_level`` becomes a step of that task's trace.

    It returns the event dict unchanged except that its own tag key is
    removed (always, so a renderer after it never sees a TaskData), and it
    never raises, not even ``DropEvent``.  Level comes from
    ``event_dict["level"]`` when ``add_log_level`` ran, else from the method
    name as structlog maps it.

    Recommended position: after ``merge_contextvars``, ``add_log_level``,
    ``TimeStamper`` and ``set_exc_info``; before ``format_exc_info`` /
    ``dict_tracebacks`` and the renderer (it also works after them).

    ``exporter``: where traces go (anything with ``submit(task) -> bool``); by
    default the process-wide default exporter.  Construction fails with
    :class:`~infinium_logging.errors.ConfigurationError` when the settings it
    relies on are missing or invalid; with ``INFINIUM_DISABLED=true`` it does
    nothing but remove its tag key.
    """

    def __init__(
        self,
        *,
        exporter: TaskSink | None = None,
        tag_key: str = "infinium",
        min_level: str | int = "info",
    ) -> None:
        if not isinstance(tag_key, str) or not tag_key:
            raise ValueError("tag_key must be a non-empty string")
        minimum = level_number(min_level, -1)
        if minimum < 0:
            raise ValueError(
                f"min_level must be a level name (debug, info, warning, error, critical) "
                f"or number, got {min_level!r}"
            )
        self.tag_key = tag_key
        self.min_level = minimum
        self._sink = exporter
        self._recorder = Recorder(exporter, Options(), "structlog", _STRUCTLOG_VERSION)
        self._env_options: Options | None = None
        self._env_cache: dict[str | None, dict[str, Any]] = {}
        self._options: Options | None
        if exporter is not None:
            if not callable(getattr(exporter, "submit", None)):
                raise TypeError("exporter must have a submit(task) method")
            self._options = options_for(exporter, {})
        else:
            self._options = None
            default_options()  # fail here, where it is configured, if the environment is bad

    def __repr__(self) -> str:
        where = "default exporter" if self._sink is None else type(self._sink).__name__
        level = logging.getLevelName(self.min_level).lower()
        return f"InfiniumProcessor(tag_key={self.tag_key!r}, min_level={level!r}) -> {where}"

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Record the event if it is tagged or a task is active; return it without the tag key."""
        if self.tag_key in event_dict or _current_get() is not None:
            self._record(logger, method_name, event_dict)
        return event_dict

    def _record(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> None:
        value = event_dict.pop(self.tag_key, None)
        try:
            self._process(logger, method_name, event_dict, value)
        except Exception as error:  # logging must never break the application
            _default.warn_once(
                "processor", "infinium_logging: InfiniumProcessor could not record: %r", error
            )

    def _process(
        self, logger: WrappedLogger, method_name: str, event_dict: EventDict, value: object
    ) -> None:
        if in_export():
            return
        options = self._options or default_options()
        if options.disabled and not _default.capturing():
            return
        level = event_dict.get("level", method_name)
        levelno = LEVELS.get(level) if type(level) is str else None
        if levelno is None:
            levelno = level_number(level, 20)
        if levelno < self.min_level:
            return
        tagged = value is not None and value is not False
        if tagged:
            state = None
        else:
            state = _current_get()
            if state is None:
                return
            if state.finished:
                state = active_state()
                if state is None:
                    return
        event = event_dict.get("event", "")
        message = event if type(event) is str else safe_str(event)
        logger_name = event_dict.get("logger")
        if type(logger_name) is not str:
            logger_name = getattr(logger, "name", None)
            if not isinstance(logger_name, str):
                logger_name = None
        error: ErrorInfo | None = None
        exc_info = event_dict.get("exc_info")
        if exc_info:
            error = error_from_exc_info(exc_info)
        elif "exception" in event_dict:
            error = error_from_rendered(event_dict["exception"])
        elif method_name == "exception":
            error = error_from_exc_info(True)
        if state is None:
            payload = tagged_payload(
                value,
                message,
                event_timestamp(event_dict.get("timestamp")),
                _fields(event_dict) if value is True else None,
                error,
                self._environment(logger_name, options),
            )
            if payload is not None:
                _default.deliver(self._sink, payload)
            return
        recorder = self._recorder
        if recorder.options is not options:
            recorder = self._recorder = Recorder(
                self._sink, options, "structlog", _STRUCTLOG_VERSION
            )
        added = state.record(
            build_step(message, levelno, _fields(event_dict), error), error, recorder, logger_name
        )
        if added and isinstance(logger, logging.Logger) and logger.isEnabledFor(levelno):
            # The event goes on to this stdlib logger's handlers: tell an
            # InfiniumHandler among them that it is already a step.
            type(bridge).in_use = True
            bridge.mark = (logger.name, event_dict, message)

    def _environment(self, logger_name: str | None, options: Options) -> dict[str, Any]:
        """The environment of this processor's traces from ``logger_name``, cached per logger."""
        if self._env_options is not options:  # the default exporter was reconfigured
            self._env_options, self._env_cache = options, {}
        env = self._env_cache.get(logger_name)
        if env is None:
            if len(self._env_cache) >= 1024:
                self._env_cache = {}
            env = self._env_cache[logger_name] = environment(
                "structlog", logger_name, options.tags, _STRUCTLOG_VERSION
            )
        return env


def _fields(event_dict: EventDict) -> list[tuple[str, Any]]:
    """The event's structured fields: what structlog's own processors did not add."""
    return [
        (key, item)
        for key, item in event_dict.items()
        if type(key) is str and key not in STRUCTLOG_RESERVED and key[:1] != "_"
    ]
