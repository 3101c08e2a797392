"""Ship what your AI agents do to Infinium just by logging.

The flow, one module per stage::

    handler.py / processor.py   log events in (stdlib logging / structlog)
    mapping.py / tasks.py       events -> TaskData traces (task() aggregation); _default.py
                                the process-wide default exporter (configure())
    model.py / convert.py       the trace types, their wire encoding, validation and fitting
    exporter.py                 bounded buffer and background workers
    throttle.py / retry.py      token bucket, backoff and Retry-After
    transport.py                one pooled urllib3 client
    spool.py                    the durable write-ahead spool (INFINIUM_SPOOL_DIR)
    redact.py / sampling.py     secrets (and PII) out of every trace; the head sampling rate
    settings.py / errors.py     configuration from INFINIUM_* and the exception hierarchy
    collector.py / cli.py       the local collector (infinium-logging serve) and the command line
    testing.py                  pytest fixture and capture_tasks() for users' own tests
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._capture import capture_tasks
from ._default import TaskSink, configure, get_default_exporter
from ._logsetup import setup_logging
from ._version import __version__
from .aio import AsyncClient
from .collector import LocalCollector, ReceivedTrace
from .convert import Problem, decode_task, fit_task, json_safe, to_task
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
from .exporter import (
    DROP_REASONS,
    Exporter,
    ExporterStats,
    ReplayReport,
    in_export,
    replay_spool,
)
from .handler import InfiniumHandler
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
    encode_task,
    utc_now_iso,
)
from .official import create_task_data
from .redact import Redactor, set_redaction_hook
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
    "DROP_REASONS",
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
    "LlmCall",
    "LlmUsage",
    "LocalCollector",
    "Marketing",
    "NetworkError",
    "NotFoundError",
    "Problem",
    "Project",
    "PromptContent",
    "PromptStudio",
    "PromptUse",
    "RateLimitError",
    "ReceivedTrace",
    "Redactor",
    "ReplayReport",
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
    "decode_task",
    "encode_task",
    "fit_task",
    "get_default_exporter",
    "in_export",
    "json_safe",
    "replay_spool",
    "set_redaction_hook",
    "setup_logging",
    "task",
    "to_task",
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
