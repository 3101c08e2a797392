"""Lifecycle: the one registry of what runs at exit, in multiprocessing finalizers, after fork."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import weakref
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["Stoppable", "on_exit", "on_flush", "on_fork", "run_flush_hooks", "track"]

_log = logging.getLogger("infinium_logging.exporter")


class Stoppable(Protocol):
    """What an exporter offers the process-wide hooks."""

    def _exit_pending(self) -> bool:
        """Whether it has anything to finish at exit (started, or traces waiting)."""
        ...

    def _begin_exit(self) -> bool:
        """Close it and set its deadline for exit; False when a shutdown had begun."""
        ...

    def _finish_shutdown(self) -> object:
        """Wait, within its deadline, for what it holds to be settled."""
        ...

    def _reset_after_fork(self) -> None:
        """Forget the parent's traces, threads and locks (in the child)."""
        ...


_live: Final[weakref.WeakSet[Stoppable]] = weakref.WeakSet()
#: Run at exit before the exporters shut down, so that what they hand over is sent with the
#: rest (the capture side ends the tasks still open).
_exit_hooks: Final[list[Callable[[], None]]] = []
#: Run by a flush first, on a thread that may export (traces whose capture ended where
#: exporting was not safe are submitted then, so that a flush before os._exit covers them).
_flush_hooks: Final[list[Callable[[], None]]] = []
#: Run in a forked child, in the order registered, before the exporters are reset.
_fork_hooks: Final[list[Callable[[], None]]] = []
_registered = {"atexit": False, "multiprocessing": False}


def track(exporter: Stoppable) -> None:
    """Shut ``exporter`` down at exit and reset it in a forked child (held weakly)."""
    _live.add(exporter)


def on_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` at exit, before the exporters shut down."""
    _exit_hooks.append(hook)


def on_flush(hook: Callable[[], None]) -> None:
    """Run ``hook`` at the start of every flush made where exporting is safe."""
    _flush_hooks.append(hook)


def on_fork(hook: Callable[[], None]) -> None:
    """Run ``hook`` in a forked child (new locks for module state, say)."""
    _fork_hooks.append(hook)


def run_flush_hooks() -> None:
    """Run the flush hooks; a failing one is logged at debug level (a flush never raises)."""
    for hook in _flush_hooks:
        try:
            hook()
        except Exception:  # the trace it was for is lost, logged
            _log.debug("flush hook failed", exc_info=True)


def _shutdown_all_at_exit() -> None:
    """Shut every exporter down, each within its own ``shutdown_timeout``, in parallel."""
    for hook in list(_exit_hooks):
        try:
            hook()
        except Exception:  # exit goes on, whatever happens to one hook
            _log.debug("exit hook failed", exc_info=True)
    # Not only started ones: a trace submitted during interpreter shutdown (an atexit handler
    # that logs) finds no sender thread, and none can be started any more (Python 3.12+).
    begun = [e for e in list(_live) if e._exit_pending() and e._begin_exit()]
    for exporter in begun:
        try:
            exporter._finish_shutdown()
        except Exception:  # exit goes on, whatever happens to one exporter
            _log.debug("shutdown at exit failed", exc_info=True)


def ensure_exit_hooks() -> None:
    """Register the exit hook once per process (and once per multiprocessing child)."""
    if not _registered["atexit"]:
        _registered["atexit"] = True
        atexit.register(_shutdown_all_at_exit)
    if not _registered["multiprocessing"]:
        # multiprocessing children end with os._exit(), which skips atexit; they do run
        # multiprocessing's own finalizers first, so register there too.
        mp = sys.modules.get("multiprocessing")
        util = sys.modules.get("multiprocessing.util")
        if mp is not None and util is not None and mp.parent_process() is not None:
            _registered["multiprocessing"] = True
            util.Finalize(None, _shutdown_all_at_exit, exitpriority=100)


def _after_fork_in_child() -> None:
    _registered["multiprocessing"] = False
    for hook in list(_fork_hooks):
        hook()
    for exporter in list(_live):
        exporter._reset_after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)

# Registered now, not when the first exporter starts: atexit runs handlers last registered
# first, so an application's own handlers (registered after importing this) still log and
# submit before the exporters shut down; and one registered during exit would never run.
ensure_exit_hooks()
