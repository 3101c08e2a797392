"""The official client's one-liners: create_task_data, send_task, waiting for Maestro's
interpretation of a trace, and what its ``@trace_agent`` decorator records of a call."""

from __future__ import annotations

import inspect
import reprlib
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from .convert import MAX_DESCRIPTION_LENGTH, to_task
from .errors import InfiniumTimeoutError, ValidationError
from .model import ApiResponse, TaskData, utc_now_iso
from .sanitise import truncate

__all__ = [
    "call_summary",
    "create_task_data",
    "docstring_description",
    "interpretation_ready",
    "result_summary",
    "send_task",
    "wait_for_interpretation",
]


class _Client(Protocol):
    def send(self, task: TaskData) -> ApiResponse: ...

    def get_interpreted_result(self, trace_id: str) -> ApiResponse: ...


def create_task_data(
    name: str,
    description: str,
    duration: float,
    current_datetime: str | None = None,
    **fields: Any,
) -> TaskData:
    """A :class:`TaskData` from keyword arguments, checked strictly (the official client's
    ``create_task_data``): sections and other fields may be dicts or model objects, and
    ``current_datetime`` defaults to now.  Raises
    :class:`~infinium_logging.errors.ValidationError` naming the field at fault."""
    trace = {
        "name": name,
        "description": description,
        "current_datetime": utc_now_iso() if current_datetime is None else current_datetime,
        "duration": duration,
        **fields,
    }
    return to_task(trace, strict=True)


def send_task(
    client: _Client,
    name: str,
    description: str,
    duration: float,
    current_datetime: str | None = None,
    **fields: Any,
) -> ApiResponse:
    """Build a trace as :func:`create_task_data` does and send it now through ``client``."""
    return client.send(create_task_data(name, description, duration, current_datetime, **fields))


def interpretation_ready(response: ApiResponse) -> bool:
    """Whether an ``interpreted-result`` answer carries Maestro's interpretation yet."""
    data = response.data
    return isinstance(data, dict) and bool(data.get("interpretedTraceResult"))


def check_wait(trace_id: str, timeout: float, poll_interval: float) -> None:
    """The arguments of a wait, checked where the caller is waiting for the answer."""
    if not isinstance(trace_id, str) or not trace_id.strip():
        raise ValidationError("trace_id is required", field="trace_id")
    if not timeout >= 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    if not poll_interval > 0:
        raise ValueError(f"poll_interval must be a number of seconds > 0, got {poll_interval!r}")


def timed_out(trace_id: str, timeout: float, polls: int) -> InfiniumTimeoutError:
    """The error a wait raises when Maestro had not answered by its deadline."""
    return InfiniumTimeoutError(
        f"Interpretation not ready after {timeout:g} s for trace {trace_id} ({polls} polls)",
        timeout_duration=timeout,
    )


def wait_for_interpretation(
    client: _Client,
    trace_id: str,
    timeout: float = 120.0,
    poll_interval: float = 3.0,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ApiResponse:
    """Poll ``client.get_interpreted_result`` until Maestro has interpreted the trace.

    Returns the answer whose ``data["interpretedTraceResult"]`` is set; raises
    :class:`~infinium_logging.errors.InfiniumTimeoutError` when ``timeout`` seconds
    pass first (the last poll is never later than the deadline), and whatever
    ``get_interpreted_result`` raises (``NotFoundError`` for an unknown trace).
    """
    check_wait(trace_id, timeout, poll_interval)
    deadline = clock() + timeout
    polls = 0
    while True:
        response = client.get_interpreted_result(trace_id)
        polls += 1
        if interpretation_ready(response):
            return response
        left = deadline - clock()
        if left <= 0:
            raise timed_out(trace_id, timeout, polls)
        sleep(min(poll_interval, left))


#: What the official ``@trace_agent`` keeps of a call's arguments and of its result.
CALL_SUMMARY_LIMIT: Final = 3000
RESULT_SUMMARY_LIMIT: Final = 8000


# reprlib bounds the work on the caller's thread: a plain repr() of a large argument (a
# document, a dataframe) would format all of it only to be cut to a few thousand characters.
def _bounded(limit: int) -> reprlib.Repr:
    bounded = reprlib.Repr()
    bounded.maxlevel = 4
    bounded.maxstring = bounded.maxlong = limit
    bounded.maxother = 500
    bounded.maxlist = bounded.maxtuple = bounded.maxdict = bounded.maxset = 50
    return bounded


_CALL_REPR: Final = _bounded(CALL_SUMMARY_LIMIT)
_RESULT_REPR: Final = _bounded(RESULT_SUMMARY_LIMIT)


def _bounded_repr(value: object, bounded: reprlib.Repr, limit: int) -> str:
    try:
        text = bounded.repr(value)
    except Exception as error:
        text = f"<{type(value).__name__}: repr failed ({type(error).__name__})>"
    return truncate(text, limit)


def call_summary(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A decorated call's arguments as ``input_summary``, as ``@trace_agent`` writes them."""
    return _bounded_repr({"args": args, "kwargs": kwargs}, _CALL_REPR, CALL_SUMMARY_LIMIT)


def result_summary(value: object) -> str:
    """A decorated call's result as ``output_summary``."""
    return _bounded_repr(value, _RESULT_REPR, RESULT_SUMMARY_LIMIT)


def docstring_description(fn: Callable[..., Any]) -> str | None:
    """A function's docstring as a trace description (``None`` without one)."""
    doc = inspect.getdoc(fn)
    return truncate(doc, MAX_DESCRIPTION_LENGTH) if doc else None
