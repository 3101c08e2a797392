"""Infino rows: a trace flattened into documents, bulk bodies, and reading the bulk answer."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Final

import msgspec

from .model import ExecutionStep, TaskData
from .sanitise import truncate

__all__ = [
    "BulkAnswer",
    "bulk_entry",
    "read_bulk_answer",
    "step_rows",
    "trace_id_of",
    "trace_row",
]

#: Longest ``steps`` text kept in a trace row (the whole row must fit a bulk request).
MAX_STEPS_TEXT: Final = 512 * 1024
#: Statuses of a record inside a bulk answer worth sending again.
TRANSIENT_ITEM_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})


def _plain(value: Any) -> Any:
    """The built-in value of a subclass msgspec does not take (the model's marked floats)."""
    if isinstance(value, float):
        return float(value)  # NaN and infinities become null: a row may hold one
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_plain)
_DECODER: Final = msgspec.json.Decoder()


def trace_id_of(body: bytes) -> str:
    """The trace's ``_id``: a digest of its encoded body (``encode_task``).

    Derived from the content, not drawn at random, so that the same trace gets
    the same id on every retry, when replayed from the spool after a crash, and
    in a later process: Infino then overwrites rather than adds a copy.
    """
    return hashlib.sha256(body).hexdigest()[:32]


def trace_row(task: TaskData, trace_id: str, agent: str | None = None) -> dict[str, Any]:
    """One flat document for ``task``: what a dashboard groups and filters by."""
    steps = task.steps or []
    usage = task.llm_usage
    step_errors = sum(1 for step in steps if step.error is not None)
    errors = len(task.errors or ()) + step_errors
    prompt, completion = _tokens(task)
    row: dict[str, Any] = {
        "@timestamp": task.current_datetime,
        "trace_id": trace_id,
        "name": task.name,
        "description": task.description,
        "duration": task.duration,
        "outcome": "error" if errors else "success",
        "error_count": errors,
        "step_count": len(steps),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "models": _models(task),
        "tools": _tools(task),
    }
    if agent:
        row["agent"] = agent
    if usage is not None and usage.estimated_cost_usd is not None:
        row["cost_usd"] = usage.estimated_cost_usd
    if task.input_summary:
        row["input_summary"] = task.input_summary
    if task.output_summary:
        row["output_summary"] = task.output_summary
    env = task.environment
    if env is not None:
        for name in ("framework", "runtime", "region"):
            value = getattr(env, name)
            if value:
                row[name] = value
        if env.custom_tags:
            row["tags"] = dict(env.custom_tags)
    first_error = _first_error(task)
    if first_error:
        row["error"] = first_error
    if steps:
        text = _ENCODER.encode(steps).decode("utf-8")
        row["steps"] = truncate(text, MAX_STEPS_TEXT) if len(text) > MAX_STEPS_TEXT else text
    return row


def step_rows(task: TaskData, trace_id: str) -> list[tuple[str, dict[str, Any]]]:
    """One ``(_id, document)`` per step: the trace id, action, model, tokens, tool and error."""
    rows = []
    for index, step in enumerate(task.steps or ()):
        rows.append((f"{trace_id}-{index:05d}", _step_row(task, step, trace_id)))
    return rows


def _step_row(task: TaskData, step: ExecutionStep, trace_id: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "@timestamp": task.current_datetime,
        "trace_id": trace_id,
        "trace_name": task.name,
        "step_number": step.step_number,
        "action": step.action,
        "description": step.description,
    }
    if step.duration_ms is not None:
        row["duration_ms"] = step.duration_ms
    llm = step.llm_call
    if llm is not None:
        row["model"] = llm.model
        if llm.prompt_tokens is not None:
            row["prompt_tokens"] = llm.prompt_tokens
        if llm.completion_tokens is not None:
            row["completion_tokens"] = llm.completion_tokens
    tool = step.tool_call
    if tool is not None:
        row["tool"] = tool.tool_name
    error = step.error or (tool.error if tool is not None else None)
    if error is not None:
        row["error_type"] = error.error_type
        row["error"] = error.message
    return row


def bulk_entry(doc_id: str, document: dict[str, Any]) -> bytes:
    """The two NDJSON lines that index ``document`` under ``doc_id`` (the final newline too)."""
    return (
        b'{"index":{"_id":' + _ENCODER.encode(doc_id) + b"}}\n" + _ENCODER.encode(document) + b"\n"
    )


def _tokens(task: TaskData) -> tuple[int, int]:
    usage = task.llm_usage
    prompt = completion = 0
    for step in task.steps or ():
        llm = step.llm_call
        if llm is not None:
            prompt += llm.prompt_tokens or 0
            completion += llm.completion_tokens or 0
    # The trace's own totals win when given: steps may hold only some of the calls.
    if usage is not None:
        if usage.prompt_tokens is not None:
            prompt = usage.prompt_tokens
        if usage.completion_tokens is not None:
            completion = usage.completion_tokens
    return prompt, completion


def _models(task: TaskData) -> list[str]:
    found: dict[str, None] = {}
    usage = task.llm_usage
    if usage is not None:
        if usage.model:
            found[usage.model] = None
        for call in usage.calls or ():
            found[call.model] = None
    for step in task.steps or ():
        if step.llm_call is not None:
            found[step.llm_call.model] = None
    return sorted(found)


def _tools(task: TaskData) -> list[str]:
    found: dict[str, None] = {}
    for step in task.steps or ():
        if step.tool_call is not None:
            found[step.tool_call.tool_name] = None
    general = task.general
    if general is not None and general.tools_used:
        used = general.tools_used
        for name in [used] if isinstance(used, str) else used:
            found[name] = None
    return sorted(found)


def _first_error(task: TaskData) -> str | None:
    for error in task.errors or ():
        return f"{error.error_type}: {error.message}"
    for step in task.steps or ():
        if step.error is not None:
            return f"{step.error.error_type}: {step.error.message}"
    return None


# --- the answer to a bulk request ----------------------------------------------------------------


@dataclasses.dataclass
class BulkAnswer:
    """What a 200 answer to a bulk request says about each record sent, by ``_id``."""

    #: Stored.
    accepted: set[str] = dataclasses.field(default_factory=set)
    #: Refused for now (throttled, a busy shard): worth sending again.
    retry: set[str] = dataclasses.field(default_factory=set)
    #: Refused for good: ``_id`` -> the reason (the error's type, else ``status_<n>``).
    failed: dict[str, str] = dataclasses.field(default_factory=dict)


def read_bulk_answer(ids: list[str], raw: bytes) -> BulkAnswer:
    """Read a 200 answer to a bulk request of the records ``ids`` (in request order).

    ``errors: false`` accepts every record.  Otherwise each item's status
    decides: 2xx stored, 408/429/5xx to retry, any other refused for good.  A
    record the answer does not mention, or an answer that cannot be read, is
    retried: the ``_id`` makes sending it again harmless.
    """
    answer = BulkAnswer()
    try:
        data = _DECODER.decode(raw)
    except msgspec.DecodeError:
        data = None
    if not isinstance(data, dict):
        answer.retry.update(ids)
        return answer
    if data.get("errors") is False:
        answer.accepted.update(ids)
        return answer
    items = data.get("items")
    seen: set[str] = set()
    for position, item in enumerate(items if isinstance(items, list) else ()):
        result = next(iter(item.values()), None) if isinstance(item, dict) and item else None
        if not isinstance(result, dict):
            continue
        doc_id = result.get("_id")
        if not isinstance(doc_id, str) and position < len(ids):
            doc_id = ids[position]
        if not isinstance(doc_id, str) or doc_id in seen:
            continue
        seen.add(doc_id)
        status = result.get("status")
        if isinstance(status, int) and 200 <= status < 300:
            answer.accepted.add(doc_id)
        elif status in TRANSIENT_ITEM_STATUSES:
            answer.retry.add(doc_id)
        else:
            answer.failed[doc_id] = _reason_of(result, status)
    answer.retry.update(doc_id for doc_id in ids if doc_id not in seen)
    return answer


def _reason_of(result: dict[str, Any], status: object) -> str:
    error = result.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    if isinstance(kind, str) and kind:
        return truncate(kind, 80)
    return f"status_{status}" if isinstance(status, int) else "unknown"
