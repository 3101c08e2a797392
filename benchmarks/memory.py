"""Figure 9: resident memory while traces pile up with the server down, next to ``max_queue_bytes``.

Runs in a child process of its own (``python -m benchmarks.memory``), so that
memory the other figures left in the allocator neither hides nor adds to the
growth.  Every trace is a new dict (decoded from the trace's JSON, as an
application builds a new one for every task) logged through the handler; the
server's port is closed, so the sender threads hold a trace each while they
retry and everything else stays in the buffer until the byte bound refuses
it.  ``max_queue_size`` is raised to the number of traces so that the byte
bound, not the count, is what holds.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from infinium_logging.exporter import Exporter
from infinium_logging.handler import InfiniumHandler

from .common import Plan, bench_settings
from .realistic_trace import trace_dict
from .timing import Row, Summary

__all__ = ["figure_9", "main"]

_ROOT = Path(__file__).resolve().parent.parent
_MB = 1_000_000


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(traces: int, queue_bytes: int) -> dict[str, Any]:
    """Submit ``traces`` new traces with nothing listening; RSS before and at its peak."""
    base_url = f"http://127.0.0.1:{_closed_port()}/api/v1"
    exporter = Exporter(
        bench_settings(base_url, max_queue_size=traces, max_queue_bytes=queue_bytes)
    )
    logger = logging.getLogger("bench.memory")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = InfiniumHandler(exporter=exporter)
    logger.addHandler(handler)
    template = msgspec.json.encode(trace_dict())
    decode = msgspec.json.decode
    logger.info("warm-up", extra={"infinium": decode(template)})
    time.sleep(0.2)
    gc.collect()
    baseline = peak = _rss()
    started = time.perf_counter()
    for index in range(traces):
        logger.info("Resolved billing dispute", extra={"infinium": decode(template)})
        if index % 250 == 0:
            peak = max(peak, _rss())
    elapsed = time.perf_counter() - started
    peak = max(peak, _rss())
    stats = exporter.stats()
    logger.removeHandler(handler)
    handler.close()
    exporter.shutdown(0)
    return {
        "traces": traces,
        "max_queue_bytes": queue_bytes,
        "rss_baseline": baseline,
        "rss_peak": peak,
        "growth": peak - baseline,
        "queued": stats.queued,
        "in_flight": stats.in_flight,
        "buffered_bytes": stats.buffered_bytes,
        "dropped_queue_full": stats.dropped["queue_full"],
        "submit_us": elapsed / traces * 1e6,
    }


def figure_9(plan: Plan) -> list[Row]:
    """Run :func:`measure` in a child process and make the table row."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.memory",
            "--traces",
            str(plan.memory_traces),
            "--queue-bytes",
            str(plan.memory_queue_bytes),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=_ROOT,
        timeout=900,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"figure 9: the child failed:\n{completed.stderr[-2000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    growth = result["growth"] / _MB
    bound = plan.memory_queue_bytes / _MB
    over = growth - bound
    return [
        Row(
            id="9",
            figure=f"RSS growth, {plan.memory_traces:,} traces, server down",
            ours=Summary.of([growth]),
            baseline=Summary.of([bound]),
            unit="MB",
            value=Summary.of([over]),
            value_unit="MB over bound",
            target="<= bound + 20 MB",
            passed=over <= 20.0,
            baseline_label="max_queue_bytes",
            note=(
                f"queued {result['queued']:,} (buffered {result['buffered_bytes'] / _MB:.1f} MB "
                f"by the exporter's count), refused {result['dropped_queue_full']:,}; "
                f"{result['submit_us']:.1f} µs to build and log each trace"
            ),
            extra=result,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    """Child entry point: print the measurement as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", type=int, required=True)
    parser.add_argument("--queue-bytes", type=int, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.traces, args.queue_bytes)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
