"""Events logged by finalizers the garbage collector runs on a sender thread are recorded."""

from __future__ import annotations

import contextvars
import gc
import threading
from typing import Any

__all__ = ["watch_collections"]


class _Suspended(threading.local):
    #: The token that lifts the exporting flag for the collection under way on this thread.
    token: contextvars.Token[bool] | None = None


def watch_collections(exporting: contextvars.ContextVar[bool]) -> None:
    """Lift ``exporting`` on a thread for as long as a garbage collection runs on it.

    The flag makes handlers ignore what is logged while the exporter delivers (its own
    logging, urllib3's).  A collection can start on a sender thread at any allocation, and
    the ``__del__`` methods it runs are the application's code: their events are recorded
    like any other (the library's locks are reentrant and its spool never waits on itself,
    so recording them there is safe).
    """
    suspended = _Suspended()

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            if exporting.get():
                suspended.token = exporting.set(False)
        elif suspended.token is not None:
            token, suspended.token = suspended.token, None
            try:
                exporting.reset(token)
            except ValueError:  # a finalizer left the context: the flag is the context's own
                exporting.set(True)

    gc.callbacks.append(on_collection)
