"""The synchronous API client: send, send_batch, get_prompt, get_interpreted_result."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Final, Protocol

from .convert import to_task
from .delivery import Delivery
from .destination_infinium import InfiniumDestination, encode_trace
from .errors import BatchError, InfiniumError, NotFoundError
from .guard import EXPORTING
from .model import ApiResponse, BatchResult, PromptContent, TaskData, utc_now_iso
from .official import send_task, wait_for_interpretation
from .queued import PendingTrace
from .redact import Redactor
from .settings import Settings
from .transport import Transport, redacted

__all__ = ["MAX_BATCH_SIZE", "ApiCalls", "ApiClient", "OfficialTask", "disabled_response"]

#: ``send_batch`` takes at most this many traces (the platform's documented limit).
MAX_BATCH_SIZE: Final = 100


class OfficialTask(Protocol):
    """The official client's ``TaskData`` (or any dataclass of TaskData fields)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


class ApiCalls:
    """The official client's calls as methods of an :class:`~infinium_logging.Exporter`,
    on the caller's thread, through its :class:`ApiClient` (``_client``)."""

    _client: ApiClient

    def send(self, task: TaskData | Mapping[str, Any] | PendingTrace | OfficialTask) -> ApiResponse:
        """Send one trace now and return the platform's answer (``data["traceId"]``).

        Synchronous, on the caller's thread, through the same throttle and
        retry policy as the background delivery.  A dict is validated strictly.
        Raises :class:`~infinium_logging.errors.ValidationError` for an invalid
        trace, :class:`~infinium_logging.errors.AuthenticationError` for refused
        credentials, and the last error (``ServerError``, ``RateLimitError``,
        ``NetworkError``...) when the retries run out.  With
        ``INFINIUM_DISABLED`` on, nothing is sent and the answer says so.
        """
        return self._client.send(task)

    def send_batch(
        self,
        tasks: Iterable[TaskData | Mapping[str, Any] | OfficialTask],
        *,
        max_concurrent: int | None = None,
        fail_fast: bool = False,
    ) -> BatchResult:
        """Send up to 100 traces now, concurrently over the pool; results in input order.

        ``max_concurrent`` bounds the requests in flight (default: ``workers``;
        ``1`` sends one after the other, the official synchronous client's way).
        One trace's failure never stops the others: each gets its own
        ApiResponse in ``results`` (``success=False`` and the error's text for a
        failure, also listed in ``errors``) -- unless ``fail_fast=True``: then
        the first failure stops what is not yet sent and raises
        :class:`~infinium_logging.errors.BatchError` with the counts.  More than
        100 traces is a ``ValueError``.  ``BatchError`` is also raised when
        nothing at all could be sent (for example refused credentials).
        """
        return self._client.send_batch(tasks, max_concurrent=max_concurrent, fail_fast=fail_fast)

    def get_interpreted_result(self, trace_id: str) -> ApiResponse:
        """The platform's interpretation of a trace sent earlier.

        ``data["interpretedTraceResult"]`` is None until the platform graded it.
        Same throttle, retries and errors as :meth:`send`.
        """
        return self._client.get_interpreted_result(trace_id)

    def wait_for_interpretation(
        self, trace_id: str, timeout: float = 120.0, poll_interval: float = 3.0
    ) -> ApiResponse:
        """Poll :meth:`get_interpreted_result` until Maestro has interpreted the trace.

        Returns the answer whose ``data["interpretedTraceResult"]`` is set; raises
        :class:`~infinium_logging.errors.InfiniumTimeoutError` after ``timeout``
        seconds, as the official client's ``wait_for_interpretation`` does.
        """
        return wait_for_interpretation(self, trace_id, timeout, poll_interval)

    def send_task(
        self,
        name: str,
        description: str,
        duration: float,
        current_datetime: str | None = None,
        **fields: Any,
    ) -> ApiResponse:
        """The official ``send_task``: build a trace from keyword arguments (strictly, see
        :func:`~infinium_logging.official.create_task_data`) and send it now."""
        return send_task(self, name, description, duration, current_datetime, **fields)

    def get_prompt(
        self,
        prompt_id: str,
        prompt_key: str,
        version: int | str = "latest",
        variables: Mapping[str, str] | None = None,
    ) -> PromptContent:
        """A Prompt Studio prompt; ``variables`` fill its ``{{placeholders}}`` into
        ``rendered_content`` (unknown ones are left as they are)."""
        prompt = self._client.get_prompt(prompt_id, prompt_key, version, variables)
        # The capture side imports this module: linking reaches back to it only here.
        from .tasks import link_prompt  # noqa: PLC0415

        link_prompt(
            {
                "prompt_id": prompt.prompt_id,
                "prompt_name": prompt.name,
                "version": prompt.version,
                "source": "prompt_studio",
                "variables_used": list(variables) if variables else None,
                "fetched_at": utc_now_iso(),
            }
        )
        return prompt


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
        destination = delivery.destination
        clean = self._redactor.task(trace)
        body = destination.frame([destination.record(encode_trace(clean), clean)])
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
        _check_batch(batch, max_concurrent)
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


def _check_batch(batch: list[Any], max_concurrent: int | None) -> None:
    """``ValueError`` for a batch over :data:`MAX_BATCH_SIZE` or a bad ``max_concurrent``."""
    if len(batch) > MAX_BATCH_SIZE:
        raise ValueError(f"send_batch takes at most {MAX_BATCH_SIZE} traces, got {len(batch)}")
    if max_concurrent is not None and (
        isinstance(max_concurrent, bool)
        or not isinstance(max_concurrent, int)
        or max_concurrent < 1
    ):
        raise ValueError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")


def _name_of(task: object) -> str:
    name = task.name if isinstance(task, TaskData) else None
    if name is None and isinstance(task, Mapping):
        name = task.get("name")
    return repr(name[:80]) if isinstance(name, str) else "unnamed"
