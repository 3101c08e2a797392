"""Which loggers a handler or processor ignores: the provider SDKs' and their HTTP clients'.

An LLM call made through an instrumented SDK already becomes one step (see
:mod:`infinium_logging.otel`); the SDK's own log lines (``HTTP Request: POST ...``
from httpx, openai's and anthropic's DEBUG lines) would add a second, empty one
beside it.  They are noise in a trace without OpenTelemetry too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ._default import ignored_logger

__all__ = ["DEFAULT_IGNORED_LOGGERS", "IgnoredLoggers"]

#: The loggers ignored unless told otherwise: the provider SDKs and the HTTP clients they
#: log through (current openai SDKs use ``httpx2``/``httpcore2``).
DEFAULT_IGNORED_LOGGERS: Final = ("openai", "anthropic", "httpx", "httpcore", "httpx2", "httpcore2")

#: Logger names are few; the bound only guards against a program that makes them by the million.
_CACHE_MAX: Final = 4096


class IgnoredLoggers:
    """``ignore_loggers`` of a handler or processor: logger names, each also covering the
    loggers below it (``"httpx"`` covers ``"httpx.client"``, not ``"httpx_sse"``), plus the
    library's own, which are always ignored.  ``cache`` maps the names seen to the answer."""

    __slots__ = ("cache", "prefixes")

    def __init__(self, names: Iterable[str] | str) -> None:
        if isinstance(names, str):
            names = (names,)
        prefixes: list[str] = []
        for name in names:
            if not isinstance(name, str) or not name:
                raise TypeError(f"ignore_loggers takes logger names (strings), got {name!r}")
            prefixes.append(name.rstrip("."))
        self.prefixes: tuple[str, ...] = tuple(prefixes)
        self.cache: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"IgnoredLoggers({list(self.prefixes)!r})"

    def __call__(self, name: str) -> bool:
        """Whether records of logger ``name`` are ignored (and remember the answer)."""
        ignored = ignored_logger(name) or any(
            name.startswith(prefix) and (len(name) == len(prefix) or name[len(prefix)] == ".")
            for prefix in self.prefixes
        )
        cache = self.cache
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[name] = ignored
        return ignored
