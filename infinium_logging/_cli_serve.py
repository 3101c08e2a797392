"""``serve`` and ``demo``: the local collector on the command line, and the export lines an
application's shell takes."""

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
from collections.abc import Callable
from types import FrameType
from typing import Final, TextIO, cast

from ._cli_base import (
    _PROG,
    DEFAULT_DB,
    OPEN_SECRET,
    _Commands,
    _fail,
    _ReaderGone,
    _ReaderGuard,
    _say,
    _silence,
)
from ._collector_store import MEMORY, is_uuid
from ._viewer import is_loopback
from .collector import DEFAULT_PORT, LocalCollector
from .errors import (
    ConfigurationError,
)
from .settings import check_secret

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
