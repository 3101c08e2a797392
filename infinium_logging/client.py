"""The synchronous API client: send, send_batch, get_prompt, get_interpreted_result."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from .convert import to_task
from .delivery import Delivery
from .destination_infinium import InfiniumDestination
from .errors import BatchError, InfiniumError, NotFoundError
from .guard import EXPORTING
from .model import ApiResponse, BatchResult, PromptContent, TaskData, utc_now_iso
from .queued import PendingTrace
from .redact import Redactor
from .settings import Settings
from .transport import Transport, redacted

__all__ = ["MAX_BATCH_SIZE", "ApiClient", "disabled_response"]

#: ``send_batch`` takes at most this many traces (the platform's documented limit).
MAX_BATCH_SIZE: Final = 100


class ApiClient:
    """The official client's calls, on the caller's thread, through an exporter's delivery
    (its throttle, retry policy and shutdown deadline)."""

    def __init__(
        self,
        settings: Settings,
        delivery: Callable[[], Delivery],
        finished: Callable[[], bool],
        *,
        redactor: Redactor | None = None,
    ) -> None:
        self._settings = settings
        #: Every trace sent is redacted as the background delivery redacts it.
        self._redactor = Redactor.from_settings(settings) if redactor is None else redactor
        #: The exporter's delivery of the moment (a forked child gets a new one).
        self._delivery = delivery
        self._finished = finished

    def send(self, task: Any) -> ApiResponse:
        """See :meth:`Exporter.send <infinium_logging.exporter.Exporter.send>`."""
        if self._settings.disabled:
            return disabled_response()
        if isinstance(task, PendingTrace):
            task = task.materialize()
        if isinstance(task, Mapping) and task.get("current_datetime") is None:
            task = {**task, "current_datetime": utc_now_iso()}  # as submit() fills it in
        trace = task if isinstance(task, TaskData) else to_task(task, strict=True)
        delivery = self._delivery()
        body = delivery.destination.encode(self._redactor.task(trace))
        self._check_open()
        token = EXPORTING.set(True)
        try:
            return delivery.deliver(body).raise_unless_sent()
        finally:
            EXPORTING.reset(token)

    def send_batch(
        self,
        tasks: Iterable[Any],
        *,
        max_concurrent: int | None = None,
        fail_fast: bool = False,
    ) -> BatchResult:
        """See :meth:`Exporter.send_batch <infinium_logging.exporter.Exporter.send_batch>`."""
        batch = list(tasks)
        if len(batch) > MAX_BATCH_SIZE:
            raise ValueError(f"send_batch takes at most {MAX_BATCH_SIZE} traces, got {len(batch)}")
        if max_concurrent is not None and (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            raise ValueError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")
        if not batch:
            return BatchResult(successful=0, failed=0, results=[], errors=[], total=0)
        if self._settings.disabled:
            results = [disabled_response() for _ in batch]
            errors = [f"task {i}: {r.message}" for i, r in enumerate(results)]
            return BatchResult(0, len(batch), results, errors, total=len(batch))

        stop = threading.Event()

        def one(index: int) -> ApiResponse:
            if stop.is_set():
                return ApiResponse(
                    success=False,
                    message="not sent: an earlier trace failed (fail_fast)",
                    data={"task_index": index, "error": "NotSent"},
                )
            try:
                return self.send(batch[index])
            except Exception as exc:
                if fail_fast:
                    stop.set()
                text = exc.message if isinstance(exc, InfiniumError) else str(exc)
                status = exc.status_code if isinstance(exc, InfiniumError) else None
                return ApiResponse(
                    success=False,
                    status_code=status,
                    message=redacted(
                        f"{type(exc).__name__}: {text}", (self._settings.agent_secret,)
                    ),
                    data={"task_index": index, "error": type(exc).__name__},
                )

        limit = self._settings.workers if max_concurrent is None else max_concurrent
        concurrency = min(limit, len(batch))
        if concurrency == 1:
            results = [one(i) for i in range(len(batch))]
        else:
            with ThreadPoolExecutor(concurrency, thread_name_prefix="infinium-batch") as pool:
                results = list(pool.map(one, range(len(batch))))
        errors = [
            f"task {i} ({_name_of(batch[i])}): {r.message}"
            for i, r in enumerate(results)
            if not r.success
        ]
        successful = len(batch) - len(errors)
        if fail_fast and errors:
            # As the official client counts: what was sent and what failed before the stop;
            # the traces not sent are neither.
            failures = [
                line
                for line, result in zip(errors, (r for r in results if not r.success), strict=True)
                if (result.data or {}).get("error") != "NotSent"
            ]
            raise BatchError(
                f"batch stopped at the first failure ({len(errors) - len(failures)} not sent); "
                f"{failures[0]}",
                total_tasks=len(batch),
                failed_tasks=len(failures),
                errors=failures,
                successful_count=successful,
            )
        if successful == 0:
            raise BatchError(
                f"none of the {len(batch)} traces could be sent; first error: {results[0].message}",
                total_tasks=len(batch),
                failed_tasks=len(batch),
                errors=errors,
            )
        return BatchResult(successful, len(errors), results, errors, total=len(batch))

    def get_interpreted_result(self, trace_id: str) -> ApiResponse:
        """See :meth:`Exporter.get_interpreted_result`."""
        transport = self._transport()
        try:
            return self._call(lambda _timeout: transport.get_interpreted_result(trace_id))
        except NotFoundError as error:
            error.resource_type, error.resource_id = "trace", trace_id
            raise

    def get_prompt(
        self,
        prompt_id: str,
        prompt_key: str,
        version: int | str = "latest",
        variables: Mapping[str, str] | None = None,
    ) -> PromptContent:
        """See :meth:`Exporter.get_prompt`."""
        transport = self._transport()
        try:
            response = self._call(
                lambda _timeout: transport.get_prompt(prompt_id, prompt_key, version)
            )
        except NotFoundError as error:
            error.resource_type, error.resource_id = "prompt", prompt_id
            raise
        data = response.data or {}
        content = data.get("content")
        text = content if isinstance(content, str) else ""
        rendered = None
        if variables is not None:
            rendered = re.sub(
                r"\{\{(\w+)\}\}", lambda m: str(variables.get(m.group(1), m.group(0))), text
            )
        version_number = data.get("version")
        return PromptContent(
            prompt_id=str(data.get("promptId", prompt_id)),
            name=str(data.get("name", "")),
            version=version_number if isinstance(version_number, int) else 0,
            content=text,
            created_at=str(data.get("createdAt", "")),
            rendered_content=rendered,
        )

    def _transport(self) -> Transport:
        destination = self._delivery().destination
        assert isinstance(destination, InfiniumDestination)  # the API is Infinium's
        return destination.transport

    def _check_open(self) -> None:
        if self._finished():
            raise InfiniumError("the exporter is shut down")

    def _call(self, request: Callable[[float | None], ApiResponse]) -> ApiResponse:
        self._check_open()
        token = EXPORTING.set(True)
        try:
            return self._delivery().call(request).raise_unless_sent()
        finally:
            EXPORTING.reset(token)


def disabled_response() -> ApiResponse:
    """The answer of a call made while ``INFINIUM_DISABLED`` is on."""
    return ApiResponse(
        success=False,
        message="export is disabled (INFINIUM_DISABLED); nothing was sent",
        data={"reason": "disabled"},
    )


def _name_of(task: object) -> str:
    name = task.name if isinstance(task, TaskData) else None
    if name is None and isinstance(task, Mapping):
        name = task.get("name")
    return repr(name[:80]) if isinstance(name, str) else "unnamed"
