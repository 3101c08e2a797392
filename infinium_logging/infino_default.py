"""The default Infino destination: made from ``INFINIUM_INFINO_*`` for the default exporter."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Final

from .exporter import Exporter
from .infino import InfinoSink, _built
from .infino_settings import INFINO_VARIABLES
from .model import TaskData
from .queued import PendingTrace
from .settings import ENV_PREFIX

__all__ = ["default_infino", "deliver_default", "infino_configured"]

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


def deliver_default(
    payload: TaskData | dict[str, Any] | PendingTrace, infinium: Callable[[], Exporter]
) -> bool:
    """Hand one trace to the default Infino sink, and to the default Infinium exporter
    (``infinium()``) when Infinium credentials are set; True when every destination took it.

    The trace is built once, here, so both destinations get the same trace.
    """
    sink = default_infino()
    task = _built(payload)
    taken = sink.submit(task) if sink is not None else True
    if any(os.environ.get(name, "").strip() for name in _AGENT_VARIABLES):
        taken = infinium().submit(task) and taken
    return taken


def _reset() -> None:
    """Forget the default sink (tests; it is shut down)."""
    global _current
    with _lock:
        previous, _current = _current, None
    if previous is not None:
        previous[1].shutdown(timeout=1.0)
