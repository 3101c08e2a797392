"""What every command of the command line shares: output that survives its reader going away,
failure lines, the settings flags."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Final, NoReturn, TextIO, TypeAlias

from .settings import Settings

_PROG: Final = "infinium-logging"
#: Printed as INFINIUM_AGENT_SECRET when the collector runs open (it accepts any secret).
OPEN_SECRET: Final = "local-collector-accepts-any-secret"  # noqa: S105 - a placeholder
DEFAULT_DB: Final = "infinium-traces.sqlite3"

_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


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


def _fail(command: str, message: str, code: int) -> int:
    print(f"{_PROG} {command}: {message}", file=sys.stderr)
    return code


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
