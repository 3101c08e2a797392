"""Serverless functions: deliver an invocation's traces before the platform freezes the process.

AWS Lambda (and Cloud Functions, Azure Functions, ...) freezes the process as
soon as the handler returns: the exporter's threads stop mid-delivery and may
never run again.  Wrap the handler so that it waits, within a bounded
deadline, until everything logged during the invocation is delivered::

    from infinium_logging.serverless import flush_after

    @flush_after(timeout=2.0)
    def handler(event, context):
        ...

or, around any block, ``with flushing(timeout=2.0): ...``.  Both work for
``async def`` code too (``async with flushing(...)`` and a decorated
coroutine function, which flush without blocking the event loop).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from . import lifecycle

__all__ = ["flush_after", "flush_all", "flushing"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def flush_all(timeout: float | None = None) -> bool:
    """Flush every live exporter (the default one included) within ``timeout`` seconds in
    all (default: the longest ``shutdown_timeout`` of them); True when all got through."""
    live: list[Any] = list(lifecycle._live)  # exporters, as the registry holds them
    # Every destination the registry holds (exporters, Infino sinks): what one lacks, it is not.
    exporters = [
        e
        for e in live
        if not getattr(e, "closed", True) and not getattr(e.settings, "disabled", False)
    ]
    if not exporters:
        return True
    limit = max(e.settings.shutdown_timeout for e in exporters) if timeout is None else timeout
    deadline = time.monotonic() + max(0.0, limit)
    done = True
    for exporter in exporters:
        done = exporter.flush(max(0.0, deadline - time.monotonic())) and done
    return done


class flushing:  # lower case: used like a function, as contextlib's helpers are
    """A context manager (sync or async) that flushes every exporter on the way out, within
    ``timeout`` seconds, whether the block raised or not.  ``flushed`` says whether it got
    everything through."""

    def __init__(self, timeout: float | None = 2.0) -> None:
        self.timeout = timeout
        self.flushed: bool | None = None

    def __enter__(self) -> flushing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.flushed = flush_all(self.timeout)

    async def __aenter__(self) -> flushing:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.flushed = await asyncio.to_thread(flush_all, self.timeout)


@overload
def flush_after(function: Callable[_P, _R], *, timeout: float | None = 2.0) -> Callable[_P, _R]: ...


@overload
def flush_after(
    function: None = None, *, timeout: float | None = 2.0
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]: ...


def flush_after(function: Callable[_P, _R] | None = None, *, timeout: float | None = 2.0) -> Any:
    """Decorate a handler (a plain or ``async def`` function) so that every exporter is
    flushed, within ``timeout`` seconds, after each call; as ``@flush_after`` or
    ``@flush_after(timeout=...)``."""

    def decorate(inner: Callable[_P, _R]) -> Callable[_P, _R]:
        if inspect.iscoroutinefunction(inner):
            coroutine = cast(Callable[_P, Awaitable[Any]], inner)

            @functools.wraps(inner)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                async with flushing(timeout):
                    return await coroutine(*args, **kwargs)

            return cast(Callable[_P, _R], async_wrapper)

        @functools.wraps(inner)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with flushing(timeout):
                return inner(*args, **kwargs)

        return wrapper

    return decorate if function is None else decorate(function)
