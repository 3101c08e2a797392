"""Where the time of a figure's own side goes: one scenario in a loop under cProfile.

    python benchmarks/hotspots.py SCENARIO [--calls N] [--top K]

Scenarios: ``untagged``, ``tagged``, ``in-task`` (stdlib handler, figures 1-3),
``tagged-spool`` (``tagged`` with ``spool_dir`` set: figure 10),
``sl-untagged``, ``sl-tagged``, ``sl-in-task`` (structlog processor, figure 4),
``lenient`` (``to_task(d, strict=False)``, what a sender thread does with
every dict a handler submits: figure 7c), ``encode`` (figure 5).  It prints the
unprofiled cost per call first (cProfile itself slows every Python call down,
so its per-call numbers are best read as shares of that), then the functions
with the most own time.  Only public entry points are driven, so the
scenarios keep working while the internals change.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = str(_ROOT)
    else:
        sys.path.insert(0, str(_ROOT))

import structlog  # noqa: E402

from benchmarks.caller import (  # noqa: E402
    IN_TASK,
    SL_IN_TASK,
    SL_TAGGED,
    SL_UNTAGGED,
    TAGGED,
    UNTAGGED,
    chain,
    structlog_logger,
)
from benchmarks.common import held_exporter  # noqa: E402
from benchmarks.nginx import local_server  # noqa: E402
from benchmarks.realistic_trace import STEP_EVENTS, our_task, trace_dict  # noqa: E402
from benchmarks.timing import loop  # noqa: E402
from infinium_logging.convert import to_task  # noqa: E402
from infinium_logging.handler import InfiniumHandler  # noqa: E402
from infinium_logging.model import encode_task  # noqa: E402
from infinium_logging.processor import InfiniumProcessor  # noqa: E402
from infinium_logging.tasks import task  # noqa: E402

SCENARIOS = (
    "untagged",
    "tagged",
    "tagged-spool",
    "in-task",
    "sl-untagged",
    "sl-tagged",
    "sl-in-task",
    "lenient",
    "encode",
)


@contextmanager
def _scenario(name: str, base_url: str) -> Iterator[tuple[str, dict[str, Any], int, Any]]:
    """``(statement, namespace, events per statement, context to run it in)``."""
    spool_dir = tempfile.mkdtemp(prefix="infinium-bench-spool-") if name.endswith("spool") else None
    exporter = held_exporter(base_url, **({"spool_dir": spool_dir} if spool_dir else {}))
    namespace: dict[str, Any] = {"TRACE": trace_dict(), "EVENTS": STEP_EVENTS}
    per = len(STEP_EVENTS) if name.endswith("in-task") else 1
    context: Any = (
        task("Benchmark task", exporter=exporter, max_steps=100_000)
        if name.endswith("in-task")
        else nullcontext()
    )
    handler: logging.Handler | None = None
    logger = logging.getLogger("bench.hotspots")
    try:
        if name in ("untagged", "tagged", "tagged-spool", "in-task"):
            logger.propagate = False
            logger.setLevel(logging.INFO)
            handler = InfiniumHandler(exporter=exporter)
            logger.addHandler(handler)
            namespace["log"] = logger
            stmt = {"untagged": UNTAGGED, "in-task": IN_TASK}.get(name, TAGGED)
        elif name.startswith("sl-"):
            processors = [*chain(), InfiniumProcessor(exporter=exporter)]
            namespace["log"] = structlog_logger(processors)
            stmt = {"sl-untagged": SL_UNTAGGED, "sl-tagged": SL_TAGGED, "sl-in-task": SL_IN_TASK}[
                name
            ]
        elif name == "lenient":
            namespace["to_task"] = to_task
            stmt = "to_task(TRACE, strict=False)"
        else:
            namespace.update(encode=encode_task, TASK=our_task())
            stmt = "encode(TASK)"
        yield stmt, namespace, per, context
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
        exporter.shutdown(0)
        if spool_dir is not None:
            shutil.rmtree(spool_dir, ignore_errors=True)


def profile(name: str, calls: int, top: int) -> None:
    """Print the unprofiled cost per call of ``name`` and its cProfile hot spots."""
    with local_server() as server, _scenario(name, server.base_url) as scenario:
        stmt, namespace, per, context = scenario
        run: Callable[[int], float] = loop(stmt, namespace)
        with context:
            run(max(1, calls // (10 * per)))  # warm-up
            best = min(run(max(1, calls // per)) for _ in range(5)) / per
            profiler = cProfile.Profile()
            code = compile(
                f"for _ in range({max(1, calls // per)}):\n    " + stmt.replace("\n", "\n    "),
                "<scenario>",
                "exec",
            )
            started = time.perf_counter()
            profiler.enable()
            exec(code, namespace)
            profiler.disable()
            profiled = (time.perf_counter() - started) / calls * 1e6
    real = best / 1000
    print(f"{name}: {real:.2f} µs per event unprofiled, {profiled:.2f} µs under cProfile")
    print(
        f"{calls:,} events. 'own' is the function's share of the profiled time and that share "
        "of the unprofiled cost (cProfile adds a fixed cost per call, so functions called "
        "many times look a little dearer than they are).\n"
    )
    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in entries.values()) or 1.0
    rows = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    print(f"{'calls/event':>11}  {'own %':>6}  {'own µs':>7}  {'cum µs':>7}  function")
    for (filename, line, function), (_, ncalls, own, cumulative, _) in rows:
        where = "~" if filename == "~" else f"{Path(filename).name}:{line}"
        print(
            f"{ncalls / calls:11.2f}  {own / total * 100:6.1f}  {own / total * real:7.2f}  "
            f"{cumulative / total * real:7.2f}  {function} ({where})"
        )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="benchmarks/hotspots.py", description=__doc__)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--calls", type=int, default=20_000, help="events to profile")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    args = parser.parse_args(argv)
    structlog.reset_defaults()
    profile(args.scenario, args.calls, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
