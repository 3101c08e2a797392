"""Fork safety: a forked child gets fresh locks, an empty queue, its own pool; nothing is duplicated."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any

import exporters
import pytest
from exporters import fork_and_report, trace

from infinium_logging.collector import LocalCollector
from infinium_logging.exporter import Exporter

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns that forking a process with threads may deadlock the child: the
    # point of these tests is that ours does not.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def make_exporter(collector: LocalCollector, **overrides: Any) -> Exporter:
    """:func:`exporters.make_exporter` with time for a forked child's exit to finish sending."""
    return exporters.make_exporter(collector, **{"shutdown_timeout": 10.0, **overrides})


def exporter_thread_count() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("infinium-exporter-"))


def test_forked_child_starts_empty_and_nothing_is_sent_twice(
    infinium_collector: LocalCollector,
) -> None:
    """Traces queued in the parent stay the parent's; the child's go once; all arrive once."""
    infinium_collector.latency = 0.01  # keep some of the parent's traces queued at the fork
    exporter = make_exporter(infinium_collector)
    try:
        for i in range(40):
            exporter.submit(trace(f"parent-{i}"))
        assert exporter.stats().queued > 0

        def child() -> dict[str, Any]:
            fresh = exporter.stats()
            threads_before = exporter_thread_count()
            for i in range(30):
                exporter.submit(trace(f"child-{i}"))
            threads_after = exporter_thread_count()
            delivered = exporter.flush(10)
            exporter.shutdown(5)
            final = exporter.stats()
            return {
                "fresh": [fresh.submitted, fresh.queued, fresh.in_flight, fresh.sent],
                "threads": [threads_before, threads_after],
                "delivered": delivered,
                "sent": final.sent,
            }

        report = fork_and_report(child)
        assert exporter.flush(10)
        parent = exporter.stats()
    finally:
        exporter.shutdown(5)
    assert report["fresh"] == [0, 0, 0, 0]
    assert report["threads"] == [0, 2]
    assert (report["delivered"], report["sent"]) == (True, 30)
    assert parent.sent == 40
    names = sorted(t.task.name for t in infinium_collector.traces())
    assert names == sorted([f"parent-{i}" for i in range(40)] + [f"child-{i}" for i in range(30)])


def test_fork_while_other_threads_hold_the_locks_does_not_deadlock(
    infinium_collector: LocalCollector,
) -> None:
    """Threads hammering submit() at the moment of the fork leave no lock held in the child."""
    # A small queue: most hammering submits are refused as queue_full, which takes the lock
    # all the same, without leaving thousands of traces to deliver afterwards.
    exporter = make_exporter(infinium_collector, max_queue_size=50)
    stop = threading.Event()

    def hammer(n: int) -> None:
        i = 0
        while not stop.is_set():
            exporter.submit(trace(f"hammer-{n}-{i}"))
            exporter.stats()
            i += 1

    hammers = [threading.Thread(target=hammer, args=(n,)) for n in range(3)]
    for thread in hammers:
        thread.start()
    try:
        reports = []
        for round_number in range(5):
            time.sleep(0.02)

            def child(round_number: int = round_number) -> dict[str, Any]:
                accepted = exporter.submit(trace(f"child-{round_number}"))
                flushed = exporter.flush(5)
                exporter.shutdown(2)
                return {"accepted": accepted, "flushed": flushed, "sent": exporter.stats().sent}

            reports.append(fork_and_report(child, timeout=15.0))
    finally:
        stop.set()
        for thread in hammers:
            thread.join()
        exporter.shutdown(1)
    assert reports == [{"accepted": True, "flushed": True, "sent": 1}] * 5
    names = [t.task.name for t in infinium_collector.traces()]
    assert sorted(n for n in names if n.startswith("child-")) == [f"child-{i}" for i in range(5)]
    assert len(names) == len(set(names))


def _mp_child(exporter: Exporter, index: int) -> None:
    # No flush, no shutdown: the exporter's exit hook must deliver before the child ends.
    for i in range(20):
        exporter.submit(trace(f"mp{index}-{i}"))


def test_multiprocessing_fork_children_deliver_everything_exactly_once(
    infinium_collector: LocalCollector,
) -> None:
    """Children made by multiprocessing (fork) deliver their traces at exit; none are doubled."""
    exporter = make_exporter(infinium_collector)
    try:
        for i in range(20):
            exporter.submit(trace(f"parent-{i}"))
        context = multiprocessing.get_context("fork")
        children = [context.Process(target=_mp_child, args=(exporter, n)) for n in range(3)]
        for process in children:
            process.start()
        for process in children:
            process.join(20)
        for i in range(20, 30):
            exporter.submit(trace(f"parent-{i}"))
        assert exporter.flush(10)
    finally:
        exporter.shutdown(5)
    assert [p.exitcode for p in children] == [0, 0, 0]
    expected = [f"parent-{i}" for i in range(30)]
    expected += [f"mp{n}-{i}" for n in range(3) for i in range(20)]
    names = sorted(t.task.name for t in infinium_collector.traces())
    assert names == sorted(expected)


def test_a_child_logs_into_a_task_whose_lock_a_parent_thread_held_at_fork() -> None:
    """A task entered before the fork, its lock held by another thread of the parent at that
    moment: the child's events inside the inherited task neither block nor are lost."""
    import logging  # noqa: PLC0415

    from sinks import ListSink  # noqa: PLC0415 - the tests' own helper

    from infinium_logging.handler import InfiniumHandler  # noqa: PLC0415
    from infinium_logging.tasks import current_task, task  # noqa: PLC0415

    sink = ListSink()
    logger = logging.getLogger("tests.fork.tasklock")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = InfiniumHandler(exporter=sink)
    logger.addHandler(handler)
    held, release = threading.Event(), threading.Event()
    try:
        with task("inherited", exporter=sink):
            state = current_task()._state  # type: ignore[union-attr]

            def hold() -> None:
                with state.lock:
                    held.set()
                    release.wait(10)

            holder = threading.Thread(target=hold)
            holder.start()
            held.wait(5)

            def child() -> dict[str, Any]:
                try:
                    raise ValueError("in the child")
                except ValueError:
                    logger.exception("child step")
                with state.lock:  # renewed: not the one the parent's thread holds
                    pass
                logger.info("tagged in the child", extra={"infinium": True})
                return {
                    "steps": len(state.events),
                    "errors": len(state.errors),
                    "traces": [t.name for t in sink.tasks],
                }

            try:
                report = fork_and_report(child, timeout=10)
            finally:
                release.set()
                holder.join()
    finally:
        logger.removeHandler(handler)
        handler.close()
    # The inherited task is the parent's: the child's events are not steps of its copy.
    assert report == {"steps": 0, "errors": 0, "traces": ["tagged in the child"]}
    assert [t.name for t in sink.tasks] == ["inherited"]


def _worker_logging(index: int) -> None:
    import logging  # noqa: PLC0415

    logging.getLogger("tests.fork.pool").info("worker %d", index, extra={"infinium": True})


def test_a_pool_forked_inside_a_task_sends_no_copy_of_it(
    infinium_collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers forked inside an open task log traces of their own; at their exit the task,
    open in their copy of the parent, is not sent again as abandoned: the parent sends it."""
    import logging  # noqa: PLC0415

    from infinium_logging.handler import InfiniumHandler  # noqa: PLC0415
    from infinium_logging.tasks import task  # noqa: PLC0415

    logger = logging.getLogger("tests.fork.pool")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    exporter = make_exporter(infinium_collector)
    handler = InfiniumHandler(exporter=exporter)
    logger.addHandler(handler)
    try:
        with task("fan out", exporter=exporter):
            logger.info("start")
            context = multiprocessing.get_context("fork")
            with context.Pool(2) as pool:
                pool.map(_worker_logging, range(4))
                pool.close()
                pool.join()
        assert exporter.flush(10)
    finally:
        logger.removeHandler(handler)
        handler.close()
        exporter.shutdown(5)
    names = sorted(t.task.name for t in infinium_collector.traces())
    assert names == ["fan out"] + [f"worker {i}" for i in range(4)]
