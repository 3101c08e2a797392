"""``spool`` and ``replay``: what a durable spool holds, and sending it now."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ._cli_base import _PROG, _add_settings_flags, _Commands, _fail, _settings_from
from .errors import (
    ConfigurationError,
)

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
        if report.left:
            print(
                f"{report.left} already stored by Infinium were not sent again: they stay in "
                "the spool for the agent's other destinations (its next start sends them)."
            )
    if report.busy:
        print(f"{report.busy} trace(s) held by a live process were left to it.")
    if report.failed or report.rejected:
        return _fail("replay", f"not everything was sent; last error: {report.last_error}", 1)
    return 0


#: Every subcommand, each added by one function.
