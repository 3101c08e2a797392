"""A command-line tool whose run is one trace: exit codes, errors and SIGTERM included.

    python examples/recipes/script.py report.txt notes.txt     # summarise files
    python examples/recipes/script.py -                        # lines from stdin, until EOF

Each run is one ``task()``: every record logged while it runs is a step, its exit status says
whether it succeeded (``sys.exit(0)`` is a success, any other status an error), and the trace is
delivered by the exit hook within ``INFINIUM_SHUTDOWN_TIMEOUT``.  SIGTERM (``kill``, a container
stopping) is made an ordinary exit, so the run's trace is sent then too.  Traces go where
``INFINIUM_BASE_URL``, ``INFINIUM_AGENT_ID`` and ``INFINIUM_AGENT_SECRET`` say; when
``INFINIUM_BASE_URL`` is not set, a local collector is started and what it received is printed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from types import FrameType

from infinium_logging import InfiniumHandler, get_default_exporter, task

log = logging.getLogger("summarise")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SIGTERM as an ordinary exit: the run's task ends with SystemExit, its trace says so, and
    # the exit status is 128 + the signal, what a shell reports. (Without this the library's
    # own handler still delivers, and the process ends by the signal.)
    sys.exit(128 + signum)


def _lines(sources: list[str]) -> Iterable[tuple[str, str]]:
    for source in sources:
        if source == "-":
            for line in sys.stdin:
                yield "<stdin>", line
        else:
            for line in Path(source).read_text(encoding="utf-8").splitlines():
                yield source, line


@task("Summarise files", expected_outcome={"task_objective": "Count the words of each source"})
def summarise(sources: list[str]) -> int:
    """The run: one step per source read, the totals as the trace's output."""
    words: dict[str, int] = {}
    for source, line in _lines(sources):
        if source not in words:
            log.info("Reading %s", source, extra={"tool_call": {"tool_name": "read"}})
            print(f"reading {source}", flush=True)
        words[source] = words.get(source, 0) + len(line.split())
    log.info("Summarised %d source(s)", len(words), extra={"words": words})
    for source, count in words.items():
        print(f"{source}: {count} words")
    return 0


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("sources", nargs="*", help="files to read, or - for stdin")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().addHandler(InfiniumHandler())
    try:
        return summarise(args.sources or [__file__])
    except OSError as exc:  # the trace records it as the run's error; the user gets one line
        print(f"summarise: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    import os

    collector = None
    if not os.environ.get("INFINIUM_BASE_URL"):  # nothing configured: a local collector
        from infinium_logging.collector import LocalCollector

        collector = LocalCollector(port=0, db=":memory:").start()
        os.environ["INFINIUM_BASE_URL"] = collector.base_url
        os.environ["INFINIUM_AGENT_ID"] = "3f1c2b9e-8d7a-4e61-9f3b-2a5c6d7e8f90"
        os.environ["INFINIUM_AGENT_SECRET"] = "local-script-secret"
    status = main()
    if collector is not None:  # only to show it here; the exit hook would send it anyway
        get_default_exporter().flush(timeout=10)
        collector.wait_for(1, timeout=10)
        for received in collector.traces():
            print(f"trace {received.task.name!r}: {len(received.task.steps or ())} steps")
    sys.exit(status)
