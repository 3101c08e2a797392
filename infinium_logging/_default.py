"""The process-wide default exporter, the options handler and processor read, and capture."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Final, Protocol, runtime_checkable

from . import lifecycle, signals
from ._logsetup import LOGGER_NAME
from .credentials import settings_or_off
from .errors import ConfigurationError
from .exporter import Exporter
from .guard import in_export, submit_as_exporter
from .infino_default import default_infino, infino_only, with_infino
from .infino_settings import infino_configured
from .model import TaskData
from .queued import PendingTrace
from .settings import ENV_PREFIX, Settings, disabled_in_environment

__all__ = [
    "Options",
    "TaskSink",
    "capturing",
    "configure",
    "default_options",
    "deliver",
    "get_default_exporter",
    "in_export",
    "options_for",
    "options_of",
    "warn_once",
]


@runtime_checkable
class TaskSink(Protocol):
    """Anything that takes finished traces: an :class:`~infinium_logging.exporter.Exporter`,
    the in-memory sink of :func:`~infinium_logging.testing.capture_tasks`, or your own.

    ``submit`` receives a :class:`~infinium_logging.model.TaskData` or a dict of
    TaskData fields (lenient coercion is the sink's job, off the caller's
    thread); it must not block and should not raise.  (The library's own
    :class:`~infinium_logging.exporter.Exporter` and capture sink also take
    traces not yet built, :class:`~infinium_logging.queued.PendingTrace`, and
    build them off the caller's thread; other sinks get them built.)
    """

    def submit(self, task: TaskData | dict[str, Any]) -> bool:
        """Accept one finished trace; ``False`` when it was not accepted."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """The few settings the handler, the processor and ``task()`` need on the caller's thread."""

    disabled: bool = False
    #: ``Settings.tags`` as a hashable tuple of pairs (it keys the environment cache).
    tags: tuple[tuple[str, str], ...] = ()
    max_steps: int = 500
    #: Bound of ``InfiniumHandler.flush()``.
    flush_timeout: float = 5.0


def options_of(settings: Settings) -> Options:
    """The caller-side options of ``settings``."""
    return Options(
        disabled=settings.disabled,
        tags=tuple(settings.tags.items()),
        max_steps=settings.max_steps,
        flush_timeout=settings.shutdown_timeout,
    )


_CREDENTIAL_VARIABLES: Final = frozenset({f"{ENV_PREFIX}AGENT_ID", f"{ENV_PREFIX}AGENT_SECRET"})


def options_for(sink: object, overrides: Mapping[str, Any]) -> Options:
    """Options for a handler or processor given an explicit sink.

    The sink's own settings when it has them (an Exporter) and nothing is
    overridden; otherwise the environment plus ``overrides``, without requiring
    credentials: the sink, not these options, decides where traces go.
    """
    settings = getattr(sink, "settings", None)
    if isinstance(settings, Settings) and not overrides:
        return options_of(settings)
    try:
        return options_of(Settings.from_env(**overrides))
    except ConfigurationError as exc:
        if exc.variable not in _CREDENTIAL_VARIABLES:
            raise
    # Credentials are missing, so the export is not disabled: read the rest as if it were.
    return dataclasses.replace(
        options_of(Settings.from_env(**{**overrides, "disabled": True})), disabled=False
    )


# --- the default exporter ------------------------------------------------------------------------

_lock = threading.RLock()  # reentrant: a signal handler or a finalizer may log while held
_exporter: Exporter | None = None
_options: Options | None = None


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork() would stay held forever in the child.
    global _lock
    _lock = threading.RLock()


lifecycle.on_fork(_after_fork_in_child)


def configure(**settings_overrides: Any) -> Exporter:
    """Set the process-wide default exporter and return it.

    ``settings_overrides`` are :class:`~infinium_logging.settings.Settings`
    fields; whatever is not given comes from ``INFINIUM_*`` variables.  Every
    :class:`~infinium_logging.InfiniumHandler`, :class:`~infinium_logging.InfiniumProcessor`
    and ``task()`` without an explicit exporter uses it from then on.  A
    previous default exporter is shut down (it delivers what it holds within its
    ``shutdown_timeout``).  Raises :class:`~infinium_logging.errors.ConfigurationError`
    for a missing or invalid setting.
    """
    global _exporter, _options
    settings = settings_or_off(**settings_overrides)
    exporter = with_infino(settings)
    with _lock:
        previous, _exporter, _options = _exporter, exporter, options_of(settings)
    if previous is not None and previous is not exporter:
        previous.shutdown()
    return exporter


def get_default_exporter() -> Exporter:
    """The process-wide default exporter, created from the environment on first use.

    Its worker threads start only when the first trace is submitted.  Raises
    :class:`~infinium_logging.errors.ConfigurationError` when the environment
    lacks credentials (set ``INFINIUM_DISABLED=true`` where there are none).
    """
    global _exporter, _options
    exporter = _exporter
    if exporter is not None:
        return exporter
    with _lock:
        if _exporter is None:
            if infino_only():
                # The default Infino sink's exporter; Infinium is off on purpose, so no
                # warning about its credentials.
                sink = default_infino()
                assert sink is not None
                exporter, settings = sink.exporter, Settings.from_env(disabled=True)
            else:
                settings = settings_or_off()
                exporter = with_infino(settings)
            # The lock is reentrant: an event logged meanwhile by a signal handler or a
            # finalizer may have made one already, and holds its trace: that one stays.
            if _exporter is None:
                _exporter = exporter
                _options = _default_options_of(settings)
        return _exporter


def default_options() -> Options:
    """Options of the default exporter, read from the environment once (without creating it).

    Raises :class:`~infinium_logging.errors.ConfigurationError` like
    :func:`get_default_exporter` would, so that a handler or processor relying on
    the default fails where it is configured, not silently later.
    """
    global _options
    options = _options
    if options is not None:
        return options
    with _lock:
        if _options is None:
            if infino_configured():
                # With Infino configured, Infinium credentials are optional (traces go there).
                _options = options_for(None, {})
            else:
                settings = settings_or_off()
                _options = _default_options_of(settings)
                if not settings.disabled:
                    # Where logging is configured (the main thread, before a server takes
                    # over the signals): the exporter may only be made later, elsewhere.
                    signals.install(settings.handle_signals)
        return _options


def _default_options_of(settings: Settings) -> Options:
    """The options of the default exporter made from ``settings``.

    Off for want of credentials (see :func:`~infinium_logging.credentials.settings_or_off`),
    traces are still captured, and the exporter, disabled, counts them as ``disabled``;
    ``INFINIUM_DISABLED=true`` keeps to capturing nothing at all.
    """
    options = options_of(settings)
    if settings.disabled and not disabled_in_environment():
        return dataclasses.replace(options, disabled=False)
    return options


def peek_default_exporter() -> Exporter | None:
    """The default exporter if one exists, without creating it."""
    return _exporter


def _reset_default() -> None:
    """Forget the default exporter and options (tests; the exporter is shut down)."""
    global _exporter, _options
    with _lock:
        previous, _exporter, _options = _exporter, None, None
    if previous is not None:
        previous.shutdown(timeout=1.0)


# --- capture -----------------------------------------------------------------------------------

_captures: list[TaskSink] = []
#: The innermost active capture; read without a lock on every delivery.
_capture: TaskSink | None = None


def push_capture(sink: TaskSink) -> None:
    """Send every trace built from now on to ``sink`` instead of any exporter."""
    global _capture
    with _lock:
        _captures.append(sink)
        _capture = sink


def pop_capture(sink: TaskSink) -> None:
    """Undo :func:`push_capture` for ``sink``."""
    global _capture
    with _lock:
        if sink in _captures:
            _captures.remove(sink)
        _capture = _captures[-1] if _captures else None


def capturing() -> bool:
    """True while a :func:`~infinium_logging.testing.capture_tasks` block is active."""
    return _capture is not None


class _NullSink:
    """Where the traces of a handler whose own settings say ``disabled`` would go: nowhere."""

    def submit(self, task: TaskData | dict[str, Any]) -> bool:
        return False


NULL_SINK: Final[TaskSink] = _NullSink()


#: Sink types that take a PendingTrace and build it themselves (exactly these types: a
#: subclass may have its own submit, written for finished traces).
_PENDING_SINKS: Final[frozenset[type]] = frozenset({Exporter})


def deliver(sink: TaskSink | None, payload: TaskData | dict[str, Any] | PendingTrace) -> bool:
    """Hand one trace to the active capture, else ``sink``, else the default exporter: the
    one routing of the handler, the processor and ``task()``.

    ``None`` means the default exporter (created on first use; nothing is sent
    when the default settings say ``disabled``).  A trace not yet built is
    built here for a sink that does not build it itself.  May raise
    :class:`~infinium_logging.errors.ConfigurationError` when the default is
    needed and the environment cannot make one: callers decide how to report it.
    """
    capture = _capture
    if capture is not None:
        return capture.submit(payload)  # type: ignore[arg-type]
    if sink is None:
        if default_options().disabled:
            return False
        sink = get_default_exporter()
    if type(sink) in _PENDING_SINKS:
        return sink.submit(payload)  # type: ignore[arg-type]
    if isinstance(payload, PendingTrace):
        payload = payload.materialize()
    return submit_as_exporter(sink, payload)


# --- reporting problems without ever raising into the application --------------------------------

_warned: dict[str, float] = {}
_WARN_INTERVAL: Final = 60.0


def warn_once(key: str, message: str, *args: object) -> None:
    """Log a warning on the library's logger at most once a minute per ``key``.

    The library's own records are never captured by its handler, so this cannot
    recurse.
    """
    now = time.monotonic()
    last = _warned.get(key)
    if last is not None and now - last < _WARN_INTERVAL:
        return
    _warned[key] = now
    logging.getLogger(f"{LOGGER_NAME}.tasks").warning(message, *args)


#: Our own loggers and urllib3's: their records and events must never become traces or steps
#: (recursion, and the library's warnings filed as the application's steps); infino-sdk's,
#: because it logs its secret key at DEBUG.
_IGNORED: Final = ("infinium_logging", "urllib3", "infino_sdk")

#: Logger name -> ignored?  Logger names are few; the bound only guards against abuse.
ignored_names: dict[str, bool] = {}


def ignored_logger(name: str) -> bool:
    """Whether records of logger ``name`` are never traces (remembered in ``ignored_names``)."""
    ignored = any(
        name.startswith(prefix) and (len(name) == len(prefix) or name[len(prefix)] == ".")
        for prefix in _IGNORED
    )
    if len(ignored_names) >= 4096:
        ignored_names.clear()
    ignored_names[name] = ignored
    return ignored
