"""Infino settings: the endpoint, keys and datasets from ``INFINIUM_INFINO_*`` and arguments."""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .settings import (
    ENV_PREFIX,
    Settings,
    _check_header_text,
    _check_url,
    _is_loopback,
    _without_password,
    check_secret,
    parse_bool,
)

__all__ = [
    "DEFAULT_DATASET",
    "INFINO_VARIABLES",
    "InfinoSettings",
    "core_settings",
    "infino_configured",
]

DEFAULT_DATASET: Final = "infinium-traces"
#: Dataset names Infino accepts.
_DATASET: Final = re.compile(r"[a-z0-9][a-z0-9\-.]*")
_MIB: Final = 1024 * 1024

#: Setting -> the environment variable it is read from.
INFINO_VARIABLES: Final = {
    "endpoint": f"{ENV_PREFIX}INFINO_ENDPOINT",
    "access_key": f"{ENV_PREFIX}INFINO_ACCESS_KEY",
    "secret_key": f"{ENV_PREFIX}INFINO_SECRET_KEY",
    "dataset": f"{ENV_PREFIX}INFINO_DATASET",
    "steps_dataset": f"{ENV_PREFIX}INFINO_STEPS_DATASET",
    # Shared with the Infinium exporter: one spool directory, one switch for plain http.
    "spool_dir": f"{ENV_PREFIX}SPOOL_DIR",
    "allow_insecure_http": f"{ENV_PREFIX}ALLOW_INSECURE_HTTP",
    "agent": f"{ENV_PREFIX}AGENT_ID",
    "sample_rate": f"{ENV_PREFIX}SAMPLE_RATE",
}


def infino_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``INFINIUM_INFINO_ENDPOINT`` is set (so traces go to Infino)."""
    env = os.environ if environ is None else environ
    return bool(env.get(INFINO_VARIABLES["endpoint"], "").strip())


@dataclasses.dataclass(frozen=True, repr=False)
class InfinoSettings:
    """Where and how traces go to Infino, validated once.  The secret key never appears in
    ``repr()``, in an error message or in a log line."""

    #: Infino's API root, e.g. ``https://api.infino.ws`` (``INFINIUM_INFINO_ENDPOINT``).
    endpoint: str
    #: ``INFINIUM_INFINO_ACCESS_KEY``.
    access_key: str
    #: ``INFINIUM_INFINO_SECRET_KEY``: signs requests, is never sent.
    secret_key: str
    #: One row per trace (``INFINIUM_INFINO_DATASET``).
    dataset: str = DEFAULT_DATASET
    #: One row per step, when set (``INFINIUM_INFINO_STEPS_DATASET``).
    steps_dataset: str | None = None
    #: Written into every trace row as ``agent`` (default: ``INFINIUM_AGENT_ID``).
    agent: str | None = None
    #: Requests per second (Infino allows 10) and the burst after a quiet spell.
    requests_per_second: float = 10.0
    burst_size: int = 10
    #: A batch is sent once it holds this many records, or this many bytes...
    max_batch_records: int = 2000
    max_batch_bytes: int = 3 * _MIB + _MIB // 2
    #: ...or once its oldest trace waited this long (seconds).
    linger: float = 1.0
    #: Traces held in memory waiting for a batch; past it ``submit`` refuses (counted).
    max_queue_size: int = 100_000
    #: Connect and read timeout of one request, in seconds.
    timeout: float = 30.0
    #: Retries of a failed request, backoff bounds and the time budget of one batch.
    max_retries: int = 5
    retry_backoff_base: float = 0.5
    retry_backoff_max: float = 30.0
    max_elapsed: float = 120.0
    #: Durable spool directory (``INFINIUM_SPOOL_DIR``); ``None`` keeps traces in memory only.
    spool_dir: str | None = None
    verify_ssl: bool = True
    allow_insecure_http: bool = False
    #: How long ``shutdown()`` may take, in seconds.
    shutdown_timeout: float = 5.0
    #: Share of traces kept, 0 to 1 (``INFINIUM_SAMPLE_RATE``, shared); traces with errors are
    #: always kept.
    sample_rate: float = 1.0

    def __post_init__(self) -> None:
        for name in ("endpoint", "access_key", "secret_key", "dataset"):
            value = getattr(self, name)
            if not isinstance(value, str):
                self._fail(name, value, "expected a string")
            object.__setattr__(self, name, value.strip())
            if not getattr(self, name):
                raise ConfigurationError(
                    f"Missing {name}: set {INFINO_VARIABLES[name]} or pass {name}=...",
                    variable=INFINO_VARIABLES[name],
                )
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))
        if (problem := _check_url(self.endpoint)) is not None:
            self._fail("endpoint", self.endpoint, problem.replace("agent secret", "secret key"))
        if (problem := _check_header_text(self.access_key)) is not None:
            self._fail("access_key", self.access_key, problem)
        if (problem := check_secret(self.secret_key)) is not None:
            self._fail("secret_key", "", problem)
        for name in ("dataset", "steps_dataset"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and _DATASET.fullmatch(value)):
                self._fail(name, value, "expected lowercase letters, digits, '-' and '.'")
        for name, low in (
            ("requests_per_second", 0.001),
            ("burst_size", 1),
            ("max_batch_records", 1),
            ("max_batch_bytes", 1024),
            ("linger", 0.0),
            ("max_queue_size", 1),
            ("timeout", 0.001),
            ("max_retries", 0),
            ("retry_backoff_base", 0.001),
            ("retry_backoff_max", 0.001),
            ("max_elapsed", 0.0),
            ("shutdown_timeout", 0.0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
                self._fail(name, value, f"expected a number >= {low}")
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            self._fail("sample_rate", rate, "expected a number from 0 to 1")
        parts = urlsplit(self.endpoint)
        if (
            parts.scheme == "http"
            and not self.allow_insecure_http
            and not _is_loopback(parts.hostname or "")
        ):
            self._fail(
                "endpoint",
                self.endpoint,
                "plain http to a host that is not loopback; use https, or set "
                f"{INFINO_VARIABLES['allow_insecure_http']}=true",
            )

    def _fail(self, name: str, value: object, problem: str) -> None:
        shown = (
            "a value that is not shown (it is secret)"
            if name == "secret_key"
            else repr(_without_password(value) if isinstance(value, str) else value)
        )
        where = INFINO_VARIABLES.get(name, name)
        raise ConfigurationError(f"Invalid {where}={shown}: {problem}", variable=where)

    def __repr__(self) -> str:
        shown = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "secret_key":
                shown.append(f"secret_key={'<set>' if value else '<unset>'}")
            else:
                shown.append(f"{field.name}={value!r}")
        return f"InfinoSettings({', '.join(shown)})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("InfinoSettings hold a secret and cannot be pickled")

    @property
    def host(self) -> str:
        """The ``Host`` header the HTTP client sends (and the signature covers)."""
        parts = urlsplit(self.endpoint)
        default = 443 if parts.scheme == "https" else 80
        return parts.netloc.rsplit(":", 1)[0] if parts.port == default else parts.netloc

    @property
    def datasets(self) -> tuple[str, ...]:
        """Every dataset traces are written to."""
        return (self.dataset,) + ((self.steps_dataset,) if self.steps_dataset else ())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> InfinoSettings:
        """Build settings from ``INFINIUM_INFINO_*`` (and the shared ``INFINIUM_SPOOL_DIR``,
        ``INFINIUM_ALLOW_INSECURE_HTTP``, ``INFINIUM_AGENT_ID``, ``INFINIUM_SAMPLE_RATE``); an
        argument that is not ``None`` wins over its variable.  A bad or missing value raises
        :class:`~infinium_logging.errors.ConfigurationError` naming the variable."""
        env = os.environ if environ is None else environ
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown Infino setting(s) {', '.join(unknown)}")
        values = {name: value for name, value in overrides.items() if value is not None}
        for name, variable in INFINO_VARIABLES.items():
            text = env.get(variable, "").strip()
            if name in values or not text:
                continue
            if name == "allow_insecure_http":
                try:
                    values[name] = parse_bool(text)
                except ValueError as exc:
                    raise ConfigurationError(
                        f"Invalid {variable}={text!r}: {exc}", variable=variable
                    ) from None
            elif name == "sample_rate":
                try:
                    values[name] = float(text)
                except ValueError:
                    raise ConfigurationError(
                        f"Invalid {variable}={text!r}: expected a number from 0 to 1",
                        variable=variable,
                    ) from None
            else:
                values[name] = text
        for name in ("endpoint", "access_key", "secret_key"):
            values.setdefault(name, "")
        return cls(**values)


def core_settings(settings: InfinoSettings) -> Settings:
    """The delivery core's settings for ``settings``: one sender (batches fill best behind
    one), Infino's throttle, retries, bounds and spool; the secret key is what is kept out of
    every log line.  The spool's directory is named by a UUID made from the endpoint and the
    dataset (the core names spools by agent id), so every sink of one dataset shares it.  No
    exit spill, no signal handlers: what it leaves at exit stays in its spool, if any."""
    return Settings(
        agent_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{settings.endpoint}/{settings.dataset}")),
        agent_secret=settings.secret_key,
        base_url=settings.endpoint,
        allow_insecure_http=settings.allow_insecure_http,
        verify_ssl=settings.verify_ssl,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        retry_backoff_base=settings.retry_backoff_base,
        retry_backoff_max=settings.retry_backoff_max,
        max_elapsed=settings.max_elapsed,
        requests_per_second=settings.requests_per_second,
        burst_size=settings.burst_size,
        max_queue_size=settings.max_queue_size,
        # Bounded by count alone, as Infino's settings have no byte bound.
        max_queue_bytes=2**40,
        workers=1,
        shutdown_timeout=settings.shutdown_timeout,
        sample_rate=settings.sample_rate,
        spool_dir=settings.spool_dir,
        handle_signals=False,
        exit_spool=False,
    )
