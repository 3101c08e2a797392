"""``check`` and ``send``: verifying a setup against the API, and sending traces from files."""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Final
from urllib.parse import urlsplit

import msgspec
import urllib3

from . import _redact_scan
from ._cli_base import _PROG, _add_settings_flags, _Commands, _fail, _say, _settings_from
from ._problems import all_problems
from .convert import to_task
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InfiniumError,
    InfiniumTimeoutError,
    NetworkError,
    NotFoundError,
    ValidationError,
)
from .exporter import Exporter
from .infino_settings import InfinoSettings, infino_configured
from .model import utc_now_iso
from .settings import DEFAULT_BASE_URL, Settings, unknown_variables
from .transport import Transport

# --- check ------------------------------------------------------------------------------------

#: Exit statuses of ``check``, by what went wrong.
CHECK_EXIT: Final = {
    "ok": 0,
    "config": 2,
    "auth": 3,
    "unreachable": 4,
    "tls": 5,
    "timeout": 6,
    "server": 7,
}


def _add_check(commands: _Commands) -> None:
    parser = commands.add_parser(
        "check",
        help="show the effective settings and verify the credentials",
        description=(
            "Read the configuration exactly as the handler does (INFINIUM_* variables, then "
            "these flags), print it with the secret masked, and verify the credentials against "
            "the endpoint without creating a trace: it asks for the interpreted result of a "
            "random trace id, which the Infinium API answers with 401 when the credentials are "
            "refused and 404 when they are accepted. A 404 counts only if the same request "
            "without the secret is refused: a server that answers alike with or without the "
            "secret is not the API (a base URL without its /api/v1 root, say). INFINIUM_* "
            "variables that are not settings (a misspelt name) are named in a warning, without "
            "their values."
        ),
        epilog=(
            "exit status: 0 credentials accepted, 2 configuration error (also: the base URL is "
            "not the Infinium API), 3 credentials refused, 4 endpoint unreachable (DNS, "
            "refused, reset), 5 TLS error, 6 timeout, 7 server error"
        ),
    )
    _add_settings_flags(parser)
    parser.set_defaults(run=_check)


def _scan_engine() -> str:
    """How a trace is scanned for what to redact, and how to make it faster where it can be."""
    version = _redact_scan.available()
    if version is not None:
        return f"one pass per trace (Hyperscan {version}, the fast extra)"
    return (
        "one re pass per pattern (pip install 'infinium-logging[fast]' makes it one pass: "
        "docs/redaction.md)"
    )


def _infino_line() -> str:
    """Where traces go too, when ``INFINIUM_INFINO_*`` say so (its keys are not tried here)."""
    if not infino_configured():
        return ""
    try:
        infino = InfinoSettings.from_env()
    except ConfigurationError as exc:
        return f"Infino: not usable: {exc.message}"
    datasets = ", ".join(infino.datasets)
    return (
        f"Infino: every trace also goes to {infino.endpoint} ({datasets}), in a lane of the "
        f"same exporter (`infinium-logging infino-datasets` creates the datasets)"
    )


def _check(args: argparse.Namespace) -> int:
    # Before the settings are read: a misspelt name may be why they fail (a missing secret).
    for warning in unknown_variables(os.environ):
        print(f"{_PROG} check: warning: {warning}", file=sys.stderr)
    try:
        settings = _settings_from(args)
    except ConfigurationError as exc:
        return _fail("check", f"{exc.message}", CHECK_EXIT["config"])
    print("Effective settings:")
    for name, value in settings.masked().items():
        print(f"  {name:22} {value}")
    if settings.redact != "off":
        print(f"\nRedaction: {settings.redact}, {_scan_engine()}")
    infino = _infino_line()
    if infino:
        print(f"\n{infino}")
    if settings.disabled:
        print("\nINFINIUM_DISABLED is on: nothing would be sent.")
        return CHECK_EXIT["ok"]
    print(f"\nChecking the credentials against {settings.base_url} ...", flush=True)
    transport = Transport(settings.replace(workers=1))
    try:
        not_the_api = _probe_credentials(transport, settings)
    except AuthenticationError as exc:
        return _fail(
            "check",
            f"the credentials were refused (HTTP {exc.status_code}): check INFINIUM_AGENT_ID "
            "and INFINIUM_AGENT_SECRET",
            CHECK_EXIT["auth"],
        )
    except InfiniumTimeoutError as exc:
        return _fail(
            "check",
            f"{exc.message}: the endpoint did not answer; check INFINIUM_BASE_URL, the network, "
            "or raise INFINIUM_TIMEOUT",
            CHECK_EXIT["timeout"],
        )
    except NetworkError as exc:
        kind, problem = _network_problem(exc, settings.base_url)
        return _fail("check", problem, CHECK_EXIT[kind])
    except InfiniumError as exc:
        return _fail(
            "check",
            f"unexpected answer (HTTP {exc.status_code}): {exc.message}",
            CHECK_EXIT["server"],
        )
    finally:
        transport.close()
    if not_the_api is not None:
        return _fail(
            "check",
            f"{settings.base_url} is not the Infinium API: {not_the_api}. Check "
            f"INFINIUM_BASE_URL: the API root ends in /api/v1 (the default is {DEFAULT_BASE_URL})",
            CHECK_EXIT["config"],
        )
    print("OK: the credentials were accepted.")
    return CHECK_EXIT["ok"]


def _probe_credentials(transport: Transport, settings: Settings) -> str | None:
    """Ask for the interpreted result of a random trace id, which creates nothing.

    Returns None when the credentials were accepted, else what shows that the
    base URL is not the Infinium API.  The API checks the credentials before
    it looks for the trace: a refusal (AuthenticationError, raised) says the
    credentials are wrong.  Any other server can also answer 404 to a path it
    does not know, so a 404 (or a success, for a trace that cannot exist)
    counts only once the same request without the secret is refused, as the
    API refuses it; a server that answers it as before ignores the
    credentials.  Raises the transport's errors.
    """
    trace_id = str(uuid.uuid4())
    try:
        answer = transport.get_interpreted_result(trace_id)
    except NotFoundError as exc:
        with_secret = _status_text(exc)
    else:
        with_secret = f"HTTP {answer.status_code}"
    url = f"{settings.base_url}/agents/{settings.agent_id}/interpreted-result/{trace_id}"
    headers = {"x-agent-id": settings.agent_id, "User-Agent": settings.user_agent}
    try:
        answer = transport.request("GET", url, headers=headers)
    except (AuthenticationError, ValidationError):
        return None  # refused without the secret: the answer with it was the API's
    except NotFoundError as exc:
        without_secret = _status_text(exc)
    else:
        without_secret = f"HTTP {answer.status_code}"
    if with_secret == without_secret:
        answered = f"it answered {with_secret} whether the secret was sent or not"
    else:
        answered = f"it answered {with_secret} with the secret and {without_secret} without"
    return f"{answered} (the API refuses a request without it)"


def _status_text(exc: NotFoundError) -> str:
    """``HTTP 404``, with the server's message when it answered in JSON (not a web page)."""
    said = exc.details.get("server_message")
    if not isinstance(exc.details.get("response_data"), dict) or not isinstance(said, str):
        return "HTTP 404"
    return f"HTTP 404 ({said[:97] + '...' if len(said) > 100 else said})"


def _network_problem(exc: NetworkError, base_url: str) -> tuple[str, str]:
    """The key in CHECK_EXIT and a plain account of a request that got no answer: where it
    went and what the operating system (or TLS) said, without the HTTP client's internals."""
    parts = urlsplit(base_url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cause = exc.original_error
    os_error = _os_error(cause)
    said = (os_error.strerror or str(os_error)) if os_error is not None else None
    if isinstance(cause, urllib3.exceptions.SSLError):
        # OpenSSL's name for a first answer that is no TLS record: an https URL to an http server.
        if "WRONG_VERSION_NUMBER" in str(os_error or cause):
            return "tls", (
                f"{where} does not speak TLS: it looks like a plain HTTP server; if it is one "
                "(a local collector, say), INFINIUM_BASE_URL should start with http://"
            )
        return "tls", (
            f"the TLS handshake with {where} failed ({os_error or cause}); check the "
            "certificate of the host in INFINIUM_BASE_URL (INFINIUM_VERIFY_SSL=false only for "
            "local testing)"
        )
    if isinstance(cause, urllib3.exceptions.NameResolutionError):
        because = f" ({said})" if said else ""
        return "unreachable", (
            f"the host name {host} does not resolve{because}; check INFINIUM_BASE_URL"
        )
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        because = f": {said}" if said else ""
        return "unreachable", (
            f"could not connect to {where}{because}; nothing answered there: check "
            "INFINIUM_BASE_URL and that it is up"
        )
    because = f": {said}" if said else f" ({exc.message})"
    return "unreachable", (
        f"the connection to {where} failed{because}; check INFINIUM_BASE_URL and that it is up"
    )


def _os_error(error: BaseException | None) -> OSError | None:
    """The first OSError (a refusal, a reset, a DNS or TLS error) behind ``error``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError):
            return error
        nested = [arg for arg in error.args if isinstance(arg, BaseException)]
        error = error.__cause__ or error.__context__ or (nested[-1] if nested else None)
    return None


# --- send -------------------------------------------------------------------------------------


def _add_send(commands: _Commands) -> None:
    parser = commands.add_parser(
        "send",
        help="validate and send traces from a JSON or JSON-lines file",
        description=(
            "Read traces from FILE (one TaskData as a JSON object, a JSON array of them, or JSON "
            "lines; '-' reads standard input), validate every one strictly (nothing is sent if "
            "any is invalid; a trace without current_datetime is dated now), then send them "
            "with the configured throttle and retries and print each trace id. Settings come "
            "from INFINIUM_* variables and the flags."
        ),
        epilog="exit status: 0 all sent, 1 some failed, 2 invalid input or configuration",
    )
    parser.add_argument("file", metavar="FILE", help="path of the traces, or - for stdin")
    _add_settings_flags(parser)
    parser.set_defaults(run=_send)


def _read_traces(name: str) -> list[tuple[str, object]]:
    """Return ``(where, object)`` pairs; raises ValueError with a precise location."""
    if name == "-":
        raw = sys.stdin.buffer.read()
        label = "<stdin>"
    else:
        with open(name, "rb") as handle:
            raw = handle.read()
        label = name
    try:
        whole = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        whole = None
    except RecursionError:
        raise ValueError(f"{label}: invalid JSON: {_TOO_DEEP}") from None
    else:
        if isinstance(whole, list):
            return [(f"{label}[{i}]", item) for i, item in enumerate(whole)]
        return [(label, whole)]
    found: list[tuple[str, object]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            found.append((f"{label}:{number}", msgspec.json.decode(line)))
        except msgspec.DecodeError as exc:
            raise ValueError(f"{label}:{number}: invalid JSON: {exc}") from None
        except RecursionError:
            raise ValueError(f"{label}:{number}: invalid JSON: {_TOO_DEEP}") from None
    return found


#: Why JSON that the decoder gives up on (a RecursionError, not a DecodeError) is refused.
_TOO_DEEP: Final = "nested too deeply (deeper than the interpreter's recursion limit)"


def _send(args: argparse.Namespace) -> int:
    try:
        settings = _settings_from(args)
    except ConfigurationError as exc:
        return _fail("send", exc.message, 2)
    try:
        items = _read_traces(args.file)
    except OSError as exc:
        return _fail("send", f"cannot read {args.file}: {exc.strerror}", 2)
    except ValueError as exc:
        return _fail("send", str(exc), 2)
    if not items:
        return _fail("send", f"no traces in {args.file}", 2)
    tasks = []
    invalid = 0
    now = utc_now_iso()
    for where, obj in items:
        if isinstance(obj, dict) and obj.get("current_datetime") is None:
            obj["current_datetime"] = now  # as Exporter.send fills it in for a dict
        try:
            tasks.append(to_task(obj, strict=True))
        except ValidationError as exc:
            invalid += 1
            for problem in all_problems(obj, exc):
                print(f"{_PROG} send: {where}: {problem}", file=sys.stderr)
    if invalid:
        return _fail("send", f"{invalid} invalid trace(s); nothing was sent", 2)
    if settings.disabled:
        return _fail(
            "send", f"INFINIUM_DISABLED is on: {len(tasks)} valid trace(s), nothing was sent", 2
        )
    failed = 0
    show_progress = len(tasks) >= 20
    with Exporter(settings) as exporter:
        for index, task in enumerate(tasks, start=1):
            try:
                response = exporter.send(task)
            except InfiniumError as exc:
                failed += 1
                _say(f"{_PROG} send: {items[index - 1][0]}: {exc.message}", err=True)
            else:
                if not response.success:  # an answer that is not an error (none expected)
                    failed += 1
                    _say(f"{_PROG} send: {items[index - 1][0]}: {response.message}", err=True)
                else:
                    _say(response.trace_id or "(no trace id in the answer)")
            if show_progress and (index % 10 == 0 or index == len(tasks)):
                _say(f"  {index}/{len(tasks)} sent", err=True)
    if failed:
        return _fail("send", f"{failed} of {len(tasks)} trace(s) failed", 1)
    return 0
