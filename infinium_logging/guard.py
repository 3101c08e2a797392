"""The recursion guard: whether this thread is exporting now, so that capture ignores it."""

from __future__ import annotations

import contextvars
import logging
from typing import Any, Final

from ._collections import watch_collections
from .redact import sink_redactor

__all__ = ["EXPORTING", "in_export", "submit_as_exporter"]

_log = logging.getLogger("infinium_logging.exporter")

#: Set on sender threads and while the exporter sends on a caller's thread.  A ContextVar
#: rather than a thread-local: every event logged reads it, and ``ContextVar.get`` is the
#: cheapest per-thread read there is (as OpenTelemetry suppresses its own instrumentation).
#: Contexts copied from an exporting one (``copy_context`` inside ``on_result``) inherit it.
EXPORTING: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar(
    "infinium_logging_exporting", default=False
)

# Finalizers the garbage collector runs on a sender thread log the application's events.
watch_collections(EXPORTING)

#: ``in_export()`` is True on a thread that is exporting right now (a sender thread, or
#: inside ``send``).  Log handlers and processors must ignore events while it is true:
#: whatever the exporter or urllib3 logs while delivering must not become a trace again.
#: The ContextVar's own ``get``: the logging hot paths call it for every event.
in_export: Final = EXPORTING.get


def submit_as_exporter(sink: Any, task: object) -> bool:
    """``sink.submit(task)`` for a sink of the application's own, with what it logs meanwhile
    ignored as the exporter's own logging is: a sink that logs a tagged event (or anything
    inside a task) through the handler that called it would otherwise recurse.  The trace is
    redacted first (``INFINIUM_REDACT``): a sink of one's own never gets it unredacted."""
    try:
        task = sink_redactor().task(task)
    except Exception:  # never handed over unredacted
        _log.debug("a trace could not be redacted for a sink", exc_info=True)
        return False
    token = EXPORTING.set(True)
    try:
        return bool(sink.submit(task))
    finally:
        EXPORTING.reset(token)
