"""The ``infinium-logging`` command line: the parser and the entry point; each subcommand is
added by one ``_add_<command>`` function of the module that runs it (``_cli_serve``,
``_cli_check``, ``_cli_spool``, ``infino_cli``)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Final

from ._cli_base import _PROG, _Commands, _silence
from ._cli_check import _add_check, _add_send
from ._cli_serve import _add_demo, _add_serve
from ._cli_spool import _add_replay, _add_spool
from ._version import __version__
from .errors import ConfigurationWarning
from .infino_cli import add_infino_datasets, add_infino_query

__all__ = ["main"]


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Ship AI agent traces to Infinium by logging."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(commands)
    return parser


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
