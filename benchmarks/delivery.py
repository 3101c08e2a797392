"""Figures 6-8: delivery to a local HTTP server (nginx when installed, else the local collector).

6: how long the caller is blocked per trace, ours through the handler with the
   sender threads delivering, next to the official client's ``send_task_data``
   (rate limiting off for both: the official client's default limiter would only
   make it block longer), one of each in turn, so both see the same server and
   the same background load.
7: delivered traces per second, rate limiting off: the exporter (4 sender
   threads) vs a raw urllib3 POST loop of the same body on one thread, and vs
   the official client sending one after the other.
8: the default throttle (10 req/s, burst 20), observed through ``on_result``.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import threading
import time
from typing import Any

import urllib3

from infinium_logging.exporter import Exporter
from infinium_logging.handler import InfiniumHandler
from infinium_logging.model import ApiResponse, encode_task

from .common import Plan, bench_settings
from .realistic_trace import (
    AGENT_ID,
    AGENT_SECRET,
    OFFICIAL_MISSING,
    official_available,
    official_client,
    official_task,
    our_task,
    trace_dict,
)
from .timing import Row, Summary, gc_off, percentile

__all__ = ["figure_6", "figure_7", "figure_8"]

_MESSAGE = "Resolved billing dispute"


def _logger() -> logging.Logger:
    logger = logging.getLogger("bench.delivery")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    return logger


def _check_delivered(exporter: Exporter, expected: int, what: str) -> None:
    stats = exporter.stats()
    if stats.sent != expected:
        raise RuntimeError(
            f"{what}: {stats.sent} of {expected} traces delivered "
            f"(dropped {stats.dropped}, last error {stats.last_error})"
        )


# --- figure 6 ---------------------------------------------------------------------------------


def figure_6(plan: Plan, base_url: str) -> list[Row]:
    """Caller blocked per trace, p50 and p99: the handler vs ``send_task_data``."""
    exporter = Exporter(
        bench_settings(base_url, enable_rate_limiting=False, max_queue_size=100_000)
    )
    logger = _logger()
    handler = InfiniumHandler(exporter=exporter)
    logger.addHandler(handler)
    compared = official_available()
    client = (
        official_client(base_url, enable_rate_limiting=False, max_retries=0) if compared else None
    )
    official = official_task() if compared else None
    trace = trace_dict()
    clock = time.perf_counter_ns
    extra = {"infinium": trace}

    def one_round(count: int) -> tuple[list[int], list[int]]:
        ours: list[int] = []
        theirs: list[int] = []
        with gc_off():
            for _ in range(count):
                start = clock()
                logger.info(_MESSAGE, extra=extra)
                ours.append(clock() - start)
                start = clock()
                if client is not None:
                    client.send_task_data(official)
                else:
                    time.sleep(0.002)  # about what a send takes: the trace goes out meanwhile
                theirs.append(clock() - start)
        return ours, theirs

    rounds: list[dict[str, float]] = []
    try:
        one_round(max(5, plan.blocked_traces // 10))  # warm-up: threads, connections
        for _ in range(plan.rounds):
            ours, theirs = one_round(plan.blocked_traces)
            ours.sort()
            theirs.sort()
            rounds.append(
                {
                    "ours_p50": percentile(ours, 50) / 1000,
                    "ours_p99": percentile(ours, 99) / 1000,
                    "theirs_p50": percentile(theirs, 50) / 1000,
                    "theirs_p99": percentile(theirs, 99) / 1000,
                }
            )
        if not exporter.flush(30.0):
            raise RuntimeError("figure 6: the exporter did not deliver within 30 s")
        submitted = exporter.stats().submitted
        _check_delivered(exporter, submitted, "figure 6")
    finally:
        logger.removeHandler(handler)
        handler.close()
        exporter.shutdown(5.0)
        if client is not None:
            client.close()
    rows = []
    for pct, target in (("p50", None), ("p99", 50.0)):
        ours_s = Summary.of([r[f"ours_{pct}"] for r in rounds])
        theirs_s = Summary.of([r[f"theirs_{pct}"] for r in rounds])
        ratio = Summary.of([r[f"theirs_{pct}"] / r[f"ours_{pct}"] for r in rounds])
        rows.append(
            Row(
                id=f"6 {pct}",
                figure=f"caller blocked per trace, {pct} (handler, sending)",
                ours=ours_s,
                baseline=theirs_s if compared else None,
                unit="µs/trace",
                value=ratio if compared else None,
                value_unit="x smaller",
                target="—" if target is None else f">= {target:g}x smaller",
                passed=None if target is None or not compared else ratio.median >= target,
                baseline_label="infinium-o2 send_task_data",
                note=(
                    f"{plan.blocked_traces} traces per side and round, one of each in turn: each "
                    "call runs cold, as between an application's tasks (figure 2 is the same "
                    "call in a hot loop)"
                    if compared
                    else OFFICIAL_MISSING
                ),
            )
        )
    return rows


# --- figure 7 ---------------------------------------------------------------------------------


def _exporter_rate(base_url: str, count: int, item: Any) -> float:
    exporter = Exporter(
        bench_settings(
            base_url,
            enable_rate_limiting=False,
            max_queue_size=count + 100,
            max_queue_bytes=2**36,
        )
    )
    try:
        warm = 8  # start the sender threads and open their connections
        for _ in range(warm):
            exporter.submit(item)
        exporter.flush(30.0)
        with gc_off():
            start = time.perf_counter()
            for _ in range(count):
                exporter.submit(item)
            done = exporter.flush(120.0)
            elapsed = time.perf_counter() - start
        if not done:
            raise RuntimeError("figure 7: the exporter did not deliver within 120 s")
        _check_delivered(exporter, count + warm, "figure 7")
        return count / elapsed
    finally:
        exporter.shutdown(5.0)


def _raw_rate(base_url: str, count: int, body: bytes) -> float:
    pool = urllib3.PoolManager(maxsize=1, retries=False)
    url = f"{base_url}/agents/{AGENT_ID}/trace"
    headers = {
        "x-agent-id": AGENT_ID,
        "x-agent-key": AGENT_SECRET,
        "User-Agent": "bench",
        "Content-Type": "application/json",
    }
    try:
        for _ in range(8):
            pool.request("POST", url, body=body, headers=headers)
        with gc_off():
            start = time.perf_counter()
            for _ in range(count):
                response = pool.request("POST", url, body=body, headers=headers)
                if response.status != 200:
                    raise RuntimeError(f"figure 7: raw POST answered {response.status}")
            elapsed = time.perf_counter() - start
        return count / elapsed
    finally:
        pool.clear()


def _official_rate(base_url: str, count: int) -> float:
    client = official_client(base_url, enable_rate_limiting=False, max_retries=0)
    task = official_task()
    try:
        for _ in range(8):
            client.send_task_data(task)
        with gc_off():
            start = time.perf_counter()
            for _ in range(count):
                client.send_task_data(task)
            elapsed = time.perf_counter() - start
        return count / elapsed
    finally:
        client.close()


def figure_7(plan: Plan, base_url: str, server_kind: str) -> list[Row]:
    """Delivered traces/s, rate limiting off: exporter vs raw urllib3 loop vs official client."""
    task = our_task()
    body = encode_task(task)
    count = plan.throughput_traces
    compared = official_available()
    sides = {
        "ours": lambda: _exporter_rate(base_url, count, task),
        "dicts": lambda: _exporter_rate(base_url, count, trace_dict()),
        "raw": lambda: _raw_rate(base_url, count, body),
    }
    if compared:
        # The official client is the slowest: fewer traces keep the round short.
        sides["official"] = lambda: _official_rate(base_url, max(10, count // 3))
    samples: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for index in range(plan.rounds):
        # Rotate who goes first: drift over the round hits every side alike.
        for name in order[index % len(order) :] + order[: index % len(order)]:
            samples[name].append(sides[name]())
    ours = Summary.of(samples["ours"])
    dicts = Summary.of(samples["dicts"])
    raw = Summary.of(samples["raw"])

    def ratio(a: str, b: str) -> Summary:
        return Summary.of([x / y for x, y in zip(samples[a], samples[b], strict=True)])

    vs_raw = ratio("ours", "raw")
    vs_official = ratio("ours", "official") if compared else None
    dicts_vs_raw = ratio("dicts", "raw")
    where = f"to {server_kind} on 127.0.0.1"
    return [
        Row(
            id="7a",
            figure=f"delivered traces/s, rate limiting off ({server_kind})",
            ours=ours,
            baseline=raw,
            unit="traces/s",
            value=vs_raw,
            value_unit="x",
            target=">= 0.85x",
            passed=vs_raw.median >= 0.85,
            baseline_label="raw urllib3 POST loop, 1 thread",
            note=f"{count} TaskData per round, 4 sender threads, {where}",
        ),
        Row(
            id="7b",
            figure=f"delivered traces/s, rate limiting off ({server_kind})",
            ours=ours,
            baseline=Summary.of(samples["official"]) if compared else None,
            unit="traces/s",
            value=vs_official,
            value_unit="x",
            target=">= 3x",
            passed=None if vs_official is None else vs_official.median >= 3.0,
            baseline_label="infinium-o2 send_task_data, sequential",
            note=f"{where}; official client with rate limiting off"
            if compared
            else OFFICIAL_MISSING,
        ),
        Row(
            id="7c",
            figure="7a with dicts submitted (the handler's path)",
            ours=dicts,
            baseline=raw,
            unit="traces/s",
            value=dicts_vs_raw,
            value_unit="x",
            target="—",
            passed=None,
            baseline_label="raw urllib3 POST loop, 1 thread",
            note="each dict read leniently (to_task) on a sender thread",
        ),
    ]


# --- figure 8 ---------------------------------------------------------------------------------


def figure_8(plan: Plan, base_url: str) -> list[Row]:
    """The default throttle: exactly 20 at once, then 10 req/s (within 2 %)."""
    sent: list[float] = []
    lock = threading.Lock()

    def on_result(task: Any, response: ApiResponse) -> None:
        if response.success:
            now = time.monotonic()
            with lock:
                sent.append(now)

    settings = bench_settings(base_url)  # rate limiting on, 10 req/s, burst 20: the defaults
    exporter = Exporter(settings, on_result=on_result)
    task = our_task()
    seconds = plan.throttle_seconds
    total = settings.burst_size + int(settings.requests_per_second * seconds) + 20
    try:
        for _ in range(total):
            exporter.submit(task)
        time.sleep(seconds + 0.05)
    finally:
        exporter.shutdown(0)
    with lock:
        times = sorted(sent)
    if len(times) <= settings.burst_size + 2:
        raise RuntimeError(f"figure 8: only {len(times)} traces were delivered")
    first = times[0]
    window = [t - first for t in times if t - first <= seconds]
    # The 21st token comes 1/rate after the first request: what answers before half of
    # that is the burst.
    burst = sum(1 for t in window if t < 0.5 / settings.requests_per_second)
    after = window[burst:]
    rate = (len(after) - 1) / (after[-1] - after[0]) if len(after) > 1 else 0.0
    gaps = [b - a for a, b in itertools.pairwise(after)]
    deviation = (rate / settings.requests_per_second - 1.0) * 100.0
    note = (
        f"{len(window)} sends in {seconds:g} s (on_result times); gaps "
        f"{min(gaps) * 1000:.1f}-{max(gaps) * 1000:.1f} ms, median "
        f"{statistics.median(gaps) * 1000:.1f} ms"
        if gaps
        else f"{len(window)} sends in {seconds:g} s"
    )
    return [
        Row(
            id="8 burst",
            figure="default throttle: initial burst",
            ours=Summary.of([burst]),
            baseline=Summary.of([settings.burst_size]),
            unit="requests",
            value=Summary.of([burst]),
            value_unit="requests",
            target="== 20",
            passed=burst == settings.burst_size,
            baseline_label="burst_size",
        ),
        Row(
            id="8 rate",
            figure="default throttle: rate after the burst",
            ours=Summary.of([rate]),
            baseline=Summary.of([settings.requests_per_second]),
            unit="req/s",
            value=Summary.of([deviation]),
            value_unit="% off",
            target="within ±2%",
            passed=abs(deviation) <= 2.0,
            baseline_label="requests_per_second",
            note=note,
        ),
    ]
