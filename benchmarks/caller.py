"""Figures 1-4 and 10: what one logging call costs the caller, next to the standard library's own.

Every side is timed in chunks of ``plan.calls`` calls, A and B interleaved in
each round (see :func:`benchmarks.timing.compare`).  Sides that queue traces
do so into an exporter held by the throttle (see
:func:`benchmarks.common.held_exporter`), replaced outside the timed loops
every few thousand traces so that memory stays flat and no trace is refused.
"""

from __future__ import annotations

import functools
import logging
import logging.handlers
import os
import queue
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from infinium_logging.exporter import Exporter
from infinium_logging.handler import InfiniumHandler
from infinium_logging.model import encode_task
from infinium_logging.processor import InfiniumProcessor
from infinium_logging.spool import Spool
from infinium_logging.tasks import task

from .common import Plan, bench_settings, held_exporter
from .realistic_trace import AGENT_ID, STEP_EVENTS, our_task, trace_dict
from .timing import Pair, Row, Summary, compare, loop, measure

__all__ = ["chain", "figure_1", "figure_2", "figure_3", "figure_4", "figure_10", "structlog_logger"]

UNTAGGED = 'log.info("Fetched the account record")'
TAGGED = 'log.info("Resolved billing dispute", extra={"infinium": TRACE})'
# The trace's 10 steps as 10 events; per-call times divide by 10.
IN_TASK = "for m, f in EVENTS:\n    log.info(m, extra=f)"
# A whole task: entered, its 10 steps logged, ended (the trace built later, on a sender).
WHOLE_TASK = (
    "with task('Resolve billing dispute', exporter=EX):\n"
    "    for m, f in EVENTS:\n"
    "        log.info(m, extra=f)"
)
SL_UNTAGGED = 'log.info("Fetched the account record", account_id=48213)'
SL_TAGGED = 'log.info("Resolved billing dispute", infinium=TRACE)'
SL_IN_TASK = "for m, f in EVENTS:\n    log.info(m, **f)"


def _namespace(log: Any) -> dict[str, Any]:
    return {"log": log, "TRACE": trace_dict(), "EVENTS": STEP_EVENTS}


def _logger(name: str) -> logging.Logger:
    logger = logging.getLogger(f"bench.{name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    return logger


@contextmanager
def _attached(logger: logging.Logger, handler: logging.Handler) -> Iterator[None]:
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def _us(ns: float) -> float:
    return ns / 1000.0


def _row(
    fig: str,
    title: str,
    pair: Pair,
    baseline_label: str,
    target: float,
    note: str = "",
) -> Row:
    ours = _scaled(pair.a)
    base = _scaled(pair.b)
    return Row(
        id=fig,
        figure=title,
        ours=ours,
        baseline=base,
        unit="µs/call",
        value=pair.ratio,
        value_unit="x",
        target=f"<= {target:g}x",
        passed=pair.ratio.median <= target,
        baseline_label=baseline_label,
        note=note,
    )


def _scaled(summary: Summary) -> Summary:
    return Summary.of([_us(v) for v in summary.samples])


# --- sides ---------------------------------------------------------------------------------


def _null_side(stmt: str, per: int = 1) -> Callable[[int], float]:
    logger = _logger("null")
    logger.addHandler(logging.NullHandler())
    run = loop(stmt, _namespace(logger))
    return lambda n: run(max(1, n // per)) / per


def _queue_side(stmt: str, per: int = 1) -> Callable[[int], float]:
    """``QueueHandler`` into a ``SimpleQueue``: the standard library's cheapest hand-off."""
    logger = _logger("queue")
    handler = logging.handlers.QueueHandler(queue.SimpleQueue())
    logger.addHandler(handler)
    run = loop(stmt, _namespace(logger))

    def side(n: int) -> float:
        handler.queue = queue.SimpleQueue()  # nobody consumes: start each chunk empty
        return run(max(1, n // per)) / per

    return side


class _Discard:
    """Where the baseline's ``task()`` traces go: nowhere (nothing records into them anyway)."""

    def submit(self, task: object) -> bool:
        return True


_DISCARD = _Discard()


class _Held:
    """Held exporters for one side, replaced (outside the timed loops) when one holds enough.

    Reusing an exporter over many chunks times the steady state a long-lived
    application sees (a fresh exporter's first few thousand traces also pay
    for new memory); replacing it now and then keeps memory flat.  With
    ``spool``, each exporter gets a new, empty spool directory: records left by
    the previous one would otherwise be replayed while the next is timed.
    """

    def __init__(self, base_url: str, *, spool: bool = False, limit: int = 5_000) -> None:
        self._base_url = base_url
        self._spool = spool
        self._limit = limit
        self._exporter: Exporter | None = None
        self._directory: str | None = None
        self._count = 0
        #: Handlers sending to the current exporter, closed with it: one left open would
        #: make the next figure's handler one of two, which costs it a duplicate check.
        self.handlers: list[tuple[logging.Logger, logging.Handler]] = []

    def take(self, n: int) -> tuple[Exporter, bool]:
        """An exporter with room for ``n`` more traces, and whether it is a new one."""
        fresh = self._exporter is None or self._count + n > self._limit
        if fresh:
            self.close()
            if self._spool:
                self._directory = tempfile.mkdtemp(prefix="infinium-bench-spool-")
                self._exporter = held_exporter(self._base_url, spool_dir=self._directory)
            else:
                self._exporter = held_exporter(self._base_url)
        self._count += n
        assert self._exporter is not None
        return self._exporter, fresh

    def attach(self, logger: logging.Logger, exporter: Exporter) -> None:
        """Make an ``InfiniumHandler`` on ``exporter`` the only handler of ``logger``."""
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        handler = InfiniumHandler(exporter=exporter)
        logger.addHandler(handler)
        self.handlers.append((logger, handler))

    def close(self) -> None:
        """Shut the current exporter down (dropping what it holds) and remove its spool."""
        for logger, handler in self.handlers:
            logger.removeHandler(handler)
            handler.close()
        self.handlers.clear()
        exporter, self._exporter = self._exporter, None
        if exporter is not None:
            exporter.shutdown(0)
        directory, self._directory = self._directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        self._count = 0


def _handler_side(
    held: _Held, stmt: str, *, per: int = 1, in_task: bool = False
) -> Callable[[int], float]:
    """An ``InfiniumHandler`` on a held exporter (see :class:`_Held`), on a logger of its own."""
    logger = _logger(f"infinium.{id(held):x}")
    run = loop(stmt, _namespace(logger))

    def side(n: int) -> float:
        exporter, fresh = held.take(n + 100)
        if fresh:
            held.attach(logger, exporter)
            # Warm-up: starts the sender threads (one trace leaves, the others wait).
            run(max(1, 50 // per))
        if in_task:
            with task("Benchmark task", exporter=exporter, max_steps=100_000):
                return run(max(1, n // per)) / per
        return run(max(1, n // per)) / per

    return side


def _whole_task_side(held: _Held) -> Callable[[int], float]:
    """Whole ``task()`` blocks of the 10 step events, timed per event (see WHOLE_TASK)."""
    logger = _logger(f"infinium.task.{id(held):x}")
    namespace = {**_namespace(logger), "task": task, "EX": None}
    run = loop(WHOLE_TASK, namespace)
    per = len(STEP_EVENTS)

    def side(n: int) -> float:
        tasks = max(1, n // per)
        exporter, fresh = held.take(tasks + 100)
        if fresh:
            held.attach(logger, exporter)
            namespace["EX"] = exporter  # the timed loop reads its globals from here
            run(5)  # warm-up: starts the sender threads
        return run(tasks) / per

    return side


# --- figures 1-3: stdlib logging ----------------------------------------------------------------


def _held_pair(
    plan: Plan,
    base_url: str,
    ours: Callable[[_Held], Callable[[int], float]],
    theirs: Callable[[int], float],
    factor: int = 1,
) -> Pair:
    """``ours`` (a side logging to an exporter the throttle holds) against ``theirs``, timed
    as every caller-side figure is: ``plan.calls * factor`` calls a measurement."""
    held = _Held(base_url)
    try:
        return compare(
            ours(held),
            theirs,
            n=plan.calls * factor,
            rounds=plan.rounds,
            chunks=plan.chunks,
            warmup=plan.calls // 4,
        )
    finally:
        held.close()


def figure_1(plan: Plan, base_url: str) -> list[Row]:
    """Untagged ``logger.info`` outside any task: InfiniumHandler vs NullHandler."""
    exporter = held_exporter(base_url)  # never receives anything: nothing is tagged
    logger = _logger("infinium1")
    ours = loop(UNTAGGED, _namespace(logger))
    try:
        with _attached(logger, InfiniumHandler(exporter=exporter)):
            pair = compare(
                ours,
                _null_side(UNTAGGED),
                n=plan.calls * 5,
                rounds=plan.rounds,
                chunks=plan.chunks,
                warmup=plan.calls,
            )
    finally:
        exporter.shutdown(0)
    return [
        _row("1", "logger.info, untagged, outside a task", pair, "NullHandler", 1.15),
    ]


def figure_2(plan: Plan, base_url: str) -> tuple[list[Row], Pair]:
    """Tagged ``logger.info`` (the trace's dict): InfiniumHandler vs QueueHandler."""
    pair = _held_pair(plan, base_url, lambda held: _handler_side(held, TAGGED), _queue_side(TAGGED))
    row = _row(
        "2",
        "logger.info, tagged (the trace as a dict)",
        pair,
        "QueueHandler(SimpleQueue)",
        0.75,
    )
    return [row], pair


def figure_3(plan: Plan, base_url: str) -> list[Row]:
    """``logger.info`` inside ``task()`` (each event a step): InfiniumHandler vs QueueHandler."""
    events = len(STEP_EVENTS)
    pair = _held_pair(
        plan,
        base_url,
        lambda held: _handler_side(held, IN_TASK, per=events, in_task=True),
        _queue_side(IN_TASK, per=events),
    )
    whole_pair = _held_pair(plan, base_url, _whole_task_side, _queue_side(IN_TASK, per=events))
    return [
        _row(
            "3",
            "logger.info inside task() (a step)",
            pair,
            "QueueHandler(SimpleQueue)",
            0.75,
            note="the trace's 10 steps as events (LLM/tool calls, previews)",
        ),
        _row(
            "3b",
            "a whole task(): entered, 10 steps logged, ended (per step)",
            whole_pair,
            "QueueHandler(SimpleQueue), the 10 events",
            1.0,
            note="the task's end on the caller's thread included; its trace is built later",
        ),
    ]


# --- figure 4: structlog ------------------------------------------------------------------------


def chain() -> list[Any]:
    """The structlog chain of figure 4, without the processor."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]


def structlog_logger(processors: list[Any]) -> Any:
    """A bound structlog logger running ``processors`` into a ``ReturnLogger``."""
    # The chain ends in a dict handed to ReturnLogger: no renderer, so that the
    # processor's cost is compared with the chain alone (a renderer would dilute it).
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        context_class=dict,
    ).bind()


def _structlog_side(
    held: _Held | None, stmt: str, *, per: int = 1, in_task: bool = False
) -> Callable[[int], float]:
    """The chain, with the processor on a held exporter, or (``held=None``) without it."""
    namespace = _namespace(structlog_logger(chain()))
    run = loop(stmt, namespace)

    def side(n: int) -> float:
        exporter: Any = _DISCARD
        if held is not None:
            exporter, fresh = held.take(n + 100)
            if fresh:
                processor = InfiniumProcessor(exporter=exporter)
                namespace["log"] = structlog_logger([*chain(), processor])
                run(max(1, 50 // per))
        if in_task:
            with task("Benchmark task", exporter=exporter, max_steps=100_000):
                return run(max(1, n // per)) / per
        return run(max(1, n // per)) / per

    return side


def figure_4(plan: Plan, base_url: str) -> list[Row]:
    """structlog chain + InfiniumProcessor vs the same chain: untagged, tagged, in a task."""
    rows = []
    # (id, title, statement, events per statement, in a task, chunk size factor, target)
    cases = (
        ("4a", "structlog + processor, untagged", SL_UNTAGGED, 1, False, 5, 1.05),
        ("4b", "structlog + processor, tagged", SL_TAGGED, 1, False, 1, 1.5),
        ("4c", "structlog + processor, in task()", SL_IN_TASK, len(STEP_EVENTS), True, 1, 1.5),
    )
    for fig, title, stmt, per, in_task, factor, target in cases:
        pair = _held_pair(
            plan,
            base_url,
            functools.partial(_structlog_side, stmt=stmt, per=per, in_task=in_task),
            _structlog_side(None, stmt, per=per, in_task=in_task),
            factor,
        )
        rows.append(
            _row(
                fig,
                title,
                pair,
                "merge_contextvars, add_log_level, TimeStamper",
                target,
            )
        )
    return rows


# --- figure 10: the spool on the caller's thread ---------------------------------------------


def spool_integrated(base_url: str) -> bool:
    """Whether the exporter writes submitted traces to its spool (``spool_dir``)."""
    with tempfile.TemporaryDirectory(prefix="infinium-bench-spool-") as directory:
        exporter = Exporter(bench_settings(base_url, spool_dir=directory))
        try:
            exporter.submit(our_task())
        finally:
            exporter.shutdown(0)
        return any(files for _, _, files in os.walk(directory))


def figure_10(plan: Plan, base_url: str, figure_2_pair: Pair | None) -> list[Row]:
    """The spool write per trace on the caller's thread, on top of figure 2."""
    with tempfile.TemporaryDirectory(prefix="infinium-bench-spool-") as directory:
        if spool_integrated(base_url):
            spooled, plain = _Held(base_url, spool=True), _Held(base_url)
            try:
                pair = compare(
                    _handler_side(spooled, TAGGED),
                    _handler_side(plain, TAGGED),
                    n=plan.calls,
                    rounds=plan.rounds,
                    chunks=plan.chunks,
                    warmup=plan.calls // 4,
                )
            finally:
                spooled.close()
                plain.close()
            deltas = Summary.of(
                [_us(a - b) for a, b in zip(pair.a.samples, pair.b.samples, strict=True)]
            )
            return [
                Row(
                    id="10",
                    figure="tagged logger.info with spool_dir set",
                    ours=_scaled(pair.a),
                    baseline=_scaled(pair.b),
                    unit="µs/call",
                    value=deltas,
                    value_unit="µs",
                    target="<= +30 µs",
                    passed=deltas.median <= 30.0,
                    baseline_label="figure 2 (no spool)",
                    note="difference measured within each round",
                )
            ]
        # Not wired into the exporter yet: time what it will add on the caller's thread,
        # encoding the trace and appending the record, next to figure 2's call.
        spool = Spool(directory, AGENT_ID)
        try:
            namespace = {"spool": spool, "encode": encode_task, "TASK": our_task()}
            append = loop("spool.append(encode(TASK))", namespace)
            ours = measure(
                append, n=plan.calls, rounds=plan.rounds, chunks=plan.chunks, warmup=plan.calls // 4
            )
        finally:
            spool.close()
        added = _scaled(ours)
        base = _scaled(figure_2_pair.a) if figure_2_pair is not None else None
        return [
            Row(
                id="10",
                figure="spool write per trace (caller's thread)",
                ours=added,
                baseline=base,
                unit="µs/call",
                value=added,
                value_unit="µs",
                target="<= +30 µs",
                passed=added.median <= 30.0,
                baseline_label="figure 2 (no spool)",
                note=(
                    "spool not yet wired into the exporter: Spool.append(encode_task(trace)) "
                    "timed directly"
                ),
            )
        ]
