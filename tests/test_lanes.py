"""One exporter, two endpoints: Infinium and an Infino dataset as lanes of one Exporter.

Each trace is built, redacted, sampled and spooled once; each endpoint has its own queue,
throttle and retries, so an outage of one never holds the other back; with a spool, a
trace is settled endpoint by endpoint, and what one endpoint missed reaches it (and only
it) at the next start."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exporters import FAST, balanced, fork_and_report, settings_for, trace, wait_until
from infino_server import ACCESS_KEY, SECRET_KEY, InfinoServer, fast_settings, running

from infinium_logging.collector import LocalCollector
from infinium_logging.destination_infinium import InfiniumDestination
from infinium_logging.exporter import Exporter
from infinium_logging.infino import infino_destinations
from infinium_logging.infino_settings import InfinoSettings
from infinium_logging.lanes import lanes_of
from infinium_logging.model import ApiResponse, TaskData
from infinium_logging.settings import Settings
from infinium_logging.spool import survey

DATASET = "infinium-traces"
REPO_ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.fixture
def infino() -> Iterator[InfinoServer]:
    """A local Infino endpoint."""
    yield from running()


def infino_settings(infino: InfinoServer, **overrides: Any) -> InfinoSettings:
    """Infino settings aimed at ``infino``: fast retries, batches that go at once."""
    return InfinoSettings(
        **fast_settings(infino, **{"linger": 0.0, "shutdown_timeout": 2.0, **overrides})
    )


def both(
    collector: LocalCollector,
    infino: InfinoServer,
    spool_dir: Path | None = None,
    infino_overrides: dict[str, Any] | None = None,
    **overrides: Any,
) -> Exporter:
    """One Exporter delivering to ``collector`` (Infinium) and to ``infino``'s dataset."""
    on_result = overrides.pop("on_result", None)
    settings = settings_for(collector, spool_dir, **overrides)
    infino_side = infino_destinations(infino_settings(infino, **(infino_overrides or {})))
    return Exporter(
        settings,
        destinations=[InfiniumDestination(settings), *infino_side],
        on_result=on_result,
    )


def sent_is(exporter: Exporter, count: int) -> bool:
    """Whether ``exporter`` counts ``count`` traces sent."""
    return exporter.stats().sent == count


def stored_at_least(infino: InfinoServer, count: int) -> bool:
    """Whether ``infino`` stored ``count`` traces or more."""
    return len(infino.documents(DATASET)) >= count


def names_at(infino: InfinoServer) -> list[str]:
    """The names of the traces stored in the Infino dataset, sorted."""
    return sorted(doc["name"] for doc in infino.documents(DATASET))


def test_destinations_are_grouped_by_endpoint(infino: InfinoServer) -> None:
    """Infinium's destination is the first lane; Infino's trace and steps datasets, which
    share their endpoint's settings, are one lane after it."""
    collector_settings = Settings(**FAST, base_url="http://127.0.0.1:9")
    infino_side = infino_destinations(infino_settings(infino, steps_dataset="steps"))
    first = InfiniumDestination(collector_settings)
    groups = lanes_of(collector_settings, [first, *infino_side])
    assert [[d.name for d in members] for _, members in groups] == [
        ["infinium"],
        ["infino", "infino-steps"],
    ]
    assert groups[0][0] is collector_settings
    assert groups[1][0].base_url == infino.url


def test_two_endpoints_whose_destinations_share_a_name_are_refused(infino: InfinoServer) -> None:
    """Two endpoints' first destinations named alike would settle each other's part of a
    spool record: the exporter is not made, and the error names them."""
    here = infino_destinations(infino_settings(infino))
    there = infino_destinations(infino_settings(infino, timeout=3.0))  # another endpoint
    settings = Settings(**FAST, base_url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="'infino' and 'infino'"):
        Exporter(settings, destinations=[InfiniumDestination(settings), *here, *there])


def test_every_trace_reaches_both_endpoints(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """Submitted once, each trace is stored by Infinium and by Infino; flush waits for both;
    the stats count each endpoint apart, and the top level as Infinium's."""
    exporter = both(infinium_collector, infino)
    for number in range(12):
        assert exporter.submit(trace(f"t{number:02}"))
    assert exporter.flush(10.0)
    expected = [f"t{number:02}" for number in range(12)]
    assert sorted(t.task.name for t in infinium_collector.traces()) == expected
    assert names_at(infino) == expected
    stats = exporter.stats()
    assert balanced(stats) and stats.sent == 12
    assert stats.destinations["infinium"].sent == 12
    assert stats.destinations["infino"].sent == 12
    assert stats.destinations["infino"].queued == 0
    assert exporter.shutdown(5.0)


_SNIPPET = """
from infinium_logging import Exporter, InfinoSettings, Settings
from infinium_logging.destination_infinium import InfiniumDestination
from infinium_logging.infino import infino_destinations

settings = Settings(agent_id={agent_id!r}, agent_secret={secret!r}, base_url={base_url!r})
infino = InfinoSettings(endpoint={endpoint!r}, access_key={access!r}, secret_key={key!r})
exporter = Exporter(
    settings, destinations=[InfiniumDestination(settings), *infino_destinations(infino)]
)
exporter.submit({{"name": "snippet", "description": "d", "duration": 1.0}})
print("FLUSHED", exporter.flush(10.0), flush=True)
input()  # the parent counts what arrived before this process shuts down
"""


def test_docs_snippet_flush_returns_once_both_endpoints_have_the_trace(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """docs/infino.md's exporter for both endpoints, in a fresh process: when its flush()
    says True, the trace is at Infinium and at Infino (whose batch would otherwise wait a
    second for more), not only at the first endpoint."""
    script = _SNIPPET.format(
        agent_id=FAST["agent_id"],
        secret=FAST["agent_secret"],
        base_url=infinium_collector.base_url,
        endpoint=infino.url,
        access=ACCESS_KEY,
        key=SECRET_KEY,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for number in range(1, 4):
        child = subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        line = child.stdout.readline()
        at_infinium = len(infinium_collector.traces())
        at_infino = len(infino.documents(DATASET))
        _, errors = child.communicate("\n", timeout=30)
        assert line.strip() == "FLUSHED True", errors
        assert at_infinium == number
        assert at_infino == number, "flush() returned before Infino had the trace"


def test_an_infino_outage_never_holds_infinium_back(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """Infino down and its lane full: Infinium still gets every trace at once, the first
    queue never fills, and Infino's lane counts what it could not hold."""
    infino.down = True
    exporter = both(
        infinium_collector,
        infino,
        max_queue_size=5,
        infino_overrides={"max_queue_size": 3, "max_retries": 100, "max_elapsed": 600.0},
    )
    try:
        for number in range(40):
            exporter.submit(trace(f"t{number:02}"))
            if number % 5 == 4:
                # The exporter takes 5 at a time: Infinium must get them although Infino
                # answers nothing.
                assert wait_until(functools.partial(sent_is, exporter, number + 1), timeout=10.0)
        assert wait_until(lambda: exporter.stats().sent == 40, timeout=10.0)
        stats = exporter.stats()
        assert stats.dropped_total == 0 and stats.sent == 40
        infino_stats = stats.destinations["infino"]
        assert infino_stats.dropped.get("queue_full", 0) >= 30, infino_stats
        assert infino_stats.retries >= 1 and infino_stats.sent == 0
        assert infino_stats.last_error is not None
    finally:
        infino.down = False
        exporter.shutdown(5.0)
    # What its lane held is delivered once Infino answers again.
    assert (
        len(names_at(infino)) + exporter.stats().destinations["infino"].dropped.get("queue_full", 0)
        == 40
    )


def test_an_infinium_outage_never_holds_infino_back(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """Infinium refusing connections: Infino still gets every trace while Infinium's
    retries go on."""
    infinium_collector.set_down()
    exporter = both(infinium_collector, infino, max_retries=100, max_elapsed=600.0)
    try:
        for number in range(6):
            assert exporter.submit(trace(f"t{number}"))
        assert wait_until(lambda: len(names_at(infino)) == 6, timeout=10.0)
        assert exporter.stats().sent == 0
    finally:
        infinium_collector.set_up()
    assert exporter.flush(10.0)
    assert exporter.stats().sent == 6
    exporter.shutdown(5.0)


def test_sampling_keeps_the_same_traces_everywhere(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """The sample is drawn once per trace: both endpoints hold the same traces."""
    exporter = both(infinium_collector, infino, sample_rate=0.5)
    for number in range(60):
        exporter.submit(trace(f"t{number:02}"))
    assert exporter.flush(10.0)
    at_infinium = sorted(t.task.name for t in infinium_collector.traces())
    assert 0 < len(at_infinium) < 60
    assert names_at(infino) == at_infinium
    assert exporter.stats().sampled_out == 60 - len(at_infinium)
    exporter.shutdown(5.0)


def test_each_endpoints_secret_is_kept_from_the_other(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """A trace quoting Infino's secret key or Infinium's agent secret reaches neither
    endpoint with it: the one redaction covers both."""
    exporter = both(infinium_collector, infino)
    secret = settings_for(infinium_collector).agent_secret
    text = f"keys: {SECRET_KEY} and {secret}"
    assert exporter.submit(trace("leaky", description=text))
    assert exporter.flush(10.0)
    stored = infinium_collector.traces()[0].task.description
    assert SECRET_KEY not in stored and secret not in stored
    (row,) = infino.documents(DATASET)
    assert SECRET_KEY not in str(row) and secret not in str(row)
    exporter.shutdown(5.0)


def test_on_result_hears_infiniums_answers(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """``on_result`` is told the first endpoint's answer for each trace, once."""
    told: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def on_result(task: TaskData, response: ApiResponse) -> None:
        with lock:
            told.append((task.name, response.success))

    exporter = both(infinium_collector, infino, on_result=on_result)
    for number in range(3):
        exporter.submit(trace(f"t{number}"))
    assert exporter.flush(10.0)
    assert sorted(told) == [("t0", True), ("t1", True), ("t2", True)]
    exporter.shutdown(5.0)


def test_shutdown_delivers_to_both_within_its_deadline(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """Shutdown without a flush: what was submitted reaches both endpoints, and the lanes'
    threads are gone within the deadline."""
    exporter = both(infinium_collector, infino, infino_overrides={"linger": 60.0})
    for number in range(5):
        exporter.submit(trace(f"t{number}"))
    assert exporter.shutdown(5.0)
    assert len(infinium_collector.traces()) == 5
    assert len(names_at(infino)) == 5
    assert not exporter.submit(trace("late"))
    assert wait_until(
        lambda: not any(t.name.startswith("infinium-infino") for t in threading.enumerate())
    )


def test_shutdown_counts_what_infino_could_not_take(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """Infino down until the deadline: its lane counts its traces as lost to ``shutdown``,
    Infinium's side loses nothing."""
    infino.down = True
    exporter = both(
        infinium_collector, infino, infino_overrides={"max_retries": 100, "max_elapsed": 600.0}
    )
    for number in range(4):
        exporter.submit(trace(f"t{number}"))
    assert exporter.flush(0.5) is False
    assert exporter.shutdown(0.5) is False
    stats = exporter.stats()
    assert stats.sent == 4 and stats.dropped_total == 0
    assert stats.destinations["infino"].dropped == {"shutdown": 4}


def test_a_trace_infino_missed_reaches_it_alone_at_the_next_start(
    infinium_collector: LocalCollector, infino: InfinoServer, tmp_path: Path
) -> None:
    """With a spool: Infino down until shutdown, its traces stay in the spool for it; the
    next exporter on that spool sends them to Infino only, never to Infinium again."""
    infino.down = True
    first = both(
        infinium_collector,
        infino,
        tmp_path,
        infino_overrides={"max_retries": 100, "max_elapsed": 600.0},
    )
    for number in range(5):
        assert first.submit(trace(f"t{number}"))
    assert wait_until(lambda: first.stats().sent == 5, timeout=10.0)
    first.shutdown(0.3)
    left = first.stats().destinations["infino"]
    assert left.spooled == 5 and left.dropped == {} and left.sent == 0
    assert [s.records for s in survey(str(tmp_path))] == [5]

    infino.down = False
    second = both(infinium_collector, infino, tmp_path)
    assert wait_until(lambda: len(names_at(infino)) == 5, timeout=10.0)
    assert second.flush(10.0)
    assert names_at(infino) == [f"t{number}" for number in range(5)]
    assert len(infinium_collector.traces()) == 5  # none sent to Infinium twice
    stats = second.stats()
    assert stats.adopted == 5 and stats.sent == 5 and balanced(stats)
    assert stats.destinations["infinium"].sent == 0
    assert stats.destinations["infino"].sent == 5
    assert second.shutdown(5.0)
    assert sum(s.records for s in survey(str(tmp_path))) == 0


def test_a_trace_infinium_keeps_for_later_is_not_sent_to_infino_again(
    infinium_collector: LocalCollector, infino: InfinoServer, tmp_path: Path
) -> None:
    """With a spool: Infinium failing, its traces are kept and taken up again until it
    answers; Infino, which stored them the first time, gets each once."""
    infinium_collector.set_down()
    exporter = both(infinium_collector, infino, tmp_path, max_retries=0)
    for number in range(4):
        assert exporter.submit(trace(f"t{number}"))
    assert wait_until(lambda: len(names_at(infino)) == 4, timeout=10.0)
    assert wait_until(lambda: exporter.stats().spooled >= 1, timeout=10.0)
    infinium_collector.set_up()
    assert wait_until(lambda: exporter.stats().sent == 4, timeout=20.0)
    assert exporter.flush(10.0)
    assert sorted(t.task.name for t in infinium_collector.traces()) == [
        f"t{number}" for number in range(4)
    ]
    assert set(infino.writes.values()) == {1}
    stats = exporter.stats()
    assert stats.destinations["infino"].sent == 4 and balanced(stats)
    assert exporter.shutdown(5.0)
    assert sum(s.records for s in survey(str(tmp_path))) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_has_lanes_of_its_own(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """After fork, the child's lanes start empty with threads of their own; its traces reach
    both endpoints once, and the parent's stay the parent's."""
    exporter = both(infinium_collector, infino, shutdown_timeout=10.0)
    try:
        for number in range(3):
            exporter.submit(trace(f"parent-{number}"))
        assert exporter.flush(10.0)

        def child() -> dict[str, Any]:
            fresh = exporter.stats().destinations["infino"]
            for number in range(4):
                exporter.submit(trace(f"child-{number}"))
            delivered = exporter.flush(10.0)
            exporter.shutdown(5.0)
            final = exporter.stats()
            return {
                "fresh": [fresh.sent, fresh.queued],
                "delivered": delivered,
                "sent": [final.sent, final.destinations["infino"].sent],
            }

        report = fork_and_report(child)
    finally:
        exporter.shutdown(5.0)
    assert report == {"fresh": [0, 0], "delivered": True, "sent": [4, 4]}
    expected = sorted([f"parent-{n}" for n in range(3)] + [f"child-{n}" for n in range(4)])
    assert sorted(t.task.name for t in infinium_collector.traces()) == expected
    assert names_at(infino) == expected


def test_a_process_that_just_exits_delivers_to_both(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """A script that logs and returns, with Infinium and Infino configured by the
    environment: interpreter exit delivers its traces to both endpoints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINIUM_")}
    env.update(
        PYTHONPATH=REPO_ROOT + os.pathsep + env.get("PYTHONPATH", ""),
        INFINIUM_BASE_URL=infinium_collector.base_url,
        INFINIUM_AGENT_ID=FAST["agent_id"],
        INFINIUM_AGENT_SECRET=FAST["agent_secret"],
        INFINIUM_INFINO_ENDPOINT=infino.url,
        INFINIUM_INFINO_ACCESS_KEY=ACCESS_KEY,
        INFINIUM_INFINO_SECRET_KEY=SECRET_KEY,
    )
    script = textwrap.dedent(
        """
        import logging
        from infinium_logging import InfiniumHandler
        log = logging.getLogger("agent")
        log.setLevel(logging.INFO)
        log.addHandler(InfiniumHandler())
        for number in range(5):
            log.info("done", extra={"infinium": {"name": f"exit-{number}"}})
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    expected = [f"exit-{number}" for number in range(5)]
    assert sorted(t.task.name for t in infinium_collector.traces()) == expected
    assert names_at(infino) == expected


def test_shutdown_right_after_submit_delivers_to_infino_while_infinium_is_down(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """shutdown() at once, Infinium down: Infino's lane gets threads of its own and delivers
    beside Infinium's retries, not after them; what Infinium could not take is counted."""
    infinium_collector.set_down()
    exporter = both(infinium_collector, infino, max_retries=100, max_elapsed=600.0)
    for number in range(3):
        exporter.submit(trace(f"t{number}"))
    assert exporter.shutdown(1.5) is False  # Infinium's three are lost to the deadline
    assert names_at(infino) == ["t0", "t1", "t2"]
    stats = exporter.stats()
    assert stats.destinations["infino"].sent == 3 and stats.dropped["shutdown"] == 3
    assert balanced(stats)


def test_an_infinium_outage_never_takes_infinos_room(
    infinium_collector: LocalCollector, infino: InfinoServer
) -> None:
    """Infinium down and its lane full of retries: the traces it holds do not count against
    the buffer every trace waits in first, so submit keeps taking traces and Infino gets
    every one."""
    infinium_collector.set_down()
    exporter = both(
        infinium_collector, infino, max_retries=100, max_elapsed=600.0, max_queue_bytes=16384
    )
    try:
        for number in range(40):
            assert exporter.submit(trace(f"t{number:02}", description="x" * 1000))
            assert wait_until(functools.partial(stored_at_least, infino, number + 1), timeout=5.0)
        stats = exporter.stats()
        # Infinium's lane holds what fits in its own bound and counts the rest.
        assert stats.destinations["infinium"].queued <= 16
        assert stats.dropped["queue_full"] > 0 and balanced(stats)
    finally:
        infinium_collector.set_up()
        exporter.shutdown(5.0)


def test_a_logged_trace_infinium_keeps_for_later_reaches_infino_once(
    infinium_collector: LocalCollector, infino: InfinoServer, tmp_path: Path
) -> None:
    """With a spool, a trace submitted as a dict (kept in the spool as submitted, as a
    logged one is) that Infinium keeps for later while Infino is still retrying it: once
    both answer, each endpoint has it once and the spool is empty."""
    infino.down = True
    infinium_collector.set_down()
    exporter = both(
        infinium_collector,
        infino,
        tmp_path,
        max_retries=0,
        infino_overrides={"max_retries": 100, "max_elapsed": 600.0},
    )
    for number in range(3):
        assert exporter.submit({"name": f"t{number}", "description": "d", "duration": 1.0})
    assert wait_until(lambda: exporter.stats().spooled >= 3, timeout=10.0)
    infino.down = False
    infinium_collector.set_up()
    assert wait_until(lambda: exporter.stats().sent == 3, timeout=30.0)
    assert exporter.flush(10.0)
    assert set(infino.writes.values()) == {1} and len(infino.writes) == 3
    stats = exporter.stats()
    assert stats.destinations["infino"].sent == 3
    assert stats.destinations["infinium"].spooled == 0 and stats.spooled == 0
    assert balanced(stats)
    assert exporter.shutdown(5.0)
    assert sum(s.records for s in survey(str(tmp_path))) == 0


def test_what_infino_missed_is_tried_again_in_this_process(
    infinium_collector: LocalCollector, infino: InfinoServer, tmp_path: Path
) -> None:
    """With a spool, Infino down past its retries: its traces wait in the spool (counted as
    spooled) and are offered again after a backoff, in this process; once Infino answers
    they are stored there once and the spool empties, Infinium never asked twice."""
    infino.down = True
    exporter = both(infinium_collector, infino, tmp_path, infino_overrides={"max_retries": 0})
    for number in range(3):
        assert exporter.submit(trace(f"t{number}"))
    assert wait_until(lambda: exporter.stats().destinations["infino"].spooled == 3, timeout=10.0)
    assert exporter.stats().sent == 3  # Infinium's side is done
    infino.down = False
    assert wait_until(lambda: len(names_at(infino)) == 3, timeout=10.0)
    assert exporter.flush(10.0)
    stats = exporter.stats()
    assert stats.destinations["infino"].spooled == 0 and stats.destinations["infino"].sent == 3
    assert set(infino.writes.values()) == {1}
    assert len(infinium_collector.traces()) == 3
    assert exporter.shutdown(5.0)
    assert sum(s.records for s in survey(str(tmp_path))) == 0
