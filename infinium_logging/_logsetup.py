"""The library's own logger: a ``NullHandler`` by default, ``setup_logging`` to see it on stderr."""

from __future__ import annotations

import logging
import sys
from typing import Final

__all__ = ["LOGGER_NAME", "logger", "setup_logging"]

LOGGER_NAME: Final = "infinium_logging"

#: Parent of every logger the library uses ("infinium_logging.exporter", ...).
logger: Final = logging.getLogger(LOGGER_NAME)
# urllib3's habit: silent unless the application configures logging.
logger.addHandler(logging.NullHandler())

_HANDLER_MARK: Final = "_infinium_setup_logging"


def setup_logging(level: str | int = "INFO") -> None:
    """Send the library's own log lines (only those) to stderr at ``level``.

    Calling it again changes the level without adding a second handler.  The
    root logger and the application's handlers are left alone.
    """
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    for existing in logger.handlers:
        if getattr(existing, _HANDLER_MARK, False):
            existing.setLevel(numeric)
            break
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
        setattr(handler, _HANDLER_MARK, True)
        handler.setLevel(numeric)
        logger.addHandler(handler)
    logger.setLevel(numeric)
