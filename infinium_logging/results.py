"""Results: telling ``on_result`` what became of each trace, without it ever hurting a sender."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .convert import decode_task
from .guard import EXPORTING
from .model import ApiResponse
from .queued import Item, PendingTrace, build_quietly

__all__ = ["OnResult", "Reporter", "failure_response"]

_log = logging.getLogger("infinium_logging.exporter")

#: ``on_result(task, response)``: see :class:`~infinium_logging.exporter.Exporter`.
OnResult = Callable[[Any, ApiResponse], object]


def failure_response(reason: str, error: str | None) -> ApiResponse:
    """What ``on_result`` is given for a trace lost for ``reason``."""
    message = f"not delivered ({reason})" + (f": {error}" if error else "")
    return ApiResponse(success=False, status_code=None, message=message, data={"reason": reason})


class Reporter:
    """Calls ``on_result`` (when there is one) with the trace as built and the outcome; a
    callback that raises is logged once, and costs nothing else."""

    def __init__(self, callback: OnResult | None) -> None:
        self._callback = callback
        self._error_logged = False

    def report(self, item: Item, response: ApiResponse) -> None:
        """Tell the callback what became of ``item``."""
        callback = self._callback
        if callback is None:
            return
        token = EXPORTING.set(True)
        # Called where a failure of ours is being handled: the callback's own exception would
        # be shown as raised while handling it, as if the library had failed first.
        handled = sys.exc_info()[1]
        try:
            task = item.task
            if isinstance(task, PendingTrace):  # settled before a sender built it
                task = build_quietly(task)
            elif task is None and item.body is not None:  # a spooled wire body
                task = decode_task(item.body, strict=False)
            callback(task, response)
        except Exception as exc:
            if not self._error_logged:
                self._error_logged = True
                if handled is not None:
                    _unchain(exc, handled)
                _log.warning("the on_result callback raised (logged once)", exc_info=exc)
        finally:
            EXPORTING.reset(token)

    def report_lost(self, items: list[Item], until: float) -> None:
        """Report the traces lost at shutdown until ``until`` at the latest.

        On a thread of their own, waited for until then: a callback that takes its time
        must not hold the shutdown (or the interpreter's exit) past its deadline.  Here, on
        this thread, when no thread can be started (at exit, Python 3.12+).
        """
        if self._callback is None or not items:
            return

        def report() -> None:
            for item in items:
                if time.monotonic() > until:
                    break
                reason = "shutdown" if item.ref is None else "spool_full"
                self.report(item, failure_response(reason, None))

        thread = threading.Thread(target=report, name="infinium-exporter-report", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            report()
            return
        thread.join(max(0.0, until - time.monotonic()))


def _unchain(error: BaseException, handled: BaseException) -> None:
    """Hide ``handled`` from the chain ``error`` is shown with (it was raised while ``handled``
    was being handled, by no fault of its own); its other links stay."""
    link: BaseException | None = error
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if link.__context__ is handled:
            link.__suppress_context__ = True
            return
        link = link.__cause__ if link.__cause__ is not None else link.__context__
