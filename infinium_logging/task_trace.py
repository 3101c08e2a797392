"""Building a task's trace: its captured steps, usage and sections as one TaskData, on a sender."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from . import _default
from ._default import Options
from .environment import environment, merge_environment
from .fields import RawEvent, held_by_events
from .queued import PendingTrace
from .settings import Settings
from .steps import event_step
from .timestamps import iso_timestamp
from .usage import Usage

if TYPE_CHECKING:
    from .task_state import _TaskState

__all__ = ["TaskTrace", "fallback_options"]


class TaskTrace(PendingTrace):
    """A finished task's trace, built from what the task captured by :meth:`materialize`.

    Made when the task ends, on the thread that ends it: it takes the task's
    fields as they are then, and its events, which no longer change.
    """

    __slots__ = (
        "basis",
        "elapsed",
        "errors",
        "events",
        "fields",
        "framework",
        "framework_version",
        "held",
        "limit",
        "logger_name",
        "omitted",
        "start_wall",
        "steps",
        "tags",
        "usage",
    )

    def __init__(self, state: _TaskState, elapsed: float) -> None:
        fields = dict(state.fields)
        events = state.events
        self.basis = fields
        self.steps = len(events) + (1 if state.omitted else 0)
        self.held = held_by_events(events)
        self.fields = fields
        self.events = events
        self.errors = state.errors
        self.omitted = state.omitted
        self.usage = state.usage
        self.limit = state._limit()
        self.elapsed = elapsed
        self.start_wall = state.start_wall
        self.framework = state.framework
        self.framework_version = state.framework_version
        self.logger_name = state.logger_name
        self.tags = (state.options or fallback_options(state.explicit or state.sink)).tags

    def materialize(self) -> dict[str, Any]:
        """The trace as a dict of TaskData fields: steps, errors, LLM usage, time, environment."""
        trace = dict(self.fields)
        name = trace.get("name")
        if not isinstance(name, str) or not name:
            name = trace["name"] = "unnamed task"
        if trace.get("description") is None:
            trace["description"] = name
        elapsed = self.elapsed
        start = iso_timestamp(self.start_wall)
        if trace.get("current_datetime") is None:
            trace["current_datetime"] = start
        if trace.get("duration") is None:
            trace["duration"] = round(elapsed, 6)
        span = {"start_time": start, "end_time": iso_timestamp(self.start_wall + elapsed)}
        trace["time_tracking"] = merge_environment(trace.get("time_tracking"), span)
        limit = self.limit
        steps: list[dict[str, Any]] = []
        usage: Usage | None = None
        late = Usage()  # the LLM calls of steps past max_steps (threads racing for the last)
        omitted = self.omitted
        for event in self.events:
            step = event if type(event) is dict else event_step(cast(RawEvent, event))
            call = step.get("llm_call")
            if len(steps) >= limit:
                omitted += 1
                if call is not None:
                    late.add(call, step.get("metadata"), len(late.calls) < limit)
                continue
            step["step_number"] = len(steps) + 1
            if call is not None:
                if usage is None:
                    usage = Usage()
                usage.add(call, step.get("metadata"), len(usage.calls) < limit)
            steps.append(step)
        for later in (late, self.usage):
            if later is not None and later.count:
                if usage is None:
                    usage = Usage()
                usage.merge(later, limit)
        if omitted:
            if len(steps) >= limit and steps:
                steps.pop()  # make room for the marker: never more than max_steps steps
                omitted += 1
            steps.append(
                {
                    "step_number": len(steps) + 1,
                    "action": "truncated",
                    "description": f"{omitted} more steps left out (max_steps={limit})",
                    "metadata": {"omitted_steps": omitted},
                }
            )
        given_steps = trace.get("steps")
        if isinstance(given_steps, list) and given_steps:
            offset = len(given_steps)
            for step in steps:
                step["step_number"] += offset
            trace["steps"] = [*given_steps, *steps]
        elif steps:
            trace["steps"] = steps
        given_errors = trace.get("errors")
        if isinstance(given_errors, list) and given_errors:
            trace["errors"] = [*given_errors, *self.errors]
        elif self.errors:
            trace["errors"] = list(self.errors)
        if trace.get("llm_usage") is None and usage is not None:
            trace["llm_usage"] = usage.as_dict()
        trace["environment"] = merge_environment(
            trace.get("environment"),
            environment(self.framework, self.logger_name, self.tags, self.framework_version),
        )
        return trace


def fallback_options(sink: object = None) -> Options:
    """The options of a task no handler or processor bound: its exporter's (``sink``) when it
    has settings, else the default exporter's (not read, nor warned about, for a task whose
    trace goes elsewhere), or the defaults when they cannot be read."""
    settings = getattr(sink, "settings", None)
    if isinstance(settings, Settings):
        return _default.options_of(settings)
    try:
        return _default.default_options()
    except Exception:
        return Options()
