"""Settings: one typed, immutable table of every option, from arguments and ``INFINIUM_*``.

Over the module budget as one thing: every option's field, parser and bound sit in one table
so that a variable, its default and its error message cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import math
import os
import re
import types
import uuid
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from ._logsetup import setup_logging
from ._version import __version__
from .errors import ConfigurationError, ConfigurationWarning
from .redact import parse_redact

_log = logging.getLogger("infinium_logging.settings")

__all__ = ["DEFAULT_BASE_URL", "ENV_PREFIX", "Settings", "parse_bool", "parse_tags"]

DEFAULT_BASE_URL: Final = "https://platform.i42m.ai/api/v1"
ENV_PREFIX: Final = "INFINIUM_"

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MIB: Final = 1024 * 1024
_SECRET_FIELDS: Final = frozenset({"agent_secret"})

T = TypeVar("T")


def parse_bool(text: str) -> bool:
    """Parse ``true/false/1/0/yes/no/on/off`` in any case; anything else is a ``ValueError``."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("expected one of true/false, 1/0, yes/no, on/off")


def parse_tags(text: str) -> dict[str, str]:
    """Parse ``"team=search,env=prod"`` into ``{"team": "search", "env": "prod"}``."""
    tags: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected comma-separated key=value pairs, got the item {item!r}")
        tags[key.strip()] = value.strip()
    return tags


def _describe(name: str, value: object) -> str:
    """Show a bad value in an error message, unless it is a secret (or a URL's password)."""
    if name in _SECRET_FIELDS:
        return "a value that is not shown (it is secret)"
    if name == "base_url" and isinstance(value, str):
        return repr(_without_password(value))
    return repr(value)


def _without_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part, if any, masked."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    except ValueError:
        # Too broken for urlsplit (a bad [IPv6] literal, a port out of range): masked by
        # hand, everything between the user's name and the last "@" of the authority.
        scheme, sep, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        user, at, host = authority.rpartition("@")
        if not at or ":" not in user:
            return url
        return f"{scheme}{sep}{user.partition(':')[0]}:***@{host}{slash}{path}"


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How one setting is parsed from text and checked."""

    parse: Callable[[str], Any]
    check: Callable[[Any], str | None] | None = None


def _at_least(low: float, high: float | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "expected a number"
        if math.isnan(value) or value < low or (high is not None and value > high):  # NaN fails too
            return (
                f"expected a number from {low} to {high}"
                if high is not None
                else (f"expected a number >= {low}")
            )
        return None

    return check


def _positive(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "expected a number"
    if not value > 0 or value == float("inf"):
        return "expected a positive number"
    return None


def _is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "expected true or false"


def _is_str(value: Any) -> str | None:
    return None if isinstance(value, str) else "expected a string"


def _is_int(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def inner(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "expected a whole number"
        return check(value)

    return inner


def _check_log_level(value: Any) -> str | None:
    if not isinstance(value, str) or value.upper() not in _LOG_LEVELS:
        return "expected one of " + ", ".join(_LOG_LEVELS)
    return None


def _check_agent_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return "expected a string"
    if value == "":
        return None  # missing is reported separately, with the variable to set
    try:
        uuid.UUID(value)
    except ValueError:
        return "expected a UUID such as 4f1c2b9e-8d7a-4e61-9f3b-2a5c6d7e8f90"
    if len(value) != 36:
        return "expected a UUID in its usual 36-character form"
    return None


#: What an HTTP header value may hold here: printable ASCII.  http.client refuses a line
#: break (and its error message quotes the whole value: the secret, for x-agent-key) and
#: cannot send what Latin-1 cannot encode; a request that can never be made must be a
#: configuration error now, not a network error at every retry.
_HEADER_TEXT: Final = re.compile(r"[\x20-\x7e]*")


def _check_header_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return "expected a string"
    if not _HEADER_TEXT.fullmatch(value):
        return (
            "expected printable ASCII characters only (a line break, control or non-ASCII "
            "character cannot be sent in an HTTP header)"
        )
    return None


def check_secret(value: Any) -> str | None:
    """What is wrong with ``value`` as an agent secret (never the value), or None."""
    if (problem := _check_header_text(value)) is not None:
        return problem
    if value and len(value) < 8:
        return "expected at least 8 characters"
    return None


def _check_url(value: Any) -> str | None:
    if not isinstance(value, str):
        return "expected a URL string"
    if any(char.isspace() or not char.isprintable() for char in value):
        return "expected a URL without spaces or control characters"
    try:
        parts = urlsplit(value)
        port = parts.port  # reads it: a port that is not a number raises here
    except ValueError as exc:  # a broken [IPv6] literal, a port out of range
        return f"expected an http:// or https:// URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an http:// or https:// URL such as " + DEFAULT_BASE_URL
    if port == 0:
        return "expected a port from 1 to 65535"
    if "?" in value or "#" in value:
        return "expected a URL without query or fragment"
    try:
        parse_url(value)  # the transport's own parser: what it could not send to is refused
    except LocationParseError:
        return "expected an http:// or https:// URL (urllib3 cannot parse its host)"
    if parts.username is not None or parts.password is not None:
        # Never sent (the platform authenticates with x-agent-id / x-agent-key), and shown
        # in every repr and check: a password there would only leak.
        return "expected a URL without user:password@ (the agent secret is the credential)"
    return None


def _check_tags(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return "expected a mapping of strings to strings"
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            return "expected a mapping of strings to strings"
    return None


def _check_optional_str(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else "expected a path or None"


def _parse_int(text: str) -> int:
    return int(text.strip().replace("_", ""))


def _parse_float(text: str) -> float:
    return float(text.strip())


def _parse_str(text: str) -> str:
    return text.strip()


def _parse_bool_or_raise(text: str) -> bool:
    return parse_bool(text)


#: Text settings whose surrounding whitespace is dropped, from the environment or not: a
#: secret read from a file (``open(path).read()``) ends with a line break.
_STRIPPED: Final = ("agent_id", "agent_secret", "base_url")

_SPECS: Final[dict[str, _Spec]] = {
    "agent_id": _Spec(_parse_str, _check_agent_id),
    "agent_secret": _Spec(_parse_str, check_secret),
    "base_url": _Spec(_parse_str, _check_url),
    "timeout": _Spec(_parse_float, _at_least(0.001, 3600)),
    "max_retries": _Spec(_parse_int, _is_int(_at_least(0, 100))),
    "enable_rate_limiting": _Spec(_parse_bool_or_raise, _is_bool),
    "requests_per_second": _Spec(_parse_float, _positive),
    "burst_size": _Spec(_parse_int, _is_int(_at_least(1, 100_000))),
    "user_agent": _Spec(_parse_str, _check_header_text),
    "enable_logging": _Spec(_parse_bool_or_raise, _is_bool),
    "log_level": _Spec(_parse_str, _check_log_level),
    "verify_ssl": _Spec(_parse_bool_or_raise, _is_bool),
    "allow_insecure_http": _Spec(_parse_bool_or_raise, _is_bool),
    "disabled": _Spec(_parse_bool_or_raise, _is_bool),
    "tags": _Spec(parse_tags, _check_tags),
    "max_queue_size": _Spec(_parse_int, _is_int(_at_least(1, 10_000_000))),
    "max_queue_bytes": _Spec(_parse_int, _is_int(_at_least(1024, 2**40))),
    "workers": _Spec(_parse_int, _is_int(_at_least(1, 64))),
    "shutdown_timeout": _Spec(_parse_float, _at_least(0, 3600)),
    "retry_backoff_base": _Spec(_parse_float, _at_least(0.001, 3600)),
    "retry_backoff_max": _Spec(_parse_float, _at_least(0.001, 86_400)),
    "max_elapsed": _Spec(_parse_float, _at_least(0, 86_400)),
    "auth_backoff": _Spec(_parse_float, _at_least(0, 86_400)),
    "max_steps": _Spec(_parse_int, _is_int(_at_least(1, 100_000))),
    "spool_dir": _Spec(_parse_str, _check_optional_str),
    "spool_fsync": _Spec(_parse_bool_or_raise, _is_bool),
    "spool_max_bytes": _Spec(_parse_int, _is_int(_at_least(64 * 1024, 2**50))),
    "redact": _Spec(parse_redact, _is_str),
    "sample_rate": _Spec(_parse_float, _at_least(0, 1)),
    "required": _Spec(_parse_bool_or_raise, _is_bool),
    "handle_signals": _Spec(_parse_bool_or_raise, _is_bool),
    "exit_spool": _Spec(_parse_bool_or_raise, _is_bool),
}


@dataclasses.dataclass(frozen=True, repr=False)
class Settings:
    """Every option of the library, validated once, immutable afterwards.

    Build it with :meth:`from_env` to read ``INFINIUM_*`` variables, or directly
    with keyword arguments.  The secret never appears in ``repr()`` or in an
    error message.
    """

    #: The agent's UUID from the Infinium platform (``INFINIUM_AGENT_ID``).
    agent_id: str = ""
    #: The agent's secret key (``INFINIUM_AGENT_SECRET``).
    agent_secret: str = ""
    #: API root; traces go to ``{base_url}/agents/{agent_id}/trace``.
    base_url: str = DEFAULT_BASE_URL
    #: Connect timeout, and deadline for the whole answer, of one request attempt, in seconds.
    timeout: float = 30.0
    #: Retries of a retryable failure (connection, timeout, 408, 429, 5xx) per trace.
    max_retries: int = 3
    #: Client-side token bucket in front of every request.
    enable_rate_limiting: bool = True
    #: Token bucket refill rate.
    requests_per_second: float = 10.0
    #: Token bucket capacity: how many requests may leave at once after a quiet spell.
    burst_size: int = 20
    #: ``User-Agent`` header.
    user_agent: str = f"infinium-logging/{__version__}"
    #: Send the library's own log lines to stderr (see :func:`infinium_logging.setup_logging`).
    enable_logging: bool = False
    #: Level of the library's own log lines when ``enable_logging`` is on.
    log_level: str = "INFO"
    #: Verify the server's TLS certificate.
    verify_ssl: bool = True
    #: Allow plain ``http://`` to a host that is not loopback (credentials travel in clear).
    allow_insecure_http: bool = False
    #: Turn all export off: handler and processor do nothing.
    disabled: bool = False
    #: Added to ``environment.custom_tags`` of every trace the library builds.
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Bound of the in-memory queue, in traces.
    max_queue_size: int = 2048
    #: Bound of the in-memory queue, in encoded bytes.
    max_queue_bytes: int = 64 * _MIB
    #: Sender threads.
    workers: int = 4
    #: How long ``shutdown()`` (and interpreter exit) may take, in seconds.
    shutdown_timeout: float = 5.0
    #: First backoff of a retry, in seconds (full jitter: a uniform wait up to it).
    retry_backoff_base: float = 0.5
    #: Largest backoff of a retry, in seconds.
    retry_backoff_max: float = 30.0
    #: Longest time one trace may spend in retries, in seconds.
    max_elapsed: float = 120.0
    #: After a 401/403, how long to wait before the next attempt, in seconds.
    auth_backoff: float = 60.0
    #: Steps kept per trace built by ``task()``; the rest are counted.
    max_steps: int = 500
    #: Directory of the durable spool; ``None`` keeps traces in memory only.
    spool_dir: str | None = None
    #: ``fsync`` every spool write (survives power loss, costs a disk flush per trace).
    spool_fsync: bool = False
    #: Bound of the spool, in bytes; past it the oldest records are evicted.
    spool_max_bytes: int = 256 * _MIB
    #: What is redacted from every trace before it is spooled or sent (``INFINIUM_REDACT``):
    #: ``secrets``, ``secrets,pii`` or ``off`` (the agent secret is redacted even then).
    redact: str = "secrets"
    #: Share of traces kept, 0 to 1 (``INFINIUM_SAMPLE_RATE``); traces with errors are all kept.
    sample_rate: float = 1.0
    #: Missing credentials are an error (production) rather than export switched off with a
    #: warning (a developer's machine, CI).
    required: bool = False
    #: Deliver (or spool) what is buffered when SIGTERM would end the process: see signals.py.
    handle_signals: bool = True
    #: At exit, keep what the deadline or the throttle did not let through in a spool (the
    #: configured one, else a per-user cache directory) for the next start.
    exit_spool: bool = True

    def __post_init__(self) -> None:
        for name in _STRIPPED:
            value = getattr(self, name)
            if isinstance(value, str) and value != value.strip():
                object.__setattr__(self, name, value.strip())
        for name, spec in _SPECS.items():
            given = value = getattr(self, name)
            # Text where a number, boolean or tags are expected (an environment variable,
            # dictConfig from JSON or a template, an INI file) is parsed here, for all of them.
            if type(value) is str and spec.parse is not _parse_str:
                try:
                    value = spec.parse(value)
                except ValueError as exc:
                    raise ConfigurationError(
                        f"Invalid setting {name}={_describe(name, given)}: {_reason(exc, name)}",
                        variable=name,
                    ) from None
                object.__setattr__(self, name, value)
            if spec.check is not None and (problem := spec.check(value)) is not None:
                raise ConfigurationError(
                    f"Invalid setting {name}={_describe(name, given)}: {problem}", variable=name
                )
        object.__setattr__(self, "tags", types.MappingProxyType(dict(self.tags)))
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "log_level", self.log_level.upper())
        if self.retry_backoff_max < self.retry_backoff_base:
            raise ConfigurationError(
                f"Invalid setting retry_backoff_max={self.retry_backoff_max!r}: "
                f"expected at least retry_backoff_base ({self.retry_backoff_base!r})",
                variable="retry_backoff_max",
            )
        parts = urlsplit(self.base_url)
        if (
            parts.scheme == "http"
            and not self.allow_insecure_http
            and not _is_loopback(parts.hostname or "")
        ):
            raise ConfigurationError(
                f"Invalid setting base_url={self.base_url!r}: plain http sends the agent secret "
                "in clear; use https, a loopback host, or set INFINIUM_ALLOW_INSECURE_HTTP=true",
                variable="base_url",
            )
        if not self.disabled:
            for name in ("agent_id", "agent_secret"):
                if not getattr(self, name):
                    raise ConfigurationError(
                        f"Missing {name}: set {ENV_PREFIX}{name.upper()} in the environment "
                        f"or pass {name}=...",
                        variable=f"{ENV_PREFIX}{name.upper()}",
                    )

    def __repr__(self) -> str:
        shown = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _SECRET_FIELDS:
                shown.append(f"{field.name}={'<set>' if value else '<unset>'}")
            elif field.name == "tags":
                shown.append(f"tags={dict(value)!r}")
            else:
                shown.append(f"{field.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling would write the secret into whatever the pickle lands in.
        raise TypeError("Settings hold a secret and cannot be pickled")

    # Immutable: a copy is the same settings (copy goes through __reduce__ otherwise).
    def __copy__(self) -> Settings:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Settings:
        return self

    def __hash__(self) -> int:
        # The generated hash would hash ``tags``, a read-only mapping, which has none.
        values = [getattr(self, field.name) for field in dataclasses.fields(self)]
        return hash(
            tuple(tuple(sorted(v.items())) if isinstance(v, Mapping) else v for v in values)
        )

    @property
    def trace_url(self) -> str:
        """The URL a trace is POSTed to."""
        return f"{self.base_url}/agents/{self.agent_id}/trace"

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some settings changed (validated again)."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def masked(self) -> dict[str, Any]:
        """The settings as a plain dict, with the secret masked: for display."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _SECRET_FIELDS:
                value = f"<set, {len(value)} characters>" if value else "<unset>"
            elif field.name == "tags":
                value = dict(value)
            out[field.name] = value
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``INFINIUM_*`` variables.

        Precedence: an explicit argument that is not ``None`` > the environment
        variable (an empty value counts as unset) > the default.  A bad value
        raises :class:`~infinium_logging.errors.ConfigurationError` naming the
        variable and the value it got (never the secret's value).
        """
        env = os.environ if environ is None else environ
        _check_names(overrides)
        # Before anything is logged, the warnings below included; also when the settings
        # turn out invalid or disabled, or no exporter is made yet (the default one is lazy).
        _enable_logging_early(env, overrides)
        _warn_unknown_variables(env)
        values: dict[str, Any] = {}
        for name in _SPECS:
            explicit = overrides.get(name)
            if explicit is not None:
                values[name] = explicit
                continue
            text = env.get(ENV_PREFIX + name.upper())
            if text is not None and text.strip():
                values[name] = text.strip()  # parsed and checked by __post_init__
        disabled = _switched_off(values.get("disabled"))
        while True:
            try:
                return cls(**values)
            except ConfigurationError as exc:
                # Say which variable to fix when the bad value came from the environment.
                name = exc.variable or ""
                variable = ENV_PREFIX + name.upper()
                if not (name in values and overrides.get(name) is None and variable in env):
                    # A rule between two settings names the one given in the environment.
                    partner = _PARTNERS.get(name)
                    variable = ENV_PREFIX + (partner or "").upper()
                    if (
                        partner is None
                        or partner not in values
                        or overrides.get(partner) is not None
                        or variable not in env
                    ):
                        raise
                    exc = ConfigurationError(
                        f"Invalid {variable}={_describe(partner, values[partner])}: "
                        f"{exc.message.partition('Invalid setting ')[2]}",
                        variable=partner,
                    )
                    name = partner
                message = exc.message.replace(f"setting {name}=", f"{variable}=", 1)
                if not disabled or name == "disabled":
                    raise ConfigurationError(message, variable=variable) from None
                # The off switch must work also when what it switches off is misconfigured
                # (setting it may be the way out of a broken deployment): the bad variable
                # is left out, and said, as a misspelt one is.
                del values[name]
                if message not in _warned_left_out:  # settings are read often: say it once
                    _warned_left_out.add(message)
                    warnings.warn(
                        f"{message} (left out: {ENV_PREFIX}DISABLED is set)",
                        ConfigurationWarning,
                        stacklevel=2,
                    )


#: A rule between two settings is reported on the first (see Settings.__post_init__); when
#: only the second was set in the environment, the error names that one.
_PARTNERS: Final = {"retry_backoff_max": "retry_backoff_base"}
#: Messages of variables left out because INFINIUM_DISABLED is set, already warned about.
_warned_left_out: set[str] = set()


def disabled_in_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``INFINIUM_DISABLED`` says off, read alone (for when the settings as a whole
    cannot be read)."""
    env = os.environ if environ is None else environ
    return _switched_off(env.get(ENV_PREFIX + "DISABLED"))


def _switched_off(value: object) -> bool:
    """Whether ``disabled`` as given (a bool, or the variable's text) says off."""
    if isinstance(value, str):
        try:
            return parse_bool(value)
        except ValueError:
            return False
    return value is True


def _reason(exc: ValueError, name: str) -> str:
    if name in _SECRET_FIELDS:
        return "not a valid value"
    spec = _SPECS[name]
    if spec.parse is _parse_int:
        return "expected a whole number"
    if spec.parse is _parse_float:
        return "expected a number"
    return str(exc)


def _check_names(names: Mapping[str, Any]) -> None:
    unknown = sorted(set(names) - set(_SPECS))
    if unknown:
        raise TypeError(
            f"unknown setting(s) {', '.join(unknown)}; known settings: {', '.join(sorted(_SPECS))}"
        )


def setting_names() -> tuple[str, ...]:
    """Names of every setting, in table order."""
    return tuple(_SPECS)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``INFINIUM_*`` variable that is not a setting (a misspelt name is
    silently ignored otherwise): its name, never its value, and the setting's variable it most
    resembles when the resemblance is obvious."""
    names = [name.upper() for name in _SPECS] + list(OTHER_VARIABLES)
    known = {ENV_PREFIX + name for name in names}
    found = []
    for variable in sorted(environ):
        if not variable.upper().startswith(ENV_PREFIX) or variable in known:
            continue
        close = difflib.get_close_matches(
            variable[len(ENV_PREFIX) :].upper(), names, n=1, cutoff=0.75
        )
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
        found.append(f"{variable} is not a setting of infinium-logging and is ignored{hint}")
    return found


#: Variables (without the prefix) read by other parts of the library (infino_settings.py).
OTHER_VARIABLES: Final = (
    "INFINO_ENDPOINT",
    "INFINO_ACCESS_KEY",
    "INFINO_SECRET_KEY",
    "INFINO_DATASET",
    "INFINO_STEPS_DATASET",
)

#: Variables already warned about by from_env (once per process: settings are read often).
_warned_variables: set[str] = set()


def _enable_logging_early(environ: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
    """``setup_logging`` when ``enable_logging`` is on, read as the settings will read it (a
    bad value does nothing here: building the settings reports it)."""
    value = overrides.get("enable_logging")
    if value is None:
        value = environ.get(ENV_PREFIX + "ENABLE_LOGGING", "").strip() or None
    if isinstance(value, str):
        try:
            value = _parse_bool_or_raise(value.strip())
        except Exception:
            return
    if value is not True:
        return
    level = overrides.get("log_level")
    if level is None:
        level = environ.get(ENV_PREFIX + "LOG_LEVEL", "").strip() or "INFO"
    try:
        setup_logging(level)
    except (ValueError, AttributeError):
        setup_logging("INFO")


def _warn_unknown_variables(environ: Mapping[str, str]) -> None:
    for warning in unknown_variables(environ):
        variable = warning.split(" ", 1)[0]
        if variable not in _warned_variables:
            _warned_variables.add(variable)
            _log.warning("%s", warning)
            # Also a Python warning: the line above goes nowhere (a NullHandler) until
            # logging is configured, and a misspelt INFINIUM_DISABLED must not pass unseen.
            warnings.warn(warning, ConfigurationWarning, stacklevel=2)
