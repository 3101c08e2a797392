"""The default exporter's Infino side: made from ``INFINIUM_INFINO_*``."""

from __future__ import annotations

import os
import threading
from typing import Final

from .destination_infinium import InfiniumDestination
from .exporter import Exporter
from .infino import InfinoSink, infino_destinations
from .infino_settings import INFINO_VARIABLES, InfinoSettings, infino_configured
from .settings import ENV_PREFIX, Settings

__all__ = ["default_infino", "infino_only", "with_infino"]

_ENDPOINT: Final = INFINO_VARIABLES["endpoint"]
_AGENT_VARIABLES: Final = (f"{ENV_PREFIX}AGENT_ID", f"{ENV_PREFIX}AGENT_SECRET")

_lock = threading.Lock()
#: The default sink and the endpoint it was made for (a changed variable makes a new one).
_current: tuple[str, InfinoSink] | None = None


def infino_only() -> bool:
    """Whether Infino is configured and Infinium credentials are not: traces go only there."""
    return infino_configured() and not any(
        os.environ.get(name, "").strip() for name in _AGENT_VARIABLES
    )


def default_infino() -> InfinoSink | None:
    """The process-wide Infino sink made from the environment (the default exporter when
    Infino alone is configured), or None without an endpoint.

    Raises :class:`~infinium_logging.errors.ConfigurationError` (naming the
    variable) when the other ``INFINIUM_INFINO_*`` variables are missing or bad.
    """
    global _current
    endpoint = os.environ.get(_ENDPOINT, "").strip()
    current = _current
    if not endpoint:
        return None
    if current is not None and current[0] == endpoint and not current[1].closed:
        return current[1]
    with _lock:
        previous = _current
        if previous is not None and previous[0] == endpoint and not previous[1].closed:
            return previous[1]
        sink = InfinoSink()
        _current = (endpoint, sink)
    if previous is not None:
        previous[1].shutdown(timeout=1.0)
    return sink


def with_infino(settings: Settings) -> Exporter:
    """An exporter for ``settings``; with ``INFINIUM_INFINO_ENDPOINT`` set, one that delivers
    every trace to Infinium and to Infino's datasets, each endpoint in a lane of its own
    (see :mod:`~infinium_logging.lanes`)."""
    if not infino_configured() or settings.disabled:
        return Exporter(settings)
    infino = infino_destinations(InfinoSettings.from_env())
    return Exporter(settings, destinations=[InfiniumDestination(settings), *infino])


def _reset() -> None:
    """Forget the default sink (tests; it is shut down)."""
    global _current
    with _lock:
        previous, _current = _current, None
    if previous is not None:
        previous[1].shutdown(timeout=1.0)
