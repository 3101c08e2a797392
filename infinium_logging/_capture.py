"""``capture_tasks()``: collect in memory the traces your code would send, for tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from . import _default
from .convert import to_task
from .model import TaskData
from .queued import PendingTrace
from .redact import default_redactor

__all__ = ["CapturingSink", "capture_tasks"]


class CapturingSink:
    """A sink that keeps every trace as a :class:`~infinium_logging.model.TaskData`.

    Traces are built at once, on the thread that submits them (the exporter
    would build them on its sender thread), and dicts are read leniently,
    exactly as the exporter's sender reads them, and redacted as
    ``INFINIUM_REDACT`` says, so what you see is what would be sent (before
    ``fit_task`` shrinks one over the 1 MiB body limit).
    """

    def __init__(self) -> None:
        self.tasks: list[TaskData] = []
        self._lock = threading.Lock()

    def submit(self, task: TaskData | dict[str, Any] | PendingTrace) -> bool:
        """Keep ``task`` (built now if it is not yet); always accepted."""
        if isinstance(task, PendingTrace):
            task = task.materialize()
        trace = task if isinstance(task, TaskData) else to_task(task, strict=False)
        trace = default_redactor().task(trace)  # what would be sent: redacted
        with self._lock:
            self.tasks.append(trace)
        return True


@contextlib.contextmanager
def capture_tasks() -> Iterator[list[TaskData]]:
    """Capture, instead of sending, every trace built while the block runs.

    Yields the list the traces are appended to, in the order they were
    finished::

        from infinium_logging.testing import capture_tasks

        def test_classifier():
            with capture_tasks() as tasks:
                classify("my printer is on fire")
            assert [t.name for t in tasks] == ["Classify ticket"]
            assert tasks[0].steps[0].action == "llm_inference"

    It applies to the whole process (every thread, every handler, processor
    and ``task()``, whatever exporter they were given) and works with
    ``INFINIUM_DISABLED=true``, so a test suite can run with the library
    disabled and still assert on its traces.  Nothing reaches any exporter
    while it is active.  Blocks may nest: the innermost one captures.
    """
    default_redactor()  # a bad INFINIUM_REDACT is said here, not lost in a handler
    sink = CapturingSink()
    _default.push_capture(sink)
    try:
        yield sink.tasks
    finally:
        _default.pop_capture(sink)
