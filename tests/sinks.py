"""A sink for the tests of the handler, the processor and task(): keeps what it is given."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from infinium_logging.convert import to_task
from infinium_logging.model import TaskData


class ListSink:
    """Keeps what it is given, validated strictly: the library's own output must be clean."""

    def __init__(self) -> None:
        self.tasks: list[TaskData] = []
        self.lock = threading.Lock()

    def submit(self, task: TaskData | dict[str, Any]) -> bool:
        trace = task if isinstance(task, TaskData) else to_task(task, strict=True)
        with self.lock:
            self.tasks.append(trace)
        return True


# The official client's types are dataclasses with the same field names (infinium-o2 is not a
# test dependency): enough of them to migrate a trace from.
@dataclasses.dataclass
class OfficialLlmCall:
    model: str
    temperature: float | None = None


@dataclasses.dataclass
class OfficialStep:
    step_number: int
    action: str
    description: str
    llm_call: OfficialLlmCall | None = None


@dataclasses.dataclass
class OfficialTaskData:
    name: str
    description: str
    current_datetime: str
    duration: float
    output_summary: str | None = None
    steps: list[OfficialStep] | None = None


def official_trace() -> OfficialTaskData:
    """A trace built with the official client's types, as code migrating from it has them."""
    return OfficialTaskData(
        "Classify ticket",
        "Route a support ticket",
        "2026-11-22T08:51:00.000000Z",
        1.5,
        output_summary="billing",
        steps=[OfficialStep(1, "llm_inference", "Ask", OfficialLlmCall("gpt-4o", 1e-05))],
    )


OFFICIAL_BODY_PART = (
    b'"duration":1.5,"output_summary":"billing","steps":[{"step_number":1,'
    b'"action":"llm_inference","description":"Ask","llm_call":{"model":"gpt-4o",'
    b'"temperature":1e-05}}]'
)
