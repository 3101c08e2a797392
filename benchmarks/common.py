"""What every figure shares: the run plan (full or quick), benchmark settings, held exporters."""

from __future__ import annotations

import dataclasses
from typing import Any

from infinium_logging.exporter import Exporter
from infinium_logging.settings import Settings

from .realistic_trace import AGENT_ID, AGENT_SECRET

__all__ = ["Plan", "bench_settings", "held_exporter"]


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or the quick run CI uses to keep the harness alive."""

    quick: bool
    rounds: int
    #: Calls per timed chunk of the micro figures (1-4, 10).
    calls: int
    #: Timed chunks per round and side (the fastest is the round's value).
    chunks: int
    #: encode_task calls per chunk (figure 5).
    encodes: int
    #: Traces per side and round for the blocking-time percentiles (figure 6).
    blocked_traces: int
    #: Traces per side and round for throughput (figure 7).
    throughput_traces: int
    #: Seconds the default throttle is observed for (figure 8).
    throttle_seconds: float
    #: Traces submitted with the server down, and the byte bound then (figure 9).
    memory_traces: int
    memory_queue_bytes: int

    @classmethod
    def full(cls, rounds: int | None = None) -> Plan:
        """The real measurement (a few minutes)."""
        return cls(
            quick=False,
            rounds=rounds or 7,
            calls=1_000,
            chunks=8,
            encodes=500,
            blocked_traces=400,
            throughput_traces=1_500,
            throttle_seconds=10.0,
            memory_traces=100_000,
            memory_queue_bytes=64 * 1024 * 1024,
        )

    @classmethod
    def quick_run(cls, rounds: int | None = None) -> Plan:
        """Same code paths, a few seconds in total: checks that it runs, not the numbers."""
        return cls(
            quick=True,
            rounds=rounds or 2,
            calls=200,
            chunks=2,
            encodes=100,
            blocked_traces=30,
            throughput_traces=60,
            throttle_seconds=1.2,
            memory_traces=2_000,
            memory_queue_bytes=2 * 1024 * 1024,
        )


def bench_settings(base_url: str, **overrides: Any) -> Settings:
    """Benchmark exporter settings, all explicit: no ``INFINIUM_*`` variable changes a figure."""
    values: dict[str, Any] = {
        "agent_id": AGENT_ID,
        "agent_secret": AGENT_SECRET,
        "base_url": base_url,
        "timeout": 10.0,
        "shutdown_timeout": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


def held_exporter(base_url: str, **overrides: Any) -> Exporter:
    """An exporter whose sender threads are held by the throttle after the first trace.

    The caller-side figures time only what ``logger.info`` costs the caller:
    the baseline (a ``QueueHandler`` into a ``SimpleQueue``) has no consumer
    either.  One token, then one every 1,000 s: the buffer keeps every trace
    (bounds raised so that none is refused, which would be cheaper) until
    ``shutdown(0)`` drops them.  What background delivery costs the caller
    is figure 6.
    """
    settings = bench_settings(
        base_url,
        enable_rate_limiting=True,
        requests_per_second=0.001,
        burst_size=1,
        max_queue_size=10_000_000,
        max_queue_bytes=2**40,
        **overrides,
    )
    return Exporter(settings)
