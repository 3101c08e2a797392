"""Every exception the library raises, in one hierarchy named as the official client names them
(and the one warning category it issues)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "BatchError",
    "ConfigurationError",
    "ConfigurationWarning",
    "InfiniumError",
    "InfiniumTimeoutError",
    "NetworkError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "ValidationError",
]


class InfiniumError(Exception):
    """Base class of every error raised by ``infinium_logging``.

    ``status_code`` is the HTTP status when the error came from a response, and
    ``details`` carries whatever else is known (for example the response body).
    """

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.details: dict[str, Any] = details if details is not None else {}


class ConfigurationError(InfiniumError):
    """A setting is missing or invalid.

    ``variable`` names the environment variable (or argument) at fault, so that
    the message can say exactly what to fix.
    """

    def __init__(
        self, message: str, variable: str | None = None, *, config_key: str | None = None
    ) -> None:
        super().__init__(message)
        self.variable = variable if variable is not None else config_key

    @property
    def config_key(self) -> str | None:
        """The official client's name for :attr:`variable`."""
        return self.variable


class ConfigurationWarning(UserWarning):
    """Something in the configuration is ignored (an ``INFINIUM_*`` variable that is no
    setting: a misspelt name).  A Python warning, shown once by default, because the library's
    own log lines go nowhere until logging is configured; filter it with the ``warnings``
    module like any other."""


class ValidationError(InfiniumError):
    """A trace (or part of one) does not match the documented types and limits.

    ``path`` is where the problem is, e.g. ``steps[2].llm_call.prompt_tokens``.
    """

    def __init__(self, message: str, path: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message)
        self.path = path if path is not None else field

    @property
    def field(self) -> str | None:
        """The official client's name for :attr:`path`."""
        return self.path


class AuthenticationError(InfiniumError):
    """The platform refused the credentials (HTTP 401 or 403)."""

    def __init__(
        self,
        message: str = "Authentication failed",
        status_code: int | None = 401,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status_code, details)


class RateLimitError(InfiniumError):
    """The platform answered 429; ``retry_after`` is its ``Retry-After`` in seconds."""

    def __init__(
        self,
        message: str = "Rate limit exceeded",
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, 429, details)
        self.retry_after = retry_after


class NetworkError(InfiniumError):
    """The request did not get an HTTP answer (refused, reset, DNS, TLS...)."""

    def __init__(
        self,
        message: str,
        original_error: BaseException | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, None, details)
        self.original_error = original_error


class InfiniumTimeoutError(NetworkError):
    """The request timed out (connect or read)."""

    def __init__(
        self,
        message: str = "Request timed out",
        timeout_duration: float | None = None,
        original_error: BaseException | None = None,
    ) -> None:
        super().__init__(message, original_error)
        self.timeout_duration = timeout_duration


class ServerError(InfiniumError):
    """The platform answered with a 5xx status."""

    def __init__(
        self,
        message: str = "Server error",
        status_code: int | None = 500,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status_code, details)


class NotFoundError(InfiniumError):
    """The platform answered 404 (unknown agent, trace or prompt).

    ``resource_type`` (``"trace"``, ``"prompt"``) and ``resource_id`` say what was not found,
    when the request was for one thing.
    """

    def __init__(
        self,
        message: str = "Resource not found",
        resource_type: str | None = None,
        resource_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, 404, details)
        self.resource_type = resource_type
        self.resource_id = resource_id


class BatchError(InfiniumError):
    """Nothing in a batch could be sent (for example the credentials were refused), or,
    with ``fail_fast=True``, one trace failed and the rest were not sent.

    A batch in which only some traces failed does not raise: read its
    :class:`~infinium_logging.model.BatchResult` instead.  The official client's
    attribute names (``successful_count``, ``failed_count``) work too.
    """

    def __init__(
        self,
        message: str,
        total_tasks: int = 0,
        failed_tasks: int = 0,
        errors: list[str] | None = None,
        *,
        successful_count: int | None = None,
        failed_count: int | None = None,
    ) -> None:
        super().__init__(message)
        if failed_count is not None:
            failed_tasks = failed_count
        if successful_count is None:
            successful_count = max(total_tasks - failed_tasks, 0)
        elif not total_tasks:
            total_tasks = successful_count + failed_tasks
        self.total_tasks = total_tasks
        self.failed_tasks = failed_tasks
        #: The traces of the batch that were sent (with ``fail_fast``, those not sent after
        #: the stop are neither sent nor failed, as the official client counts them).
        self.successful_count = successful_count
        self.errors: list[str] = errors if errors is not None else []

    @property
    def failed_count(self) -> int:
        """The official client's name for :attr:`failed_tasks`."""
        return self.failed_tasks
