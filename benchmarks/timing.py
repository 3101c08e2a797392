"""Measuring: inlined perf_counter_ns loops with GC off, interleaved A/B rounds, summaries, rows."""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
import timeit
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = [
    "Pair",
    "Row",
    "Summary",
    "compare",
    "gc_off",
    "loop",
    "measure",
    "percentile",
]


@dataclasses.dataclass(frozen=True)
class Summary:
    """Median and spread of one quantity over the rounds."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarise ``values`` (at least one)."""
        ordered = sorted(values)
        return cls(
            median=statistics.median(ordered),
            q1=percentile(ordered, 25),
            q3=percentile(ordered, 75),
            min=ordered[0],
            max=ordered[-1],
            samples=tuple(values),
        )

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self) | {"samples": list(self.samples)}


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of sorted values, linearly interpolated."""
    if len(ordered) == 1:
        return float(ordered[0])
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@contextmanager
def gc_off() -> Iterator[None]:
    """Disable the cyclic GC for a timed block (as ``timeit`` does), collecting first."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def loop(stmt: str, namespace: dict[str, Any]) -> Callable[[int], float]:
    """A function ``run(n) -> ns per execution`` of ``stmt`` inlined in a perf_counter_ns loop.

    ``timeit`` compiles the statement into the loop body, so the only overhead
    is the ``for`` itself (a few ns), not a Python call per iteration; it also
    turns the cyclic GC off while it runs.
    """
    timer = timeit.Timer(stmt, globals=namespace, timer=time.perf_counter_ns)

    def run(n: int) -> float:
        return float(timer.timeit(n)) / n

    return run


@dataclasses.dataclass(frozen=True)
class Pair:
    """Per-round values of A and B and their per-round ratio A/B."""

    a: Summary
    b: Summary
    ratio: Summary


def compare(
    a: Callable[[int], float],
    b: Callable[[int], float],
    *,
    n: int,
    rounds: int,
    chunks: int = 4,
    warmup: int = 0,
) -> Pair:
    """Time A and B in the same rounds, interleaved, and return per-round values and ratios.

    Each round runs ``chunks`` measurements of ``n`` calls of each side,
    alternating which goes first (ABBA...), and keeps each side's fastest
    chunk: on a shared machine noise only ever adds time (another process
    takes the core for a while), so the fastest chunk is the closest to what
    the code costs, and drift over the round hits both sides alike.  The ratio
    is taken within the round, never across rounds.
    """
    if warmup:
        a(warmup)
        b(warmup)
    a_values: list[float] = []
    b_values: list[float] = []
    ratios: list[float] = []
    for _ in range(rounds):
        a_chunks: list[float] = []
        b_chunks: list[float] = []
        for chunk in range(chunks):
            if chunk % 2 == 0:
                a_chunks.append(a(n))
                b_chunks.append(b(n))
            else:
                b_chunks.append(b(n))
                a_chunks.append(a(n))
        a_round = min(a_chunks)
        b_round = min(b_chunks)
        a_values.append(a_round)
        b_values.append(b_round)
        ratios.append(a_round / b_round)
    return Pair(Summary.of(a_values), Summary.of(b_values), Summary.of(ratios))


def measure(
    side: Callable[[int], float], *, n: int, rounds: int, chunks: int = 4, warmup: int = 0
) -> Summary:
    """One side alone: per round, the fastest of ``chunks`` measurements of ``n`` calls."""
    if warmup:
        side(warmup)
    return Summary.of([min(side(n) for _ in range(chunks)) for _ in range(rounds)])


@dataclasses.dataclass
class Row:
    """One line of the results table.

    ``ours`` and ``baseline`` are in ``unit``; ``value`` is what the target is
    checked against (a ratio, a difference, a count), in ``value_unit``.
    """

    id: str
    figure: str
    ours: Summary | None
    baseline: Summary | None
    unit: str
    value: Summary | None
    value_unit: str
    target: str
    passed: bool | None
    baseline_label: str = ""
    note: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "figure": self.figure,
            "baseline_label": self.baseline_label,
            "unit": self.unit,
            "ours": None if self.ours is None else self.ours.as_json(),
            "baseline": None if self.baseline is None else self.baseline.as_json(),
            "value": None if self.value is None else self.value.as_json(),
            "value_unit": self.value_unit,
            "target": self.target,
            "passed": self.passed,
            "note": self.note,
            "extra": self.extra,
        }
