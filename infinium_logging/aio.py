"""Awaitable access to the platform API (the official ``AsyncInfiniumClient``'s calls), run on
a bounded pool of threads so that the event loop never blocks."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .official import check_wait, create_task_data, interpretation_ready, timed_out

if TYPE_CHECKING:
    from .exporter import Exporter
    from .model import ApiResponse, BatchResult, PromptContent, TaskData

__all__ = ["AsyncClient"]

_T = TypeVar("_T")


class AsyncClient:
    """The platform's request/response API as coroutines, over an :class:`Exporter`.

    ``AsyncClient()`` makes an exporter of its own from ``INFINIUM_*`` (or from
    keyword settings, ``AsyncClient(agent_id=..., agent_secret=...)``) and shuts it
    down with :meth:`aclose`; ``AsyncClient(exporter=exp)`` borrows one and leaves
    it open.  Each call runs the exporter's synchronous call (same throttle,
    retries and errors) on one of at most ``max_concurrent`` threads, so a slow
    platform never stalls other coroutines and never gets more than
    ``max_concurrent`` requests at once from this client.

    Cancelling an awaiting coroutine is safe: the request already on the wire
    finishes in its thread and its answer is discarded; nothing is left half done.
    Logging through the handler or processor needs none of this: it never blocks.
    """

    def __init__(
        self, exporter: Exporter | None = None, *, max_concurrent: int = 8, **settings: Any
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise TypeError(f"max_concurrent must be an int, got {max_concurrent!r}")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        if exporter is not None and settings:
            raise TypeError("give either exporter= or settings, not both")
        if exporter is None:
            from .exporter import Exporter  # noqa: PLC0415 - the exporter imports the capture side

            exporter, self._owned = Exporter(**settings), True
        else:
            self._owned = False
        self._exporter = exporter
        self._limit = max_concurrent
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<AsyncClient max_concurrent={self._limit} exporter={self._exporter!r}>"

    @property
    def exporter(self) -> Exporter:
        """The exporter whose calls this client awaits."""
        return self._exporter

    async def _run(self, call: Callable[..., _T], *args: Any) -> _T:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._limit, thread_name_prefix="infinium-async")
            pool = self._pool
        loop = asyncio.get_running_loop()
        # As asyncio.to_thread does: the call sees this context (the running task() above all).
        context = contextvars.copy_context()
        return await loop.run_in_executor(pool, functools.partial(context.run, call, *args))

    async def send(self, task: TaskData | Mapping[str, Any] | Any) -> ApiResponse:
        """:meth:`Exporter.send`, awaited: send one trace now (the official ``send_task_data``)."""
        return await self._run(self._exporter.send, task)

    async def send_task(
        self,
        name: str,
        description: str,
        duration: float,
        current_datetime: str | None = None,
        **fields: Any,
    ) -> ApiResponse:
        """Build a trace from keyword arguments (as ``create_task_data``) and send it now."""
        trace = create_task_data(name, description, duration, current_datetime, **fields)
        return await self.send(trace)

    async def send_batch(
        self,
        tasks: Iterable[TaskData | Mapping[str, Any] | Any],
        *,
        max_concurrent: int | None = None,
        fail_fast: bool = False,
    ) -> BatchResult:
        """:meth:`Exporter.send_batch`, awaited (the official ``send_tasks_batch``)."""
        call = functools.partial(
            self._exporter.send_batch, max_concurrent=max_concurrent, fail_fast=fail_fast
        )
        return await self._run(call, list(tasks))

    async def get_interpreted_result(self, trace_id: str) -> ApiResponse:
        """:meth:`Exporter.get_interpreted_result`, awaited."""
        return await self._run(self._exporter.get_interpreted_result, trace_id)

    async def get_prompt(
        self,
        prompt_id: str,
        prompt_key: str,
        version: int | str = "latest",
        variables: Mapping[str, str] | None = None,
    ) -> PromptContent:
        """:meth:`Exporter.get_prompt`, awaited.  Inside a ``task()`` the prompt is linked to
        that task's trace, as when called synchronously."""
        call = functools.partial(self._exporter.get_prompt, variables=variables)
        return await self._run(call, prompt_id, prompt_key, version)

    async def wait_for_interpretation(
        self, trace_id: str, timeout: float = 120.0, poll_interval: float = 3.0
    ) -> ApiResponse:
        """Poll until Maestro has interpreted the trace; ``asyncio.sleep`` between polls.

        Raises :class:`~infinium_logging.errors.InfiniumTimeoutError` after
        ``timeout`` seconds, as the synchronous
        :meth:`Exporter.wait_for_interpretation` does.
        """
        check_wait(trace_id, timeout, poll_interval)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        polls = 0
        while True:
            response = await self.get_interpreted_result(trace_id)
            polls += 1
            if interpretation_ready(response):
                return response
            left = deadline - loop.time()
            if left <= 0:
                raise timed_out(trace_id, timeout, polls)
            await asyncio.sleep(min(poll_interval, left))

    async def aclose(self) -> None:
        """Stop the threads; shut the exporter down when this client made it."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True)
        if self._owned:
            await asyncio.to_thread(self._exporter.shutdown)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
