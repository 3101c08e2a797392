"""The ``infinium-logging`` command line: one ``_add_<command>`` function per subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sqlite3
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Final, NoReturn, TextIO, TypeAlias, cast
from urllib.parse import urlsplit

import msgspec
import urllib3

from ._collector_store import MEMORY, is_uuid
from ._problems import all_problems
from ._version import __version__
from ._viewer import is_loopback
from .collector import DEFAULT_PORT, LocalCollector
from .convert import to_task
from .errors import (
    AuthenticationError,
    ConfigurationError,
    ConfigurationWarning,
    InfiniumError,
    InfiniumTimeoutError,
    NetworkError,
    NotFoundError,
    ValidationError,
)
from .exporter import Exporter
from .infino_cli import add_infino_datasets, add_infino_query
from .model import utc_now_iso
from .settings import DEFAULT_BASE_URL, Settings, check_secret, unknown_variables
from .transport import Transport

__all__ = ["main"]

_PROG: Final = "infinium-logging"
#: Printed as INFINIUM_AGENT_SECRET when the collector runs open (it accepts any secret).
OPEN_SECRET: Final = "local-collector-accepts-any-secret"  # noqa: S105 - a placeholder
DEFAULT_DB: Final = "infinium-traces.sqlite3"

_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = _parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        with warnings.catch_warnings():
            # The commands name unknown INFINIUM_* variables themselves, in their own words.
            warnings.simplefilter("ignore", ConfigurationWarning)
            code = run(args)
        # What is still buffered is written now, where a reader gone away (``| head -1``) is
        # handled below, not at interpreter exit, which would print a traceback.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader of the output went away (``| head -1``): stop, as the Python docs advise,
        # pointing stdout at devnull so that flushing it at exit does not fail again.
        _silence(sys.stdout)
        return 1


def _say(text: str, *, err: bool = False) -> None:
    """Print ``text`` to stdout (stderr with ``err``) for a command that must go on without
    a reader: ``serve`` keeps serving and ``send`` keeps sending when their output's reader
    has gone away; only the stream is silenced."""
    stream = sys.stderr if err else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        _silence(stream)


def _silence(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at devnull (its pipe has no reader any more)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # not a real file (replaced by a test harness, closed)
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Ship AI agent traces to Infinium by logging."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(commands)
    return parser


def _fail(command: str, message: str, code: int) -> int:
    print(f"{_PROG} {command}: {message}", file=sys.stderr)
    return code


# --- serve ------------------------------------------------------------------------------------


def _add_serve(commands: _Commands) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the local collector",
        description=(
            "Run a local Infinium-compatible collector that stores every trace it accepts in a "
            "SQLite file. Without --agent-id/--agent-secret it accepts any credentials."
        ),
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s, this machine only); any other address lets "
        "whoever reaches it read every trace in the viewer",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="0 picks a free port (default: %(default)s)",
    )
    parser.add_argument(
        "--db", default=DEFAULT_DB, help=f"SQLite file, or {MEMORY} (default: %(default)s)"
    )
    parser.add_argument("--agent-id", type=_uuid, help="accept only this agent id (a UUID)")
    parser.add_argument(
        "--agent-secret", type=_secret, help="accept only this agent secret (8 characters or more)"
    )
    parser.add_argument(
        "--prompts", metavar="FILE", help="JSON file of prompts to serve to get_prompt()"
    )
    parser.add_argument(
        "--print-env",
        action="store_true",
        help=(
            "print only the export lines on stdout, then close it and keep serving, so that "
            'eval "$(infinium-logging serve --print-env &)" sets them in the current shell '
            "and leaves the collector running in the background"
        ),
    )
    parser.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        collector = LocalCollector(
            args.port, args.db, args.agent_id, args.agent_secret, args.prompts, host=args.host
        ).start()
    except ConfigurationError as exc:
        return _fail("serve", exc.message, 2)
    except sqlite3.Error as exc:
        return _fail("serve", f"cannot use the database {args.db}: {exc}", 1)
    except OSError as exc:
        return _fail("serve", f"cannot listen on {args.host}:{args.port}: {exc.strerror}", 1)

    trace_log = logging.getLogger("infinium_logging.collector")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    trace_log.addHandler(handler)
    level = trace_log.level
    trace_log.setLevel(logging.INFO)
    if not is_loopback(args.host):
        _say(
            f"{_PROG} serve: warning: listening on {args.host}, not on this machine only: anyone "
            "who can reach it can read every trace in the viewer and send traces",
            err=True,
        )
    restore = _stop_on_signals()
    try:
        if args.print_env:
            _print_env(collector, args)
        else:
            _print_banner(collector, args)
        wait_for_signal()
    except KeyboardInterrupt:
        pass
    finally:
        collector.stop()
        restore()
        trace_log.removeHandler(handler)
        trace_log.setLevel(level)
    _say(f"Stopped; {collector.accepted_count} traces received.", err=True)
    return 0


def export_lines(base_url: str, agent_id: str, secret: str) -> str:
    """The three ``INFINIUM_*`` variables as ``export`` lines that a POSIX shell reads as
    printed, pasted or through ``eval`` (each value quoted when it needs to be)."""
    return "\n".join(
        f"export {name}={shlex.quote(value)}"
        for name, value in (
            ("INFINIUM_BASE_URL", base_url),
            ("INFINIUM_AGENT_ID", agent_id),
            ("INFINIUM_AGENT_SECRET", secret),
        )
    )


def _credentials(args: argparse.Namespace) -> tuple[str, str]:
    # Open mode checks only that x-agent-id matches the path, so any id works; a fresh one
    # keeps traces of different runs apart.
    return args.agent_id or str(uuid.uuid4()), args.agent_secret or OPEN_SECRET


def _print_env(collector: LocalCollector, args: argparse.Namespace) -> None:
    """``--print-env``: the export lines alone on stdout, which is then let go of: a command
    substitution (``$(...)``) reads until every writer has closed it, and the collector keeps
    serving after printing.  What a person reads goes to stderr."""
    pid = os.getpid()
    # Before stdout is let go of: once it is, the shell goes on and may stop the collector
    # at once, and a signal must not find this line unwritten.
    _say(
        f"Infinium local collector listening on {collector.base_url} (process {pid}; "
        f"kill {pid} stops it).\nSee the traces in a browser at {collector.viewer_url}",
        err=True,
    )
    # A shell variable, not exported: the shell that evaluates the lines can stop the
    # collector, and no program it starts sees one more variable.
    _say(
        f"{export_lines(collector.base_url, *_credentials(args))}\n"
        f"infinium_collector_pid={pid}  # kill $infinium_collector_pid stops the collector"
    )
    _silence(sys.stdout)


def _print_banner(collector: LocalCollector, args: argparse.Namespace) -> None:
    agent_id, secret = _credentials(args)
    where = "memory only" if args.db == MEMORY else os.path.abspath(args.db)
    if args.agent_id is None and args.agent_secret is None:
        mode = "any credentials"
    elif args.agent_id is None:
        mode = "any agent id with the secret below"
    elif args.agent_secret is None:
        mode = "only the agent id below, with any secret"
    else:
        mode = "only the credentials below"
    _say(
        f"Infinium local collector listening on {collector.base_url}\n"
        f"Traces are stored in {where}; accepting {mode}.\n"
        f"See them in a browser at {collector.viewer_url}\n"
        "Point an application at it: run these lines in its shell.\n\n"
        f"{export_lines(collector.base_url, agent_id, secret)}\n\n"
        "Press Ctrl-C to stop."
    )


def wait_for_signal() -> None:
    """Sleep until SIGINT/SIGTERM, whose handlers raise KeyboardInterrupt.

    In short slices: the kernel may hand a process's signal to any of its threads
    (the collector's, the exporter's), and then only sets a flag that the main
    thread reads when it next runs Python code; one long sleep would not end.
    """
    while True:
        time.sleep(_SIGNAL_POLL)


_SIGNAL_POLL: Final = 0.2


def _stop_on_signals() -> Callable[[], None]:
    """Make SIGTERM stop the server as Ctrl-C does; returns what puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return port


def _secret(text: str) -> str:
    problem = check_secret(text)
    if problem is not None:  # the client would refuse it: a collector for no one
        raise argparse.ArgumentTypeError(f"{problem}, as the client requires")
    return text


def _uuid(text: str) -> str:
    if not is_uuid(text):
        raise argparse.ArgumentTypeError(f"expected a UUID, got {text!r}")
    return text


# --- demo -------------------------------------------------------------------------------------


def _add_demo(commands: _Commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="see it work in a few seconds: a simulated agent logs to a local collector",
        description=(
            "Start a local collector on a free port with a temporary SQLite file, configure the "
            "stdlib handler and a structlog chain against it, run a simulated agent (no real "
            "LLM, no network) through three tasks - one clean, one that recovers from a tool "
            "failure, one that fails - and one tagged event (four traces in all), and print what "
            "the collector received."
        ),
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the collector running afterwards (Ctrl-C stops it) and print how to use it",
    )
    parser.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415 - structlog is imported only when the demo runs

    restore = _stop_on_signals()
    out = _ReaderGuard(sys.stdout)
    try:
        code = run_demo(keep=args.keep, out=cast(TextIO, out))
        out.flush()
        return code
    except _ReaderGone:
        return 1
    finally:
        restore()


class _ReaderGone(BaseException):
    """The reader of the demo's output went away.

    A BaseException: the demo also writes through a ``logging.StreamHandler``,
    whose ``emit`` reports any Exception (BrokenPipeError included) on stderr
    as a "--- Logging error ---" block and carries on; this one ends the demo.
    """


class _ReaderGuard:
    """The demo's output stream: once its pipe has no reader, the stream is silenced and the
    write that found out raises :class:`_ReaderGone`; later writes are dropped."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if self._gone:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()

    def flush(self) -> None:
        if self._gone:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> NoReturn:
        self._gone = True
        _silence(self._stream)
        raise _ReaderGone from None


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


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="API root (INFINIUM_BASE_URL)")
    parser.add_argument("--agent-id", help="agent UUID (INFINIUM_AGENT_ID)")
    parser.add_argument(
        "--agent-secret",
        help="agent secret (INFINIUM_AGENT_SECRET; prefer the variable: flags show in ps)",
    )
    parser.add_argument(
        "--timeout", type=float, help="request timeout in seconds (INFINIUM_TIMEOUT)"
    )
    parser.add_argument(
        "--no-verify-ssl",
        dest="verify_ssl",
        action="store_false",
        default=None,
        help="do not verify TLS certificates (INFINIUM_VERIFY_SSL=false)",
    )


def _settings_from(args: argparse.Namespace, **extra: object) -> Settings:
    overrides = {
        "base_url": args.base_url,
        "agent_id": args.agent_id,
        "agent_secret": args.agent_secret,
        "timeout": args.timeout,
        "verify_ssl": args.verify_ssl,
        **extra,
    }
    return Settings.from_env(**overrides)


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


# --- spool and replay -------------------------------------------------------------------------


def _add_spool_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spool-dir",
        metavar="DIR",
        help="the spool directory (INFINIUM_SPOOL_DIR); it must exist",
    )


def _spool_dir_problem(directory: str) -> str | None:
    """Why ``directory`` cannot be the spool to read, or None.  One that does not exist is a
    mistyped path: the spool commands never create it (an exporter creates its own)."""
    where = os.path.abspath(os.path.expanduser(directory))
    if not os.path.exists(where):
        return (
            f"the spool directory {where} does not exist; check --spool-dir or INFINIUM_SPOOL_DIR"
        )
    if not os.path.isdir(where):
        return f"the spool directory {where} is not a directory"
    return None


def _add_spool(commands: _Commands) -> None:
    parser = commands.add_parser(
        "spool",
        help="show the traces waiting in the durable spool",
        description=(
            "Show, for each agent, the traces waiting in the spool directory: how many, their "
            "size on disk, the segment files holding them, when the oldest was written, and "
            "whether a live process holds them (it is sending them) or they are orphaned (left "
            "by a process that ended: the agent's next start, or 'replay', sends them). "
            "Nothing is taken over or changed."
        ),
        epilog=(
            "exit status: 0 shown (also when nothing is pending), 2 no spool directory given, "
            "or it does not exist or cannot be read"
        ),
    )
    _add_spool_dir_flag(parser)
    parser.set_defaults(run=_spool)


def _spool(args: argparse.Namespace) -> int:
    from .spool import survey  # noqa: PLC0415 - only the spool commands read the spool

    directory = args.spool_dir or os.environ.get("INFINIUM_SPOOL_DIR", "").strip()
    if not directory:
        return _fail("spool", "no spool directory: pass --spool-dir or set INFINIUM_SPOOL_DIR", 2)
    if (problem := _spool_dir_problem(directory)) is not None:
        return _fail("spool", problem, 2)
    where = os.path.abspath(os.path.expanduser(directory))
    try:
        found = survey(where)
    except OSError as exc:
        return _fail("spool", f"cannot read the spool directory {where}: {exc.strerror}", 2)
    if not found:
        print(f"Nothing pending in {where}.")
        return 0
    print(f"Pending in {where}:\n")
    print(
        f"{'AGENT':36}  {'TRACES':>8}  {'SIZE':>10}  {'SEGMENTS':>8}  {'OLDEST (UTC)':19}  "
        f"{'LIVE':>8}  {'ORPHANED':>8}"
    )
    for pending in found:
        oldest = "-" if pending.oldest is None else _utc(pending.oldest)
        print(
            f"{pending.agent_id:36}  {pending.records:>8}  {_size(pending.bytes):>10}  "
            f"{pending.segments:>8}  {oldest:19}  {pending.live_records:>8}  "
            f"{pending.orphaned_records:>8}"
        )
    print(
        "\nLIVE: held by a running process, which is sending them. ORPHANED: left by a "
        "process that ended; the agent's next start sends them, or run "
        f"'{_PROG} replay' to send them now."
    )
    corrupt = sum(pending.corrupt for pending in found)
    if corrupt:
        print(f"{corrupt} damaged record(s) (a torn write, a bad checksum) will be skipped.")
    return 0


def _utc(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(moment))


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _add_replay(commands: _Commands) -> None:
    parser = commands.add_parser(
        "replay",
        help="send the traces orphaned in the spool now",
        description=(
            "Take over the traces that processes which ended left in the spool for the agent "
            "(INFINIUM_AGENT_ID), and send them now with the configured throttle and retries, "
            "showing progress; then report how many were sent and how many were not. Traces a "
            "live process holds are left to it. Sent and rejected traces leave the spool; at "
            "the first trace that still fails after its retries the replay stops, and the rest "
            "stay for a later replay or the agent's next start. Without a spool directory it "
            "replays the exit spill (what exits left in the user's cache directory for the "
            "agent and base URL). Settings come from INFINIUM_* variables and the flags."
        ),
        epilog=(
            "exit status: 0 all sent (or nothing to send), 1 some not sent (failed, or "
            "rejected by the platform), 2 configuration error or unusable spool directory "
            "(one that does not exist included: nothing is created)"
        ),
    )
    _add_spool_dir_flag(parser)
    _add_settings_flags(parser)
    parser.set_defaults(run=_replay)


def _replay(args: argparse.Namespace) -> int:
    from .durability import replay_spool  # noqa: PLC0415 - only this command replays
    from .spill import default_spool_dir  # noqa: PLC0415

    try:
        settings = _settings_from(args, spool_dir=args.spool_dir)
    except ConfigurationError as exc:
        return _fail("replay", exc.message, 2)
    # Without one, what exits left in the per-user cache directory (the exit spill), if any.
    directory = settings.spool_dir or default_spool_dir(settings)
    if settings.spool_dir is None:
        if not os.path.isdir(directory):
            return _fail(
                "replay", "no spool directory: pass --spool-dir or set INFINIUM_SPOOL_DIR", 2
            )
        settings = settings.replace(spool_dir=directory)
    if (problem := _spool_dir_problem(directory)) is not None:
        return _fail("replay", problem, 2)
    if settings.disabled:
        return _fail("replay", "INFINIUM_DISABLED is on: nothing would be sent", 2)

    def progress(done: int, total: int) -> None:
        if total >= 20 and (done % max(10, total // 10) == 0 or done == total):
            print(f"  {done}/{total} done", file=sys.stderr, flush=True)

    print(
        f"Replaying the spool of agent {settings.agent_id} in {settings.spool_dir} ...", flush=True
    )
    try:
        report = replay_spool(settings, progress=progress)
    except OSError as exc:
        return _fail("replay", f"cannot use the spool in {settings.spool_dir}: {exc}", 2)
    if report.found == 0:
        print("Nothing orphaned to send.")
    else:
        print(
            f"{report.sent} sent, {report.rejected} rejected by the platform (removed from the "
            f"spool), {report.failed} not sent (still in the spool), of {report.found}."
        )
    if report.busy:
        print(f"{report.busy} trace(s) held by a live process were left to it.")
    if report.failed or report.rejected:
        return _fail("replay", f"not everything was sent; last error: {report.last_error}", 1)
    return 0


#: Every subcommand, each added by one function.
_COMMANDS: Final[tuple[Callable[[_Commands], None], ...]] = (
    _add_demo,
    _add_serve,
    _add_check,
    _add_send,
    _add_spool,
    _add_replay,
    add_infino_query,
    add_infino_datasets,
)
