"""Ship what your AI agents do to Infinium just by logging.

The flow, one module per stage (docs/architecture.md draws it)::

    handler.py / processor.py   log events in (stdlib logging / structlog)
    events.py                   a tagged record or event dict captured (TaggedTrace)
    payload.py / steps.py       built: a tagged event's trace; an event in a task's step
    usage.py                    LLM calls added up into llm_usage
    fields.py / environment.py  an event's fields and safe values; the trace's environment
    timestamps.py               levels and times; errorinfo.py: exceptions and tracebacks
    tasks.py                    task(): the public API; task_state.py: a running task's state;
                                task_trace.py: its trace built; bridging.py: bridged dedup
    _default.py                 the process-wide default exporter (configure()), routing
    model.py                    the trace types and their wire encoding
    convert.py                  reading outside data as traces (strict or lenient)
    sanitise.py / fitting.py    JSON-safe copies and truncation; shrinking to the size limit
    guard.py                    the recursion guard (in_export)
    queued.py                   what the delivery core queues (PendingTrace, Item)
    exporter.py                 the Exporter: the façade over the layers below
    admission.py                the inbox and the buffer's bounds (count, bytes, estimates)
    ledger.py                   every count, settling once, flush targets, ExporterStats, drops
    dispatch.py                 handing queued traces (one, or a batch) to idle senders, pacing
    workers.py                  sender threads started lazily, their one run loop, pacing
    sending.py                  one trace on a sender: build, redact, sample, deliver, settle
    batching.py                 a batch on a sender: each destination's records, per-record results
    lanes.py                    several endpoints: a lane each (queue, senders, delivery), fed
                                the traces the senders above built once
    writeahead.py               the exporter's spool: write-ahead, keeping, the backlog
    closing.py                  the end of a shutdown: the wait, the tally, the exit spill
    results.py                  what on_result is told
    durability.py               spool records, the backlog's schedule, replay_spool
    delivery.py                 one deliver(): throttle, timeout, retries, the 429 rule
    destination.py              the Destination seam; destination_infinium.py: the Infinium one
    client.py                   send, send_batch, get_prompt, get_interpreted_result
    infino*.py / sigv4.py       Infino: its destinations, and the sink (an Exporter of them alone)
    lifecycle.py                one registry for exit, multiprocessing finalizers and fork
    throttle.py / retry.py      token bucket, backoff and Retry-After
    transport.py                one pooled urllib3 client
    spool.py                    the durable write-ahead spool (INFINIUM_SPOOL_DIR)
    redact.py / sampling.py     secrets (and PII) out of every trace; the head sampling rate
                                (_redact_patterns: what is looked for; _redact_scan: one pass,
                                with the ``fast`` extra)
    settings.py / errors.py     configuration from INFINIUM_* and the exception hierarchy
    collector.py / cli.py       the local collector (infinium-logging serve) and the command line
                                (_cli_serve, _cli_check, _cli_spool: its commands)
    testing.py                  pytest fixture and capture_tasks() for users' own tests
    otel/                       OpenTelemetry GenAI spans -> steps (extra ``otel``; imported
                                only when used)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._capture import capture_tasks
from ._default import TaskSink, configure, get_default_exporter
from ._ignore import DEFAULT_IGNORED_LOGGERS
from ._logsetup import setup_logging
from ._version import __version__
from .aio import AsyncClient
from .errors import (
    AuthenticationError,
    BatchError,
    ConfigurationError,
    ConfigurationWarning,
    InfiniumError,
    InfiniumTimeoutError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from .exporter import Exporter
from .handler import InfiniumHandler
from .infino import InfinoSink, InfinoStats
from .infino_settings import InfinoSettings
from .ledger import ExporterStats
from .model import (
    ApiResponse,
    BatchResult,
    Content,
    Customer,
    Development,
    EnvironmentContext,
    ErrorDetail,
    ExecutionStep,
    Executive,
    ExpectedOutcome,
    General,
    LlmCall,
    LlmUsage,
    Marketing,
    Project,
    PromptContent,
    PromptStudio,
    PromptUse,
    Research,
    Sales,
    Support,
    TaskData,
    TimeTracking,
    ToolCall,
    utc_now_iso,
)
from .official import create_task_data
from .redact import Redactor, set_redaction_hook
from .serverless import flush_after, flushing
from .settings import Settings
from .tasks import Task, TaskHandle, current_task, task

if TYPE_CHECKING:
    from .processor import InfiniumProcessor

__all__ = [
    "ApiResponse",
    "AsyncClient",
    "AuthenticationError",
    "BatchError",
    "BatchResult",
    "ConfigurationError",
    "ConfigurationWarning",
    "Content",
    "Customer",
    "DEFAULT_IGNORED_LOGGERS",
    "Development",
    "EnvironmentContext",
    "ErrorDetail",
    "ExecutionStep",
    "Executive",
    "ExpectedOutcome",
    "Exporter",
    "ExporterStats",
    "General",
    "InfiniumError",
    "InfiniumHandler",
    "InfiniumProcessor",
    "InfiniumTimeoutError",
    "InfinoSettings",
    "InfinoSink",
    "InfinoStats",
    "LlmCall",
    "LlmUsage",
    "Marketing",
    "NetworkError",
    "NotFoundError",
    "Project",
    "PromptContent",
    "PromptStudio",
    "PromptUse",
    "RateLimitError",
    "Redactor",
    "Research",
    "Sales",
    "ServerError",
    "Settings",
    "Support",
    "Task",
    "TaskData",
    "TaskHandle",
    "TaskSink",
    "TimeTracking",
    "ToolCall",
    "ValidationError",
    "__version__",
    "capture_tasks",
    "configure",
    "create_task_data",
    "current_task",
    "flush_after",
    "flushing",
    "get_default_exporter",
    "set_redaction_hook",
    "setup_logging",
    "task",
    "utc_now_iso",
]


def __getattr__(name: str) -> Any:
    # The structlog processor is imported on first use, so that the stdlib handler works
    # (and imports quickly) without structlog.
    if name == "InfiniumProcessor":
        from .processor import InfiniumProcessor  # noqa: PLC0415

        return InfiniumProcessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
