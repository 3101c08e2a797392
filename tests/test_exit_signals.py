"""A plain script ended by SIGTERM, SIGINT, sys.exit or its end: nothing submitted is lost, and
it ends as it would without the library (same signal or status, within shutdown_timeout + 1 s)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from exit_support import child_env, names, replay_spill, run_script, spill_dir

from infinium_logging.collector import LocalCollector

EVENTS = 60

#: A script logging EVENTS tagged events (one trace each) with the throttle on (10/s, bursts
#: of 20) and a 1 s deadline: about a third gets out before the end, the rest must be kept.
SCRIPT = """
import logging, os, signal, sys, time
from infinium_logging import InfiniumHandler
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(InfiniumHandler())
for i in range({events}):
    log.info("event %d", i, extra={{"infinium": {{"name": f"e{{i:03}}"}}}})
handler = signal.getsignal(signal.SIGTERM)
print("SIGTERM_HANDLER", getattr(handler, "__name__", None) or signal.Handlers(handler).name,
      flush=True)
started = time.monotonic()
{ending}
"""

ENDINGS = {
    "sigterm": ("os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(30)", -signal.SIGTERM),
    "sigint": ("os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)", -signal.SIGINT),
    "sys.exit": ("sys.exit(3)", 3),
    "end": ("pass", 0),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_every_trace_is_delivered_or_kept_whatever_ends_the_script(
    tmp_path: Path, infinium_collector: LocalCollector, ending: str
) -> None:
    """SIGTERM (the default action), SIGINT (KeyboardInterrupt), sys.exit(3) and the script's
    end: the child ends by the same signal or status as without the library, within
    shutdown_timeout + 1 s, and what it could not send in time is in its exit spill, which a
    replay delivers: all EVENTS traces arrive."""
    code, expected = ENDINGS[ending]
    cache = tmp_path / "cache"
    started = time.monotonic()
    result = run_script(
        tmp_path,
        SCRIPT.format(events=EVENTS, ending=code),
        child_env(infinium_collector, cache, INFINIUM_SHUTDOWN_TIMEOUT="1"),
    )
    took = time.monotonic() - started
    assert result.returncode == expected, result.stderr
    assert "SIGTERM_HANDLER _on_signal" in result.stdout
    assert "Traceback" not in result.stderr or ending == "sigint"
    assert took < 1 + 1 + 5  # deadline, allowance, interpreter start on a busy machine
    before = len(names(infinium_collector))
    assert before < EVENTS  # the throttle did hold some back: the spill is what is tested
    assert replay_spill(infinium_collector, cache) >= EVENTS - before
    assert names(infinium_collector) == {f"e{i:03}" for i in range(EVENTS)}


def test_signals_left_alone_on_request(tmp_path: Path, infinium_collector: LocalCollector) -> None:
    """INFINIUM_HANDLE_SIGNALS=false: SIGTERM keeps its default action (the process ends at
    once, atexit does not run) and nothing is spilled; INFINIUM_EXIT_SPOOL=false alone keeps
    the handler but counts what is left as lost, as before."""
    cache = tmp_path / "cache"
    result = run_script(
        tmp_path,
        SCRIPT.format(events=EVENTS, ending=ENDINGS["sigterm"][0]),
        child_env(infinium_collector, cache, INFINIUM_HANDLE_SIGNALS="false"),
    )
    assert result.returncode == -signal.SIGTERM
    assert "SIGTERM_HANDLER SIG_DFL" in result.stdout
    assert not spill_dir(infinium_collector, cache).exists()

    result = run_script(
        tmp_path,
        SCRIPT.format(events=EVENTS, ending=ENDINGS["sigterm"][0]),
        child_env(
            infinium_collector,
            cache,
            INFINIUM_EXIT_SPOOL="false",
            INFINIUM_SHUTDOWN_TIMEOUT="0.5",
            INFINIUM_ENABLE_LOGGING="true",
        ),
    )
    assert result.returncode == -signal.SIGTERM
    assert "SIGTERM_HANDLER _on_signal" in result.stdout
    assert "shutdown=" in result.stderr
    assert not spill_dir(infinium_collector, cache).exists()


def test_a_handler_of_the_applications_own_is_chained(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """An application's own SIGTERM handler, installed first, still runs (after a bounded
    flush), and decides how the process ends; one installed after ours replaces it."""
    body = """
    import logging, os, signal, sys, threading
    def own(signum, frame):
        print("OWN HANDLER RAN", flush=True)
        sys.exit(7)
    signal.signal(signal.SIGTERM, own)
    from infinium_logging import InfiniumHandler
    log = logging.getLogger("app")
    log.setLevel(logging.INFO)
    log.addHandler(InfiniumHandler())
    for i in range(5):
        log.info("event %d", i, extra={"infinium": {"name": f"e{i}"}})
    os.kill(os.getpid(), signal.SIGTERM)
    """
    result = run_script(tmp_path, body, child_env(infinium_collector, tmp_path / "cache"))
    assert result.returncode == 7, result.stderr
    assert "OWN HANDLER RAN" in result.stdout
    assert names(infinium_collector) == {f"e{i}" for i in range(5)}


def test_installed_only_from_the_main_thread_and_never_over_ignore(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """An exporter first made on another thread, or a SIGTERM set to SIG_IGN, leaves the
    signal as it is."""
    body = """
    import signal, threading
    from infinium_logging import Exporter
    made = threading.Thread(target=Exporter)
    made.start(); made.join()
    print("FROM_THREAD", signal.Handlers(signal.getsignal(signal.SIGTERM)).name, flush=True)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Exporter()
    print("OVER_IGNORE", signal.Handlers(signal.getsignal(signal.SIGTERM)).name, flush=True)
    """
    result = run_script(tmp_path, body, child_env(infinium_collector, tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert "FROM_THREAD SIG_DFL" in result.stdout
    assert "OVER_IGNORE SIG_IGN" in result.stdout


def test_a_task_open_at_sigterm_is_sent_as_abandoned(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """A script stopped by SIGTERM in the middle of its ``task()``, before any trace went out
    (no exporter running yet): the task ends as abandoned and its trace, with its steps, is
    delivered; the process still ends by the signal."""
    script = """
import logging, os, signal, time
from infinium_logging import InfiniumHandler, task
log = logging.getLogger("job")
log.setLevel(logging.INFO)
log.addHandler(InfiniumHandler())
with task("Long job"):
    log.info("step one")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
"""
    result = run_script(tmp_path, script, child_env(infinium_collector, tmp_path / "cache"))
    assert result.returncode == -signal.SIGTERM, result.stderr
    [received] = infinium_collector.traces()
    assert received.task.name == "Long job"
    assert [step.description for step in received.task.steps or []] == ["step one"]
    assert [error.error_type for error in received.task.errors or []] == ["TaskAbandoned"]
