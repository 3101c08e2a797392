"""Ship what your AI agents do to Infinium just by logging.

The flow, one module per stage::

    handler.py / processor.py   log events in (stdlib logging / structlog)
    mapping.py / tasks.py       events -> TaskData traces (task() aggregation)
    model.py / convert.py       the trace types, their wire encoding, validation and fitting
    exporter.py                 bounded buffer and background workers
    throttle.py / retry.py      token bucket, backoff and Retry-After
    transport.py                one pooled urllib3 client
    settings.py / errors.py     configuration from INFINIUM_* and the exception hierarchy
"""

from __future__ import annotations

from ._logsetup import setup_logging
from ._version import __version__
from .convert import Problem, decode_task, fit_task, json_safe, to_task
from .errors import (
    AuthenticationError,
    BatchError,
    ConfigurationError,
    InfiniumError,
    InfiniumTimeoutError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
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
    Research,
    Sales,
    Support,
    TaskData,
    TimeTracking,
    ToolCall,
    encode_task,
    utc_now_iso,
)
from .settings import Settings

__all__ = [
    "ApiResponse",
    "AuthenticationError",
    "BatchError",
    "BatchResult",
    "ConfigurationError",
    "Content",
    "Customer",
    "Development",
    "EnvironmentContext",
    "ErrorDetail",
    "ExecutionStep",
    "Executive",
    "ExpectedOutcome",
    "General",
    "InfiniumError",
    "InfiniumTimeoutError",
    "LlmCall",
    "LlmUsage",
    "Marketing",
    "NetworkError",
    "NotFoundError",
    "Problem",
    "Project",
    "PromptContent",
    "RateLimitError",
    "Research",
    "Sales",
    "ServerError",
    "Settings",
    "Support",
    "TaskData",
    "TimeTracking",
    "ToolCall",
    "ValidationError",
    "__version__",
    "decode_task",
    "encode_task",
    "fit_task",
    "json_safe",
    "setup_logging",
    "to_task",
    "utc_now_iso",
]


def __dir__() -> list[str]:
    return list(__all__)
