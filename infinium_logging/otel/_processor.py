"""``InfiniumSpanProcessor``: GenAI spans become steps of the running task, or traces of their own.

Which trace a span's step joins: a span that starts while a
:func:`~infinium_logging.task` is active is a step of that task, wherever it
ends (a stream consumed on another thread).  A span outside any task waits in
its OpenTelemetry trace, and that trace becomes one Infinium trace when its root
span ends.  Those open traces are bounded by count, bytes and age; what is
dropped is counted in :attr:`InfiniumSpanProcessor.dropped`.

What ``on_end`` costs the thread that ends a span: reading its attributes into
the fields of an event and appending it.  Steps, previews' JSON and
``llm_usage`` are built by the exporter on its sender thread, as for logged
events; nothing here touches the network.
"""

from __future__ import annotations

import collections
import importlib.metadata
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from infinium_logging import _default
from infinium_logging._default import Options, TaskSink, default_options, options_for
from infinium_logging.errorinfo import ErrorInfo
from infinium_logging.fields import FROM_EVENT, RawEvent, held_text
from infinium_logging.guard import in_export
from infinium_logging.task_state import Recorder, _TaskState, active_state, open_tasks

from ._events import GenAIEvents, with_logged
from ._mapping import LLM, describe, error_of, kind_of, llm_fields, tool_fields

__all__ = ["InfiniumSpanProcessor"]


#: Why a span's step can be lost, as counted in :attr:`InfiniumSpanProcessor.dropped`.
OTEL_DROP_REASONS: Final = (
    "open_traces",  # more traces waiting for their root span than max_open_traces
    "open_bytes",  # the steps waiting weighed more than max_open_bytes
    "open_age",  # its trace's root span had not ended after max_trace_age seconds
    "shutdown",  # its trace's root span had not ended at shutdown
)
#: What a waiting step is taken to weigh beyond its previews (its dicts and small strings).
_STEP_BYTES: Final = 512
#: Spans started inside a task and not yet ended that are remembered (a span never ended
#: must not hold its task forever).
_MAX_STARTED: Final = 65_536


def _sdk_version() -> str | None:
    try:
        return importlib.metadata.version("opentelemetry-sdk")
    except Exception:  # an unusual installation: the version is optional
        return None


def _attributes_of(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a plain dict.  The SDK's mapping answers a missing name by
    raising KeyError inside ``Mapping.get`` (~1 us) and a span is read for some thirty names,
    most of them missing: its own dict is read where it has one (an ended span's attributes
    no longer change), else they are copied once."""
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    if isinstance(inner, dict):
        return inner
    attributes = span.attributes
    return dict(attributes) if attributes else {}


def _events(span: ReadableSpan) -> list[tuple[str, Any]]:
    return [(event.name, event.attributes or {}) for event in span.events]


#: What a step's fields are read from: the span, its attributes, its kind, whether content
#: is taken, and its GenAI log events.
_Source = tuple[ReadableSpan, dict[str, Any], int, bool, list[tuple[str, Any]] | None]


class SpanFields(dict[str, Any]):
    """The fields of a span's step, as a user would log them (``llm_call``, previews, ...),
    read from the span's attributes when the step is built: by the exporter, on its sender
    thread, as a logged event's.  Until then it holds the span's attributes and events.

    A dict, as the fields of a captured event are; the few reads that building a step
    makes fill it first.
    """

    __slots__ = ("description", "source")

    def __init__(
        self,
        span: ReadableSpan,
        attributes: dict[str, Any],
        kind: int,
        content: bool,
        logged: list[tuple[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.description = describe(attributes, kind, span.name)
        self.source: _Source | None = (span, attributes, kind, content, logged)

    def _fill(self) -> None:
        source, self.source = self.source, None
        if source is None:
            return
        span, attributes, kind, content, logged = source
        if logged:
            attributes = with_logged(attributes, logged)
        start, end = span.start_time or 0, span.end_time or 0
        duration_ms = max(0, (end - start) // 1_000_000)
        if kind == LLM:
            self.update(llm_fields(attributes, _events(span), duration_ms, content))
        else:
            self.update(tool_fields(attributes, span.name, duration_ms, content))
        context = span.context
        if context is not None:
            self["otel.trace_id"] = f"{context.trace_id:032x}"
            self["otel.span_id"] = f"{context.span_id:016x}"

    def items(self) -> Any:
        self._fill()
        return super().items()

    def keys(self) -> Any:
        self._fill()
        return super().keys()

    def values(self) -> Any:
        source = self.source
        if source is not None:
            # What it holds until built (see fields.held_by_events): the attributes' text.
            return source[1].values()
        return super().values()

    def get(self, key: str, default: Any = None) -> Any:
        self._fill()
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self._fill()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._fill()
        return super().__contains__(key)

    def __iter__(self) -> Any:
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def __reduce__(self) -> Any:
        self._fill()
        return (dict, (dict(super().items()),))


class _OpenTrace:
    """The steps of one OpenTelemetry trace outside any task, waiting for its root span."""

    __slots__ = ("bytes", "opened", "steps")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.bytes = 0
        #: ``(start time in ns, event, error)``
        self.steps: list[tuple[int, RawEvent, ErrorInfo | None]] = []


#: The processors alive, for the fork hook below.
_processors: Final[weakref.WeakSet[InfiniumSpanProcessor]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The open traces are the parent's, whose root spans end there; a lock held by another
    # thread at fork() would stay held forever here.
    for processor in list(_processors):
        processor._lock = threading.Lock()
        processor._open.clear()
        processor._open_bytes = 0
        processor._started.clear()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


class InfiniumSpanProcessor(SpanProcessor):
    """An OpenTelemetry span processor that turns GenAI spans into Infinium steps.

    Add it to any SDK ``TracerProvider`` next to the processors you already
    have (``provider.add_span_processor(InfiniumSpanProcessor())``), or let
    :func:`~infinium_logging.otel.instrument` do it.  An LLM span (chat, text
    completion, generate_content, embeddings; OpenInference LLM or EMBEDDING)
    becomes a step with an ``llm_call``; a tool span (``execute_tool``,
    OpenInference TOOL) a step with a ``tool_call``; other spans only name and
    time the trace their root ends.

    ``exporter``: where traces go (anything with ``submit(task) -> bool``); by
    default the process-wide default exporter (a task's steps go where the task
    goes).  ``capture_content``: whether to take the input and output previews
    that the instrumentation captured (it captures none unless told to; see
    docs/otel.md); nothing is ever taken that the instrumentation did not
    capture.  ``max_open_traces``, ``max_open_bytes`` and ``max_trace_age``
    (seconds) bound the traces outside any task that wait for their root span.
    """

    def __init__(
        self,
        exporter: TaskSink | None = None,
        *,
        capture_content: bool = True,
        max_open_traces: int = 1_000,
        max_open_bytes: int = 16 * 1024 * 1024,
        max_trace_age: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if exporter is not None and not callable(getattr(exporter, "submit", None)):
            raise TypeError("exporter must have a submit(task) method")
        for name, value in (
            ("max_open_traces", max_open_traces),
            ("max_open_bytes", max_open_bytes),
            ("max_trace_age", max_trace_age),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self._sink = exporter
        self._options: Options | None = None
        if exporter is not None:
            self._options = options_for(exporter, {})
        else:
            default_options()  # fail here, where it is configured, if the environment is bad
        self.capture_content = capture_content
        self.max_open_traces = int(max_open_traces)
        self.max_open_bytes = int(max_open_bytes)
        self.max_trace_age = float(max_trace_age)
        self._clock = clock
        self._version = _sdk_version()
        self._recorder = Recorder(exporter, Options(), "opentelemetry", self._version)
        #: span id -> the task that was active when it started.
        self._started: dict[int, _TaskState] = {}
        #: trace id -> its steps, oldest first.
        self._open: collections.OrderedDict[int, _OpenTrace] = collections.OrderedDict()
        self._open_bytes = 0
        self._lock = threading.Lock()
        self.dropped: dict[str, int] = dict.fromkeys(OTEL_DROP_REASONS, 0)
        #: Add it to an SDK ``LoggerProvider`` to read the GenAI log events of instrumentations
        #: that record tool calls and content as log events (instrument() does).
        self.log_processor = GenAIEvents()
        _processors.add(self)

    def __repr__(self) -> str:
        where = "default exporter" if self._sink is None else type(self._sink).__name__
        return f"<InfiniumSpanProcessor -> {where}, {len(self._open)} open traces>"

    @property
    def open_traces(self) -> int:
        """Traces outside any task waiting for their root span to end."""
        return len(self._open)

    # --- SpanProcessor ----------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Remember the task active where ``span`` starts (when one is)."""
        if not open_tasks:
            return
        try:
            state = active_state()
            if state is not None:
                started = self._started
                if len(started) >= _MAX_STARTED:
                    started.clear()  # spans that never end: their steps go to their trace
                started[span.context.span_id] = state
        except Exception as error:  # never into the code that starts the span
            _default.warn_once("otel-start", "infinium_logging.otel: on_start failed: %r", error)

    def on_end(self, span: ReadableSpan) -> None:
        """Record a GenAI span's step; send a trace whose root span ended."""
        try:
            self._end(span)
        except Exception as error:  # never into the code that ends the span
            _default.warn_once("otel-end", "infinium_logging.otel: on_end failed: %r", error)

    def shutdown(self) -> None:
        """Count the steps of traces whose root span never ended as dropped."""
        with self._lock:
            lost = sum(len(entry.steps) for entry in self._open.values())
            self._open.clear()
            self._open_bytes = 0
            self._started.clear()
        if lost:
            self._count("shutdown", lost)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the exporter the traces go to (traces still waiting for their root stay)."""
        sink = self._sink if self._sink is not None else _default.get_default_exporter()
        flush = getattr(sink, "flush", None)
        if not callable(flush):
            return True
        try:
            return bool(flush(timeout=timeout_millis / 1000.0))
        except Exception:  # a sink of the caller's own may flush differently
            return False

    # --- steps ----------------------------------------------------------------------------------

    def _end(self, span: ReadableSpan) -> None:
        context = span.context
        state = self._started.pop(context.span_id, None) if self._started else None
        attributes = _attributes_of(span)
        kind = kind_of(attributes)
        if kind and not in_export():
            options = self._options or default_options()
            if not options.disabled or _default.capturing():
                event, error = self._event(span, attributes, kind)
                recorder = self._recorder
                if recorder.options is not options:
                    recorder = self._recorder = Recorder(
                        self._sink, options, "opentelemetry", self._version
                    )
                if state is None or not state.record(event, error, recorder, None):
                    self._wait(context.trace_id, span.start_time or 0, event, error)
        if self._open:
            parent = span.parent
            if parent is None or parent.is_remote:
                with self._lock:
                    entry = self._open.pop(context.trace_id, None)
                    if entry is not None:
                        self._open_bytes -= entry.bytes
                if entry is not None:
                    self._send(span, entry)

    def _event(
        self, span: ReadableSpan, attributes: dict[str, Any], kind: int
    ) -> tuple[RawEvent, ErrorInfo | None]:
        """The span as an event of the task it joins (its fields read when it is built)."""
        error: ErrorInfo | None = None
        status = span.status
        if status.status_code is StatusCode.ERROR:
            error = error_of(attributes, status.description, _events(span))
        logged = self.log_processor.take(span.context.span_id) if span.context else None
        fields = SpanFields(span, attributes, kind, self.capture_content, logged)
        return (FROM_EVENT, 40 if error else 20, fields, "", error, fields.description), error

    # --- traces outside any task ----------------------------------------------------------------

    def _wait(self, trace_id: int, start: int, event: RawEvent, error: ErrorInfo | None) -> None:
        # The attributes' text until the step is built (previews are cut to 500 then).
        weight = _STEP_BYTES + held_text(event[2].values())
        dropped: list[tuple[str, int]] = []
        now = self._clock()
        with self._lock:
            opened = self._open
            while opened:  # oldest first: those past their age
                oldest = next(iter(opened.values()))
                if now - oldest.opened <= self.max_trace_age:
                    break
                self._evict(dropped, "open_age")
            entry = opened.get(trace_id)
            if entry is None:
                if len(opened) >= self.max_open_traces:
                    self._evict(dropped, "open_traces")
                entry = opened[trace_id] = _OpenTrace(now)
            limit = self.max_open_bytes
            while self._open_bytes + weight > limit and next(iter(opened)) != trace_id:
                self._evict(dropped, "open_bytes")
            if self._open_bytes + weight > limit:
                dropped.append(("open_bytes", 1))  # this trace alone is over the bound
            else:
                entry.steps.append((start, event, error))
                entry.bytes += weight
                self._open_bytes += weight
        for reason, count in dropped:
            self._count(reason, count)

    def _evict(self, dropped: list[tuple[str, int]], reason: str) -> None:
        """Drop the oldest open trace (the caller holds the lock)."""
        _, entry = self._open.popitem(last=False)
        self._open_bytes -= entry.bytes
        dropped.append((reason, len(entry.steps)))

    def _count(self, reason: str, steps: int) -> None:
        with self._lock:
            self.dropped[reason] += steps
        _default.warn_once(
            f"otel-drop-{reason}",
            "infinium_logging.otel: steps of traces outside any task dropped (%s): %d so far",
            reason,
            self.dropped[reason],
        )

    def _send(self, root: ReadableSpan, entry: _OpenTrace) -> None:
        """One Infinium trace of an OpenTelemetry trace whose root span ended: named and timed
        by the root, its steps in start order, the root's error among its errors.

        Built as a task's trace is (the same steps, llm_usage and limits), by a task that
        runs in no context: it is no child of a task active where the root ends, and its
        start and end are the root's, so that the trace reads its times from them."""
        if not entry.steps:
            return
        fields: dict[str, Any] = {"name": root.name or "trace"}
        attributes = _attributes_of(root)
        if root.status.status_code is StatusCode.ERROR and not kind_of(attributes):
            error = error_of(attributes, root.status.description, _events(root))
            fields["errors"] = [error.detail]
        state = _TaskState(fields, self._sink, None, None)
        start, end = root.start_time or 0, root.end_time or 0
        state.start_wall = start / 1e9
        for _, event, error_info in sorted(entry.steps, key=lambda step: step[0]):
            state.record(event, error_info, self._recorder, None)
        state.finish(None, end_mono=state.start_mono + max(0, end - start) / 1e9)
