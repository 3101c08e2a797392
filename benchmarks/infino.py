"""Figure 11: traces per second into Infino through signed bulk uploads at the default throttle."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from infinium_logging.infino import InfinoSink

from .common import Plan
from .realistic_trace import our_task
from .timing import Row, Summary

__all__ = ["figure_11"]

#: What figure 11 must reach: the 10 requests/s budget has to carry thousands of traces/s.
TARGET_TRACES_PER_SECOND = 1_000.0


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.records = 0


@contextmanager
def _bulk_server() -> Iterator[tuple[str, _Counts]]:
    """An Infino-compatible bulk endpoint on 127.0.0.1 that stores nothing and accepts all
    (the signature is checked by the test suite, not timed here)."""
    counts = _Counts()
    answer = b'{"took":1,"errors":false,"items":[]}'

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with counts.lock:
                counts.requests += 1
                counts.records += body.count(b"\n") // 2
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()


def figure_11(plan: Plan) -> list[Row]:
    """Realistic traces submitted as fast as one thread can, delivered in signed bulk requests
    at the default throttle (10 requests/s, burst 10) and batch bounds; traces/s from the first
    submit to the last trace stored."""
    count = 2_000 if plan.quick else 30_000
    base = our_task()
    tasks = [msgspec.structs.replace(base, name=f"{base.name} {n}") for n in range(count)]
    rates: list[float] = []
    requests = 0
    with _bulk_server() as (url, counts):
        for _ in range(plan.rounds):
            sink = InfinoSink(
                endpoint=url,
                access_key="BENCHMARKACCESSKEY00",
                secret_key="benchmark-secret-key-0123456789",
                max_queue_size=count,
            )
            with counts.lock:
                counts.requests = counts.records = 0
            started = time.perf_counter()
            for task in tasks:
                sink.submit(task)
            if not sink.flush(120.0):
                raise RuntimeError("figure 11: the traces were not all delivered in 120 s")
            elapsed = time.perf_counter() - started
            stats = sink.stats()
            sink.shutdown(1.0)
            if stats.sent != count:
                raise RuntimeError(f"figure 11: {stats.sent} of {count} traces were sent")
            rates.append(count / elapsed)
            with counts.lock:
                requests = counts.requests
    summary = Summary.of(rates)
    return [
        Row(
            id="11",
            figure="Infino: traces/s through signed bulk uploads at 10 req/s",
            ours=summary,
            baseline=None,
            unit="traces/s",
            value=summary,
            value_unit="traces/s",
            target=f">= {TARGET_TRACES_PER_SECOND:g} traces/s",
            passed=summary.median >= TARGET_TRACES_PER_SECOND,
            note=f"{count} realistic traces per round in {requests} bulk requests",
        )
    ]
