"""A sink for the tests of the handler, the processor and task(): keeps what it is given."""

from __future__ import annotations

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
