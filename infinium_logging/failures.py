"""Why a trace was not delivered, in one sentence a person can act on, said once where seen."""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

from .errors import InfiniumError, InfiniumTimeoutError, NetworkError
from .settings import ENV_PREFIX, Settings

__all__ = ["explain", "hush", "say", "tell", "where"]

_log = logging.getLogger("infinium_logging.exporter")

#: Every kind of failure the exporter explains (the first of each, per exporter).
KINDS: Final = ("auth", "rejected", "network", "retries_exhausted", "max_elapsed")

_lock = threading.Lock()
#: Whether the one explanation written to stderr (see :func:`say`) is spent.
_stderr_used: list[bool] = []


def where(settings: Settings) -> str:
    """``host:port`` of the platform as configured (what a network error is about)."""
    try:
        parts = urlsplit(settings.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.hostname}:{port}"
    except ValueError:
        return settings.base_url


def explain(kind: str, error: InfiniumError | str, settings: Settings, fate: str) -> str:
    """The sentence for a failure of ``kind`` (one of :data:`KINDS`).

    ``error`` is the error (or its text, already cleaned of secrets); ``fate``
    says what became of the trace ("dropped", "kept in the spool ...").
    """
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error.message}"
    status = getattr(error, "status_code", None)
    if kind == "auth":
        return (
            f"Infinium refused the agent credentials (HTTP {status}) at {settings.base_url}: "
            f"check {ENV_PREFIX}AGENT_ID and {ENV_PREFIX}AGENT_SECRET (and {ENV_PREFIX}BASE_URL). "
            f"The trace was {fate}."
        )
    if kind == "rejected":
        said = text
        if isinstance(error, InfiniumError):
            said = str(error.details.get("server_message") or error.message)
        hint = ""
        if status == 404 and not urlsplit(settings.base_url).path.rstrip("/").endswith("/api/v1"):
            hint = f" ({ENV_PREFIX}BASE_URL usually ends in /api/v1)"
        return (
            f"Infinium rejected a trace (HTTP {status}) at {settings.trace_url}{hint}: {said}. "
            f"It is not retried; later rejections with the same message are only counted."
        )
    if kind == "network":
        what = "timed out" if isinstance(error, InfiniumTimeoutError) else "unreachable"
        if isinstance(error, NetworkError) and error.original_error is not None:
            errno = getattr(error.original_error, "errno", None)
            if errno is not None:
                text = f"{text} [errno {errno}]"
        return (
            f"Infinium at {where(settings)} is {what} ({text}); traces are retried, and "
            f"{fate} when retries or the shutdown deadline run out. "
            f"Check {ENV_PREFIX}BASE_URL and the network."
        )
    budget = (
        f"{settings.max_retries} retries"
        if kind == "retries_exhausted"
        else f"{settings.max_elapsed:g} s of retries"
    )
    return (
        f"A trace could not be delivered to {where(settings)} after {budget}: {text}. "
        f"It was {fate}."
    )


def say(logger: logging.Logger, level: int, message: str) -> None:
    """Log ``message``; when nothing configured would show it, write it to stderr instead
    (once per process: the first explanation is the one a person needs)."""
    try:
        logger.log(level, message)
        if _shown(logger, level):
            return
        with _lock:
            if _stderr_used:
                return
            _stderr_used.append(True)
        stream = sys.stderr
        if stream is not None:
            stream.write(f"infinium_logging: {message}\n")
            stream.flush()
    except Exception:  # explaining a failure must not be one (a closed stderr at exit)
        return


def _shown(logger: logging.Logger, level: int) -> bool:
    """Whether a record of ``level`` from ``logger`` reaches a handler that shows something
    (the library's own ``NullHandler`` does not; ``logging.lastResort`` does when there is
    no handler at all)."""
    if logger.disabled or not logger.isEnabledFor(level):
        return False
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            found = True
            if not isinstance(handler, logging.NullHandler) and level >= handler.level:
                return True
        if not current.propagate:
            break
        current = current.parent
    last = logging.lastResort
    return not found and last is not None and level >= last.level


#: Kinds already explained, per exporter (or any owner): each is said once.
_explained: weakref.WeakKeyDictionary[object, set[str]] = weakref.WeakKeyDictionary()


def tell(  # noqa: PLR0917 - one call per failure kind, from the exporter's failure paths
    owner: object,
    kind: str,
    error: InfiniumError | str,
    settings: Settings,
    fate: str,
    clean: Callable[[str], str] = str,
) -> None:
    """Explain the first failure of ``kind`` for ``owner`` (see :func:`explain`, :func:`say`);
    later ones are only counted.  ``clean`` takes secrets out of the sentence."""
    with _lock:
        seen = _explained.setdefault(owner, set())
        if kind in seen:
            return
        seen.add(kind)
    level = logging.ERROR if kind == "auth" else logging.WARNING
    say(_log, level, clean(explain(kind, error, settings, fate)))


def hush(owner: object) -> None:
    """Count ``owner``'s failures without explaining them: the sentences name Infinium's
    settings, and an exporter with another destination says what failed in its stats."""
    with _lock:
        _explained.setdefault(owner, set()).update(KINDS)


def last_error(error: str | None) -> str:
    """The tail of a "dropped N" line: what went wrong last, if anything did."""
    return f" (last error: {error})" if error else ""
