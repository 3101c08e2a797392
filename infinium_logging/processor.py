"""``InfiniumProcessor``: the structlog processor; tagged events and task events become traces.

This is the only module that imports structlog, so the stdlib handler works
without it.  ``InfiniumProcessor._record`` is over the function budget as one thing: the path
of every structlog event that is tagged or inside a task, kept in one frame because each call
split out of it costs every event (figures 4b and 4c); its rare branches are functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Final

from structlog import BoundLoggerBase
from structlog.typing import EventDict, WrappedLogger

from . import _default
from ._default import (
    Options,
    TaskSink,
    default_options,
    options_for,
)
from ._ignore import DEFAULT_IGNORED_LOGGERS, IgnoredLoggers
from .bridging import bridge, bridge_in_use, record_identity
from .environment import environment, structlog_version
from .errorinfo import ErrorInfo, error_from_exc_info, error_from_rendered
from .events import TaggedTrace, is_tag, tagged_trace
from .fields import FROM_EVENT
from .guard import in_export
from .sanitise import safe_str
from .task_state import Recorder, _current, active_state, add_recorder_source, open_tasks
from .timestamps import LEVELS, captured_timestamp, level_number

__all__ = ["InfiniumProcessor"]


_STRUCTLOG_VERSION: Final = structlog_version()
# structlog's call into the wrapped logger: a record made inside it is the event a processor
# saw (bridging.marked).  Read defensively: a structlog that renamed it gets duplicates, not errors.
_proxy_code = getattr(getattr(BoundLoggerBase, "_proxy_to_logger", None), "__code__", None)
bridge_in_use.calls = frozenset() if _proxy_code is None else frozenset({_proxy_code})
_current_get: Final = _current.get
_MISSING: Final = object()


def _mark(logger: logging.Logger, levelno: int, event_dict: EventDict) -> None:
    """The event goes on to this stdlib logger's handlers: tell an InfiniumHandler among
    them that it is already recorded (see bridging.marked)."""
    if logger.isEnabledFor(levelno):
        bridge_in_use.in_use = True
        bridge.mark = (logger.name, levelno, event_dict)


class InfiniumProcessor:
    """A structlog processor that sends traces to Infinium.

    An event logged with ``infinium=...`` (``True``, a dict of TaskData fields,
    a TaskData or the official client's, or a string: the trace's name)
    becomes one trace; inside :func:`~infinium_logging.task`,
    every event at or above ``min_level`` becomes a step of that task's trace.

    It returns the event dict unchanged except that its own tag key is
    removed (always, so a renderer after it never sees a TaskData), and it
    never raises, not even ``DropEvent``.  Level comes from
    ``event_dict["level"]`` when ``add_log_level`` ran, else from the method
    name as structlog maps it.

    Recommended position: after ``merge_contextvars``, ``add_log_level``,
    ``TimeStamper`` and ``set_exc_info``; before ``format_exc_info`` /
    ``dict_tracebacks`` and the renderer (it also works after the exception
    formatters; after the renderer it passes the output on, records nothing and
    warns).

    What an event costs the thread that logs is capturing it (a shallow copy
    of the tag's dict or of the event dict, the rendered exception); the
    exporter builds the trace on its sender thread, so objects logged must not
    be mutated after logging them.

    ``exporter``: where traces go (anything with ``submit(task) -> bool``); by
    default the process-wide default exporter.  ``ignore_loggers``: loggers whose events
    are never traces or steps (see :class:`~infinium_logging.InfiniumHandler`).
    Construction fails with
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
        ignore_loggers: Iterable[str] = DEFAULT_IGNORED_LOGGERS,
    ) -> None:
        if not isinstance(tag_key, str) or not tag_key:
            raise ValueError("tag_key must be a non-empty string")
        self._ignore = IgnoredLoggers(ignore_loggers)
        self._ignored = self._ignore.cache
        minimum = level_number(min_level, -1)
        if minimum < 0:
            raise ValueError(
                f"min_level must be a level name (debug, info, warning, error, critical) "
                f"or number, got {min_level!r}"
            )
        self.tag_key = tag_key
        self.min_level = minimum
        self._sink = exporter
        bridge_in_use.processor = True  # see its doc
        self._recorder = Recorder(exporter, Options(), "structlog", _STRUCTLOG_VERSION)
        self._env_options: Options | None = None
        self._env_cache: dict[str | None, dict[str, Any]] = {}
        #: The last wrapped logger seen, its name, and whether it is a stdlib logger.
        self._last_logger: tuple[object, str | None, bool] = (object(), None, False)
        self._options: Options | None
        if exporter is not None:
            if not callable(getattr(exporter, "submit", None)):
                raise TypeError("exporter must have a submit(task) method")
            self._options = options_for(exporter, {})
        else:
            self._options = None
            default_options()  # fail here, where it is configured, if the environment is bad
        add_recorder_source(self)

    def _task_recorder(self) -> Recorder | None:
        """How a task that no event bound would be recorded by this processor (see
        tasks.recorder_sources)."""
        try:
            options = self._options or default_options()
        except Exception:  # settings unreadable: reported where the processor was made
            return None
        return Recorder(self._sink, options, "structlog", _STRUCTLOG_VERSION)

    def __repr__(self) -> str:
        where = "default exporter" if self._sink is None else type(self._sink).__name__
        level = logging.getLevelName(self.min_level).lower()
        return f"InfiniumProcessor(tag_key={self.tag_key!r}, min_level={level!r}) -> {where}"

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Record the event if it is tagged or a task is active; return it without the tag key."""
        try:  # costs nothing until something raises (3.11+)
            if self.tag_key not in event_dict and (not open_tasks or _current_get() is None):
                return event_dict
            value = event_dict.pop(self.tag_key, None)
        except Exception:
            # Not an event dict: placed after the renderer (a str, bytes or (args, kwargs)).
            _default.warn_once(
                "processor-placement",
                "infinium_logging: InfiniumProcessor was handed a %s instead of an event dict, "
                "so it records nothing: put it before the renderer in the processor chain",
                type(event_dict).__name__,
            )
            return event_dict
        return self._record(logger, method_name, event_dict, value)

    # __call__ stays this small for the events it returns at once (untagged, outside a task:
    # most of them): a call's frame costs in proportion to the function's local variables,
    # ~25 ns for the ones below.
    def _record(
        self, logger: WrappedLogger, method_name: str, event_dict: EventDict, value: Any
    ) -> EventDict:
        """Record a tagged event, or an event inside a task (``value``: its tag's value)."""
        # One function, not a call per stage: this runs for every tagged event and every
        # event in a task, and a Python call costs about as much as several of these lines.
        try:
            if bridge_in_use.in_use:
                bridge.mark = None  # one left by an event that never reached the handler
            if in_export():
                return event_dict
            options = self._options or default_options()
            if options.disabled and not _default.capturing():
                return event_dict
            level = event_dict.get("level", method_name)
            levelno = LEVELS.get(level) if type(level) is str else None
            if levelno is None:
                levelno = level_number(level, 20)
            if levelno < self.min_level:
                return event_dict
            if (
                value is not None
                and value is not False
                and (type(value) is dict or is_tag(value))  # else (0, "") an untagged event
            ):
                state = None
            else:
                state = _current_get()
                if state is None:
                    return event_dict
                if state.finished:
                    state = active_state()
                    if state is None:
                        return event_dict
            event = event_dict.get("event", _MISSING)
            renamed: str | None = None  # where EventRenamer put the message: not a field
            if event is _MISSING:  # rare: a call of its own
                renamed = _renamed(event_dict)
                if renamed is None:
                    return event_dict
                event = event_dict.get(renamed, "")
            message = event if type(event) is str else safe_str(event)
            last = self._last_logger
            if last[0] is not logger:
                last = self._remember_logger(logger)
            # In a ProcessorFormatter (whose logger is None or a stdlib one): the LogRecord,
            # which an InfiniumHandler or another formatter's chain may see too (see
            # bridging.record_identity).
            record = event_dict.get("_record") if logger is None or last[2] else None
            if record is not None and not isinstance(record, logging.LogRecord):
                record = None
            logger_name = event_dict.get("logger")
            if type(logger_name) is not str:
                logger_name = last[1]
                if logger is None and record is not None:  # a stdlib record
                    logger_name = record.name
            if logger_name is not None:
                ignored = self._ignored.get(logger_name)
                if ignored is None:
                    ignored = self._ignore(logger_name)
                if ignored:  # the library's own loggers, urllib3's, ignore_loggers: no steps
                    return event_dict
            error: ErrorInfo | None = None
            exc_info = event_dict.get("exc_info")
            if exc_info:
                error = error_from_exc_info(exc_info)
            elif "exception" in event_dict:
                error = error_from_rendered(event_dict["exception"])
            elif method_name == "exception":
                error = error_from_exc_info(True)
            if state is None:
                env = self._env_cache.get(logger_name) if self._env_options is options else None
                if env is None:
                    env = self._environment(logger_name, options)
                # Read when the trace is built; only a missing one must be "now", read now.
                timestamp = event_dict.get("timestamp")
                if timestamp is None:
                    timestamp = time.time()
                elif type(timestamp) is str:
                    if timestamp[-1:] != "Z":  # TimeStamper's usual ISO form needs no clock
                        timestamp = captured_timestamp(timestamp)  # see its doc
                elif type(timestamp) is not float:  # an epoch float is kept as it is
                    timestamp = captured_timestamp(timestamp)
                # The event's other fields go with its trace (see tagged_payload), read from a
                # copy when the trace is built.
                # The tag is out already; dict.copy() is the cheaper copy of a plain dict.
                fields = event_dict.copy() if type(event_dict) is dict else dict(event_dict)
                if renamed is not None:
                    fields.pop(renamed, None)
                payload = (
                    TaggedTrace(value.copy(), message, None, timestamp, fields, error, env)
                    if type(value) is dict
                    else tagged_trace(value, message, None, timestamp, fields, error, env)
                )
                sink = self._sink
                capture = _default._capture
                if record is not None:
                    ident = (record_identity(record), sink if capture is None else capture)
                    if bridge_in_use.last_tagged == ident:
                        return event_dict  # already sent by a handler or another formatter
                    bridge_in_use.last_tagged = ident
                _default.deliver(sink, payload)
                if last[2]:
                    # Inside a task, the stdlib side would take the event (its tag gone)
                    # for a step of that task: tell an InfiniumHandler there it is a trace.
                    _mark(logger, levelno, event_dict)
                return event_dict
            recorder = self._recorder
            if recorder.options is not options:  # rare: configure() ran since
                recorder = self._recorder = self._new_recorder(options)
            source = event_dict.copy() if type(event_dict) is dict else dict(event_dict)
            if renamed is not None:
                source.pop(renamed, None)
            if exc_info:
                source["exc_info"] = None  # rendered above: the traceback is not kept
            added = state.record(
                (FROM_EVENT, levelno, source, self.tag_key, error, message),
                error,
                recorder,
                logger_name,
                None if record is None else record_identity(record),
            )
            if added and last[2]:
                _mark(logger, levelno, event_dict)
        except Exception as exc:  # logging must never break the application
            _default.warn_once(
                "processor", "infinium_logging: InfiniumProcessor could not record: %r", exc
            )
        return event_dict

    def _new_recorder(self, options: Options) -> Recorder:
        return Recorder(self._sink, options, "structlog", _STRUCTLOG_VERSION)

    def _remember_logger(self, logger: WrappedLogger) -> tuple[object, str | None, bool]:
        """The wrapped logger's name, if it has one, and whether it is a stdlib logger,
        remembered for the last logger seen (asking a logger without a name costs an
        exception inside ``getattr``)."""
        name = getattr(logger, "name", None)
        if not isinstance(name, str):
            name = None
        last = self._last_logger = (logger, name, isinstance(logger, logging.Logger))
        return last

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


def _renamed(event_dict: EventDict) -> str | None:
    """Where the message of an event without an ``event`` key is: EventRenamer ran first and
    put it under one of its usual names; None when render_to_log_kwargs ran first (what is
    left is logging's keyword arguments: nothing to record, said once)."""
    if type(event_dict.get("extra")) is dict and "msg" in event_dict:
        _default.warn_once(
            "processor-placement",
            "infinium_logging: InfiniumProcessor was handed logging's keyword "
            "arguments (render_to_log_kwargs ran), so it records nothing: put it "
            "before the bridge in the processor chain",
        )
        return None
    return "message" if "message" in event_dict else "msg"
