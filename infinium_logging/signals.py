"""SIGTERM: deliver (or spool) what is buffered before the signal ends the process.

A process ended by a signal whose handler is the default never runs ``atexit``:
what the exporters hold would be lost.  That is how Docker, Kubernetes and
systemd stop a program, and how uvicorn ends after its graceful shutdown (it
puts the previous handler back and raises the signal again).  So the first
exporter that sends installs a handler for SIGTERM, from the main thread only,
and only over the default action or a Python handler (never over one set from
C, nor over ``SIG_IGN``):

- over the default action, it shuts every exporter down (each within its
  ``shutdown_timeout``; what is left is spooled, see :mod:`.spill`), puts the
  default action back and raises the signal again: the process ends by SIGTERM
  as it would have without us, ``shutdown_timeout`` later at most;
- over a Python handler (a framework's graceful shutdown), it flushes every
  exporter (within ``shutdown_timeout``) and then calls that handler.

The work runs on a thread of its own, waited for with a timeout: whatever the
interrupted main thread holds (a lock of ours, a logging handler's), the
process still ends in time.  ``INFINIUM_HANDLE_SIGNALS=false`` (or
``handle_signals=False``) leaves signals alone.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

from . import lifecycle, spill

__all__ = ["HANDLED", "install", "installed"]

#: The signals handled: SIGINT's default handler raises KeyboardInterrupt, and exit runs.
HANDLED: Final = (signal.SIGTERM,) if hasattr(signal, "SIGTERM") else ()
#: Time allowed past the longest ``shutdown_timeout`` before the signal goes on regardless.
_GRACE: Final = 0.75
#: The deadline when no exporter was running at the signal: the default ``shutdown_timeout``.
_FIRST_LIMIT: Final = 5.0

_lock = threading.Lock()
#: Signal -> the handler ours replaced.
_previous: dict[int, Any] = {}
#: Signals this process installed ours for (a forked child may install it again: a server's
#: worker sets handlers of its own after the fork, gunicorn's uvicorn worker the default).
_done: set[int] = set()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _done.clear()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def install(enabled: bool = True) -> None:
    """Install the handler for :data:`HANDLED` signals if ``enabled``, where that is safe
    (see the module's docstring).  Once per process and signal: a handler set over ours
    later (a server's, for its graceful shutdown) is left in place; servers that put ours
    back when they are done (uvicorn) then reach it.  Never raises."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        for signum in HANDLED:
            if signum in _done:
                continue
            try:
                current = signal.getsignal(signum)
                if current is _on_signal:  # inherited from the parent, with what it replaced
                    _done.add(signum)
                    continue
                if current is None or current == signal.SIG_IGN:
                    continue  # set from C; ignored on purpose
                if current != signal.SIG_DFL and not callable(current):
                    continue
                signal.signal(signum, _on_signal)
            except (ValueError, OSError, RuntimeError):
                continue  # not the main interpreter's main thread, or no such signal here
            _previous[signum] = current
            _done.add(signum)


def installed(signum: int = HANDLED[0] if HANDLED else 15) -> bool:
    """Whether our handler is the one in place for ``signum``."""
    return signal.getsignal(signum) is _on_signal


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Imported here: the exporter module installs this handler, and imports this module.
    previous = _previous.get(signum, signal.SIG_DFL)
    live: list[Any] = [e for e in list(lifecycle._live) if not getattr(e, "closed", True)]
    limit = max((e.settings.shutdown_timeout for e in live), default=0.0)
    if callable(previous):
        # A framework's graceful shutdown follows: the exporters stay open for what it logs,
        # unless what was logged before the signal could not all be delivered in time.  Then
        # it is spilled now: the framework may well end the process by the signal afterwards
        # (gunicorn's uvicorn worker does), and no exit hook would run.
        if live:
            _bounded(lambda: _flush(live, limit), limit + _GRACE)
        previous(signum, frame)
        return
    # Even with no exporter running yet: the exit hooks end the tasks still open (a script
    # stopped in the middle of its task()), whose traces then start the exporter they go to.
    _bounded(lifecycle._shutdown_all_at_exit, (limit if live else _FIRST_LIMIT) + _GRACE)
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _flush(exporters: list[Any], limit: float) -> None:
    """Flush ``exporters`` side by side within ``limit`` seconds; if any could not deliver
    everything, shut them all down (what is left goes to the exit spill)."""
    flushed: list[bool] = []

    def one(target: Any) -> None:
        flushed.append(bool(target.flush(limit)))

    threads = [
        threading.Thread(target=one, args=(e,), name="infinium-signal-flush", daemon=True)
        for e in exporters
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(limit + _GRACE)
    if len(flushed) < len(exporters) or not all(flushed):
        spill.mark_exiting()
        lifecycle._shutdown_all_at_exit()


def _bounded(work: Callable[[], None], timeout: float) -> None:
    """Run ``work`` on a thread of its own and wait for it at most ``timeout`` seconds."""

    def run() -> None:
        try:
            work()
        except Exception:  # the signal goes on whatever happens here
            return

    thread = threading.Thread(target=run, name="infinium-signal", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no new thread at interpreter shutdown: here, then
        run()
        return
    thread.join(timeout)
