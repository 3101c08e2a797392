"""Fitting: a trace shrunk, visibly, until its wire body fits the platform's size limit."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .model import (
    MAX_BODY_BYTES,
    EnvironmentContext,
    ExecutionStep,
    TaskData,
    _builtin_float,
    _enc_hook,
    _Model,
    encode_task,
)
from .sanitise import TRUNCATION_MARK, truncate

__all__ = ["fit_task"]

_SHORT_PREVIEW: Final = 100


def fit_task(task: TaskData, max_bytes: int = MAX_BODY_BYTES) -> TaskData:
    """Return ``task`` if its body fits in ``max_bytes``, else a shrunk copy that does.

    Shrinks in priority order: step previews and per-step detail first, then
    the middle steps (the first and last are kept, and a marker step says how
    many were left out), then the summaries' tails (what the platform's judge
    does not read first; ``input_summary`` before ``output_summary``), then
    any remaining long strings.  ``name``,
    ``description``, ``current_datetime``, ``duration``, ``expected_outcome``
    and ``errors`` are never dropped (the errors' long strings are cut last).
    A shrunk trace is marked with
    ``environment.custom_tags["truncated"] = "true"`` and
    ``custom_tags["truncated_fields"]`` saying what was cut.
    """
    size = len(encode_task(task))
    if size <= max_bytes:
        return task
    work = msgspec.convert(msgspec.to_builtins(task, enc_hook=_builtin_float), TaskData)
    cut: list[str] = []
    _mark(work, cut)  # the mark itself takes room: account for it from the start
    for shrink in (_shrink_previews, _shrink_middle_steps, _shrink_summaries):
        size = len(encode_task(work))
        if size <= max_bytes:
            return work
        shrink(work, size - max_bytes, cut)
        _mark(work, cut)
    if len(encode_task(work)) > max_bytes:
        _shrink_strings(work, max_bytes, cut)
    return work


def _mark(task: TaskData, cut: list[str]) -> None:
    env = task.environment or EnvironmentContext()
    tags = dict(env.custom_tags or {})
    tags["truncated"] = "true"
    tags["truncated_fields"] = truncate(", ".join(cut) or "body over the size limit", 500)
    env.custom_tags = tags
    task.environment = env


def _shrink_previews(task: TaskData, excess: int, cut: list[str]) -> None:
    previews_cut = metadata_cut = False
    for step in task.steps or ():
        for name in ("input_preview", "output_preview"):
            value = getattr(step, name)
            if value is not None and len(value) > _SHORT_PREVIEW:
                setattr(step, name, truncate(value, _SHORT_PREVIEW))
                previews_cut = True
        if step.tool_call is not None:
            for name in ("input_summary", "output_summary"):
                value = getattr(step.tool_call, name)
                if value is not None and len(value) > _SHORT_PREVIEW:
                    setattr(step.tool_call, name, truncate(value, _SHORT_PREVIEW))
                    previews_cut = True
        if step.metadata is not None and len(_encode(step.metadata)) > 1024:
            step.metadata = {"truncated": "metadata over 1 KiB left out"}
            metadata_cut = True
        if step.error is not None and step.error.stack_trace and len(step.error.stack_trace) > 2000:
            step.error.stack_trace = truncate(step.error.stack_trace, 2000)
            previews_cut = True
    if previews_cut:
        cut.append("step previews")
    if metadata_cut:
        cut.append("step metadata over 1 KiB")


def _shrink_middle_steps(task: TaskData, excess: int, cut: list[str]) -> None:
    steps = task.steps or []
    if len(steps) <= 2:
        return
    sizes = [len(_encode(step)) + 1 for step in steps]
    middle = list(range(1, len(steps) - 1))
    # Drop from the centre outwards so the steps nearest both ends survive longest.
    order = sorted(middle, key=lambda i: abs(i - (len(steps) - 1) / 2))
    dropped: set[int] = set()
    freed = 0
    for index in order:
        if freed >= excess + 512:
            break
        dropped.add(index)
        freed += sizes[index]
    if not dropped:
        return
    first, last = min(dropped), max(dropped)
    kept = [step for i, step in enumerate(steps) if i < first]
    kept.append(
        ExecutionStep(
            step_number=steps[first].step_number,
            action="truncated",
            description=f"{len(dropped)} steps left out to fit the platform's size limit",
        )
    )
    kept.extend(
        step for i, step in enumerate(steps) if i > last or (first < i < last and i not in dropped)
    )
    kept.sort(key=lambda step: step.step_number)
    task.steps = kept
    cut.append(f"{len(dropped)} middle steps")


#: What the platform's judge reads of each summary: the unread tails go first, then what is
#: left, input before output each time (what the agent produced is what is graded).
_SUMMARY_READ: Final = (("input_summary", 3_000), ("output_summary", 8_000))


def _shrink_summaries(task: TaskData, excess: int, cut: list[str]) -> None:
    for floor in (True, False):
        for name, read in _SUMMARY_READ:
            if excess <= 0:
                return
            value: str | None = getattr(task, name)
            keep_at_least = read if floor else len(TRUNCATION_MARK) + 1
            if not value or len(value) <= keep_at_least:
                continue
            encoded = len(_encode(value))
            keep = len(value) - int((excess + 64) * len(value) / max(encoded, 1)) - 1
            setattr(task, name, truncate(value, max(keep, keep_at_least)))
            excess -= encoded - len(_encode(getattr(task, name)))
            if name not in cut:
                cut.append(name)


def _shrink_strings(task: TaskData, max_bytes: int, cut: list[str]) -> None:
    """Last resort: cut every long string outside the protected fields, halving until it fits."""
    protected = {"name", "description", "current_datetime", "expected_outcome", "errors"}
    limit = 4096
    while limit >= 16:
        strings_cut: list[bool] = []  # appended to by _cut_strings when it cuts one
        for name in task.__struct_fields__:
            if name not in protected:
                value = getattr(task, name)
                setattr(task, name, _cut_strings(value, limit, strings_cut))
        errors_cut = False
        for error in task.errors or ():
            # Errors are kept, every one of them, but not their every character: many long
            # messages could otherwise keep the trace over the limit, and lose all of it.
            if error.stack_trace and len(error.stack_trace) > limit * 4:
                error.stack_trace = truncate(error.stack_trace, limit * 4)
                errors_cut = True
            if len(error.message) > limit * 4:
                error.message = truncate(error.message, limit * 4)
                errors_cut = True
        if strings_cut and "long strings" not in cut:
            cut.append("long strings")
        if errors_cut and "error messages" not in cut:
            cut.append("error messages")
        _mark(task, cut)
        if len(encode_task(task)) <= max_bytes:
            return
        limit //= 2
    if task.steps:
        cut.append(f"{len(task.steps)} steps")
        task.steps = None
        _mark(task, cut)


def _cut_strings(value: Any, limit: int, cut: list[bool]) -> Any:
    if isinstance(value, str):
        if len(value) > limit:
            cut.append(True)
            return truncate(value, limit)
        return value
    if isinstance(value, list):
        return [_cut_strings(item, limit, cut) for item in value]
    if isinstance(value, dict):
        return {key: _cut_strings(item, limit, cut) for key, item in value.items()}
    if isinstance(value, _Model):
        for name in value.__struct_fields__:
            if name != "custom_tags":
                setattr(value, name, _cut_strings(getattr(value, name), limit, cut))
        return value
    return value


#: Sizes as encode_task writes them (marked floats in ``repr`` form).
_encode: Final = msgspec.json.Encoder(enc_hook=_enc_hook).encode
