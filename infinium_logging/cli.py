"""The ``infinium-logging`` command line: one ``_add_<command>`` function per subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Final, TypeAlias

from ._collector_store import MEMORY, is_uuid
from ._version import __version__
from .collector import DEFAULT_PORT, LocalCollector
from .errors import ConfigurationError

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
    return run(args)


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
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
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
    parser.add_argument("--agent-secret", help="accept only this agent secret")
    parser.add_argument(
        "--prompts", metavar="FILE", help="JSON file of prompts to serve to get_prompt()"
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
    restore = _stop_on_signals()
    try:
        _print_banner(collector, args)
        # Sleeping is interrupted by SIGINT/SIGTERM, whose handlers raise KeyboardInterrupt.
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        collector.stop()
        restore()
        trace_log.removeHandler(handler)
        trace_log.setLevel(level)
    print(f"Stopped; {collector.accepted_count} traces received.", file=sys.stderr, flush=True)
    return 0


def _print_banner(collector: LocalCollector, args: argparse.Namespace) -> None:
    # Open mode checks only that x-agent-id matches the path, so any id works; a fresh one
    # keeps traces of different runs apart.
    agent_id = args.agent_id or str(uuid.uuid4())
    secret = args.agent_secret or OPEN_SECRET
    where = "memory only" if args.db == MEMORY else os.path.abspath(args.db)
    is_open = args.agent_id is None and args.agent_secret is None
    mode = "any credentials" if is_open else "only the credentials below"
    print(
        f"Infinium local collector listening on {collector.base_url}\n"
        f"Traces are stored in {where}; accepting {mode}.\n"
        "Point an application at it with:\n\n"
        f"INFINIUM_BASE_URL={collector.base_url}\n"
        f"INFINIUM_AGENT_ID={agent_id}\n"
        f"INFINIUM_AGENT_SECRET={secret}\n\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )


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


def _uuid(text: str) -> str:
    if not is_uuid(text):
        raise argparse.ArgumentTypeError(f"expected a UUID, got {text!r}")
    return text


#: Every subcommand, each added by one function.
_COMMANDS: Final[tuple[Callable[[_Commands], None], ...]] = (_add_serve,)
