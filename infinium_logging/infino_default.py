"""The default Infino destination: made from ``INFINIUM_INFINO_*`` for the default exporter."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .exporter import Exporter
from .infino import InfinoSink, built
from .infino_settings import INFINO_VARIABLES
from .model import TaskData
from .queued import PendingTrace
from .settings import ENV_PREFIX

__all__ = [
    "DefaultExporter",
    "default_infino",
    "deliver_default",
    "infino_configured",
    "infino_only",
]

_ENDPOINT: Final = INFINO_VARIABLES["endpoint"]
_AGENT_VARIABLES: Final = (f"{ENV_PREFIX}AGENT_ID", f"{ENV_PREFIX}AGENT_SECRET")

_lock = threading.Lock()
#: The default sink and the endpoint it was made for (a changed variable makes a new one).
_current: tuple[str, InfinoSink] | None = None


def infino_configured() -> bool:
    """Whether ``INFINIUM_INFINO_ENDPOINT`` is set: the default exporter then sends to Infino."""
    return bool(os.environ.get(_ENDPOINT, "").strip())


def default_infino() -> InfinoSink | None:
    """The process-wide Infino sink made from the environment, or None without an endpoint.

    Raises :class:`~infinium_logging.errors.ConfigurationError` (naming the
    variable) when the other ``INFINIUM_INFINO_*`` variables are missing or bad.
    """
    global _current
    endpoint = os.environ.get(_ENDPOINT, "").strip()
    current = _current
    if not endpoint:
        return None
    if current is not None and current[0] == endpoint:
        return current[1]
    with _lock:
        previous = _current
        if previous is not None and previous[0] == endpoint:
            return previous[1]
        sink = InfinoSink()
        _current = (endpoint, sink)
    if previous is not None:
        previous[1].shutdown(timeout=1.0)
    return sink


class DefaultExporter(Exporter):
    """The default exporter while ``INFINIUM_INFINO_ENDPOINT`` is set: every trace it takes
    goes to the default Infino sink too (or only there, without Infinium credentials), and
    its ``flush`` and ``shutdown`` cover both destinations."""

    def submit(self, task: Any) -> bool:
        """Hand one trace to the default Infino sink, and to Infinium when its credentials
        are set; True when every destination took it.  Built once, here, so that both
        destinations get the same trace."""
        sink = default_infino()
        if sink is None:
            return super().submit(task)
        trace = built(task)
        taken = sink.submit(trace)
        if not infino_only():
            taken = super().submit(trace) and taken
        return taken

    def flush(self, timeout: float | None = None) -> bool:
        """Flush both destinations within ``timeout`` seconds in all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = super().flush(timeout)
        sink = default_infino()
        if sink is None:
            return done
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return sink.flush(left) and done

    def shutdown(self, timeout: float | None = None) -> bool:
        """Shut both destinations down within ``timeout`` seconds in all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = super().shutdown(timeout)
        sink = _current[1] if _current is not None else None
        if sink is None:
            return done
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return sink.shutdown(left) and done


def deliver_default(
    payload: TaskData | dict[str, Any] | PendingTrace, infinium: Callable[[], Exporter]
) -> bool:
    """Hand one trace to the default exporter (``infinium()``), which sends it to Infino
    too (see :class:`DefaultExporter`); with Infino alone configured, to the Infino sink
    without making an Infinium exporter at all."""
    sink = default_infino()
    if sink is not None and infino_only():
        return sink.submit(built(payload))
    return infinium().submit(payload)


def infino_only() -> bool:
    """Whether Infino is configured and Infinium credentials are not: traces go only there."""
    return infino_configured() and not any(
        os.environ.get(name, "").strip() for name in _AGENT_VARIABLES
    )


def _reset() -> None:
    """Forget the default sink (tests; it is shut down)."""
    global _current
    with _lock:
        previous, _current = _current, None
    if previous is not None:
        previous[1].shutdown(timeout=1.0)
