"""``InfiniumHandler``: the stdlib logging handler; tagged records and task events become traces."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any, Final

from . import _default
from ._default import (
    NULL_SINK,
    Options,
    TaskSink,
    default_options,
    options_for,
    options_of,
)
from ._ignore import DEFAULT_IGNORED_LOGGERS, IgnoredLoggers
from .bridging import bridge, bridge_in_use, marked, record_identity
from .credentials import settings_or_off
from .environment import environment, structlog_version
from .errorinfo import ErrorInfo, error_from_exc_info, error_from_rendered
from .events import TaggedTrace, is_tag, tagged_trace
from .exporter import Exporter
from .fields import FROM_EVENT, FROM_RECORD, event_fields, record_fields
from .guard import in_export
from .sanitise import safe_str
from .task_state import (
    Recorder,
    _current,
    _TaskState,
    active_state,
    add_recorder_source,
    drain_deferred,
    open_tasks,
    remove_recorder_source,
)

__all__ = ["InfiniumHandler"]

_LogRecord: Final = logging.LogRecord
#: The attributes of a record that carries a tag and nothing else: past this many, it has
#: fields of its own (or a formatter's ``message``), and record_fields looks for them.
_BARE_TAGGED: Final = len(logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__) + 1


#: InfiniumHandlers made and not closed.  With one, no record can reach a second: the
#: weak reference (~0.1 us a record) is not needed.  (One handler attached to two loggers
#: of one line handles a record twice, as every handler does: stdlib's rule.)
_handlers_open = 0
_count_lock: Final = threading.Lock()


class InfiniumHandler(logging.Handler):
    """Sends traces to Infinium from stdlib logging.

    A record tagged with ``extra={"infinium": ...}`` (``True``, a dict of
    TaskData fields, a TaskData or the official client's, or a string: the
    trace's name) becomes one trace; inside
    :func:`~infinium_logging.task`, every record the handler accepts becomes a
    step of that task's trace.  Everything else costs one dict lookup and one
    context-variable read.

    ``exporter``: where traces go (any object with ``submit(task) -> bool``);
    by default the process-wide default exporter (:func:`~infinium_logging.configure`,
    else created from ``INFINIUM_*`` on first use).  ``settings_overrides``
    (Settings fields, e.g. ``agent_id=...``) give the handler an exporter of
    its own instead, which :meth:`close` shuts down; a shared or default
    exporter is never shut down by the handler (interpreter exit does that).

    ``ignore_loggers``: loggers whose records are never traces or steps, each
    with the loggers below it; by default the LLM provider SDKs and their HTTP
    clients (:data:`~infinium_logging.DEFAULT_IGNORED_LOGGERS`), whose calls
    :mod:`infinium_logging.otel` records as steps of their own.  ``()`` keeps them.

    Construction fails with :class:`~infinium_logging.errors.ConfigurationError`
    when the settings it relies on are missing or invalid.  With
    ``INFINIUM_DISABLED=true`` the handler does nothing at all.

    What a record costs the thread that logs is capturing it: a shallow copy
    of the tag's dict (or of the record's attributes, for a step), the
    message's format and arguments, the time, the rendered exception.  The
    exporter builds the trace from these on its sender thread (``%``-formatting
    the message there too), so, as with :class:`logging.handlers.QueueHandler`,
    objects logged must not be mutated after logging them.

    Usable from :func:`logging.config.dictConfig`:
    ``{"class": "infinium_logging.InfiniumHandler", "level": "INFO"}``.
    """

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        exporter: TaskSink | None = None,
        tag_key: str = "infinium",
        ignore_loggers: Iterable[str] = DEFAULT_IGNORED_LOGGERS,
        **settings_overrides: Any,
    ) -> None:
        super().__init__(level)
        if not isinstance(tag_key, str) or not tag_key:
            raise ValueError("tag_key must be a non-empty string")
        self.tag_key = tag_key
        self._ignore = IgnoredLoggers(ignore_loggers)
        self._ignored = self._ignore.cache
        self._owned: Exporter | None = None
        self._sink: TaskSink | None
        self._options: Options | None
        if exporter is not None:
            if not callable(getattr(exporter, "submit", None)):
                raise TypeError("exporter must have a submit(task) method")
            self._sink = exporter
            self._options = options_for(exporter, settings_overrides)
        elif settings_overrides:
            settings = settings_or_off(**settings_overrides)
            self._options = options_of(settings)
            if settings.disabled:
                self._sink = NULL_SINK
            else:
                self._owned = Exporter(settings)
                self._sink = self._owned
        else:
            self._sink = None  # the default exporter, looked up at each export
            self._options = None
            default_options()  # fail here, where it is configured, if the environment is bad
        self._closed = False
        global _handlers_open
        with _count_lock:
            _handlers_open += 1
        self._env_options: Options | None = None
        # Rebuilt when the options object changes (the default exporter reconfigured).
        self._recorder = Recorder(self._sink, Options(), "logging")
        self._bridged_recorder = Recorder(self._sink, Options(), "structlog", structlog_version())
        self._env_cache: dict[str, dict[str, Any]] = {}
        add_recorder_source(self)

    def _task_recorder(self) -> Recorder | None:
        """How a task that no record bound would be recorded by this handler (see
        tasks.recorder_sources); None once closed."""
        if self._closed:
            return None
        try:
            return Recorder(self._sink, self._options or default_options(), "logging")
        except Exception:  # settings unreadable: reported where the handler was made
            return None

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        where = "default exporter" if self._sink is None else type(self._sink).__name__
        return f"<{type(self).__name__} ({level}) -> {where}>"

    @property
    def exporter(self) -> TaskSink | None:
        """Where this handler's traces go; ``None`` means the process-wide default exporter."""
        return self._sink

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and emit ``record`` unless it is untagged and no task is active.

        That check is all an ordinary record costs (after the handler's own
        filters, when it has any: as for any handler they see every record, and
        one may tag it).  No handler lock is taken: emitting only captures what
        the record says and hands it to a thread-safe exporter or task, so
        serialising every logging thread through one lock would buy nothing.
        """
        if self.filters:
            result: Any = self.filter(record)
            if not result:
                return False
            if isinstance(result, logging.LogRecord):  # 3.12+: a filter may replace the record
                record = result
        if (
            self.tag_key not in record.__dict__
            and type(record.msg) is not dict
            and (not open_tasks or _current.get() is None)
        ):
            return False
        try:
            self._emit(record)
        except RecursionError:  # the stdlib's own rule: let the interpreter unwind
            raise
        except Exception:
            self.handleError(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Turn ``record`` into a trace or a task step; never raises, never blocks on I/O."""
        try:
            self._emit(record)
        except RecursionError:  # the stdlib's own rule: let the interpreter unwind
            raise
        except Exception:
            self.handleError(record)

    def _environment(self, framework: str, name: str, options: Options) -> dict[str, Any]:
        """The environment of this handler's traces from logger ``name``, cached per logger."""
        if self._env_options is not options:  # the default exporter was reconfigured
            self._env_cache = {}
            self._env_options = options
        key = name if framework == "logging" else f"{framework}:{name}"
        env = self._env_cache.get(key)
        if env is None:
            if len(self._env_cache) >= 1024:
                self._env_cache = {}
            version = structlog_version() if framework == "structlog" else None
            env = self._env_cache[key] = environment(framework, name, options.tags, version)
        return env

    def _emit(self, record: logging.LogRecord) -> None:
        name = record.name
        ignored = self._ignored.get(name)
        if ignored is None:
            ignored = self._ignore(name)
        if ignored or in_export():
            return
        options = self._options or default_options()
        if options.disabled and not _default.capturing():
            return
        msg = record.msg
        if type(msg) is dict:
            self._emit_bridged(record, msg, options)
            return
        attributes = record.__dict__
        value = attributes.get(self.tag_key)
        if (
            value is not None
            and value is not False
            and (type(value) is dict or is_tag(value))  # else (0, "") an untagged record
        ):
            sink = self._sink
            capture = _default._capture
            ident: tuple[object, object] | None = None
            if _handlers_open > 1 or bridge_in_use.processor:
                ident = (record_identity(record), sink if capture is None else capture)
                if bridge_in_use.last_tagged == ident:
                    return  # a second handler with the same destination saw this record
            if self._env_options is not options:
                self._env_options, self._env_cache = options, {}
            env = self._env_cache.get(name)
            if env is None:
                env = self._environment("logging", name, options)
            exc_info = record.exc_info
            if type(record) is _LogRecord:  # its getMessage() is known: format it later
                message: object = msg
                args: object = record.args
            else:
                message, args = self._message(record), None
            error = error_from_exc_info(exc_info) if exc_info else None
            # Fields beyond the standard attributes and the tag: only then are they read.
            fields = (
                record_fields(attributes, self.tag_key) if len(attributes) > _BARE_TAGGED else None
            )
            payload = (
                TaggedTrace(value.copy(), message, args, record.created, fields, error, env)
                if type(value) is dict  # the usual case, without a call to tagged_trace
                else tagged_trace(value, message, args, record.created, fields, error, env)
            )
            if ident is not None:
                bridge_in_use.last_tagged = ident
            _default.deliver(sink, payload)
            return
        state = _current.get()
        if state is not None:
            self._step(record, attributes, state, options)

    def _step(
        self,
        record: logging.LogRecord,
        attributes: dict[str, Any],
        state: _TaskState,
        options: Options,
    ) -> None:
        """Record an untagged record as a step of the task active where it was logged (the
        checks of :meth:`_emit` passed)."""
        name = record.name
        if state.finished:
            active = active_state()
            if active is None:
                return
            state = active
        ident = record_identity(record) if _handlers_open > 1 or bridge_in_use.processor else None
        if bridge_in_use.in_use:
            mark = bridge.mark
            if mark is not None:
                bridge.mark = None
                if marked(mark, name, record.levelno, record.msg):
                    # The structlog processor already recorded this event: other handlers
                    # that see the record skip it too.
                    if ident is not None:
                        state.last_event = ident
                    return
        recorder = self._recorder
        if recorder.options is not options:
            recorder = self._recorder = Recorder(self._sink, options, "logging")
        exc_info = record.exc_info
        source = attributes.copy()
        error: ErrorInfo | None = None
        if exc_info:
            error = error_from_exc_info(exc_info)
            source["exc_info"] = None  # rendered now: the traceback is not kept
        state.record(
            (
                FROM_RECORD,
                record.levelno,
                source,
                self.tag_key,
                error,
                None if type(record) is _LogRecord else self._message(record),
            ),
            error,
            recorder,
            name,
            ident,
        )

    def _emit_bridged(
        self, record: logging.LogRecord, event: dict[Any, Any], options: Options
    ) -> None:
        """A dict message, its keys being the event's fields.

        A structlog event passed on by ``ProcessorFormatter.wrap_for_formatter``,
        or a dict logged as the message.  The record's own fields (``extra=``,
        its tag included) count too, the dict's keys winning.
        """
        tag_key = self.tag_key
        attributes = record.__dict__
        value = event.get(tag_key)
        if value is None or value is False:
            value = attributes.get(tag_key)
        tagged = value is not None and value is not False and is_tag(value)
        state = None if tagged else active_state()
        if not tagged and state is None:
            return
        extras = record_fields(attributes, tag_key)
        # A dict logged as the message by hand (not by structlog) has no "event": use all of it.
        message = safe_str(event["event"]) if "event" in event else self._message(record)
        error: ErrorInfo | None = None
        exc_info = event.get("exc_info") or record.exc_info
        if exc_info:
            error = error_from_exc_info(exc_info)
        elif "exception" in event:
            error = error_from_rendered(event["exception"])
        if tagged:
            sink = self._sink
            capture = _default._capture
            ident = (record_identity(record), sink if capture is None else capture)
            if bridge_in_use.last_tagged == ident:
                return
            payload = tagged_trace(
                value,
                message,
                None,
                record.created,
                [*extras, *event_fields(event, tag_key)]
                if extras
                else event_fields(event, tag_key),
                error,
                self._environment("structlog", record.name, options),
            )
            bridge_in_use.last_tagged = ident
            _default.deliver(sink, payload)
            return
        assert state is not None
        step_ident = (
            record_identity(record) if _handlers_open > 1 or bridge_in_use.processor else None
        )
        mark = bridge.mark
        if mark is not None:
            bridge.mark = None
            if marked(mark, record.name, record.levelno, event):
                # The structlog processor already recorded this event: other handlers that
                # see the record skip it too.
                if step_ident is not None:
                    state.last_event = step_ident
                return
        recorder = self._bridged_recorder
        if recorder.options is not options:
            recorder = self._bridged_recorder = Recorder(
                self._sink, options, "structlog", structlog_version()
            )
        source = event.copy()
        for key, item in extras:
            source.setdefault(key, item)
        if "exc_info" in source:
            source["exc_info"] = None  # rendered above: the traceback is not kept
        state.record(
            (FROM_EVENT, record.levelno, source, tag_key, error, message),
            error,
            recorder,
            record.name,
            step_ident,
        )

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        try:
            return record.getMessage()
        except Exception:  # bad %-arguments: the record still says something
            return safe_str(record.msg)

    def flush(self) -> None:
        """Wait, at most ``shutdown_timeout`` seconds, until the exporter has sent what it holds.

        Not again, though, right after a flush of the same exporter gave up with nothing
        submitted since: ``logging.shutdown()`` flushes every handler in turn, and handlers
        on one exporter would each wait for the same stuck traces.
        """
        try:
            drain_deferred()
            sink: object = self._sink
            if sink is None:
                sink = _default.peek_default_exporter()
            if isinstance(sink, Exporter):
                if not sink._stuck_since_flush():
                    sink.flush(timeout=(self._options or default_options()).flush_timeout)
                return
            flush = getattr(sink, "flush", None)
            if callable(flush):
                flush(timeout=(self._options or default_options()).flush_timeout)
        except Exception:  # flush runs at interpreter exit too: never raise there
            _default.warn_once("handler-flush", "infinium_logging: flushing the exporter failed")

    def close(self) -> None:
        """Shut down the exporter this handler created (not a shared or default one); idempotent."""
        try:
            if not self._closed:
                self._closed = True
                remove_recorder_source(self)
                global _handlers_open
                with _count_lock:
                    _handlers_open -= 1
                owned, self._owned = self._owned, None
                if owned is not None:
                    owned.shutdown()
        finally:
            super().close()
