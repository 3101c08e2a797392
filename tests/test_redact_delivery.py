"""Redaction and sampling end to end: what reaches the wire, the spool, the collector's database,
the library's own log lines, ``capture_tasks`` and a sink of one's own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from exporters import balanced, make_exporter, trace, wait_until

from infinium_logging import _default, redact
from infinium_logging.collector import LocalCollector
from infinium_logging.handler import InfiniumHandler
from infinium_logging.model import ErrorDetail, TaskData, encode_task
from infinium_logging.redact import set_redaction_hook
from infinium_logging.sampling import has_errors, sampled_in
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET, capture_tasks

#: One secret of each kind the defaults redact, as they would turn up in an agent's work.
SECRETS = {
    "openai": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zT3BlbkFJ7Qx",
    "anthropic": "sk-ant-api03-" + "Xy7_Zq-9" * 11 + "kLm4AA",
    "github": "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "stripe": "sk_live_51HbQ2mLk9Xy7Zq3Wv8Ut5Rs",
    "aws_id": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "bearer": "4f9Qx7Lm2Zp8Rt5Vw1Ny3Kd6",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV",
    "url_password": "Tr0ub4dor-3x",
    "named": "p4ssw0rd-Of-The-Db",
    "agent": TEST_AGENT_SECRET,
}
#: Text carrying every one of them.
CARRIER = (
    f"keys {SECRETS['openai']} {SECRETS['anthropic']} {SECRETS['github']} {SECRETS['stripe']}; "
    f"aws_access_key_id={SECRETS['aws_id']} aws_secret_access_key={SECRETS['aws_secret']}; "
    f"Authorization: Bearer {SECRETS['bearer']}; session {SECRETS['jwt']}; "
    f"db postgres://app:{SECRETS['url_password']}@db.internal/x; agent {SECRETS['agent']}"
)


def leaks(data: bytes | str) -> list[str]:
    """The seeded secrets found in ``data``."""
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return [name for name, secret in SECRETS.items() if secret in text]


@pytest.fixture(autouse=True)
def no_hook() -> Iterator[None]:
    """Every test starts and ends without a redaction hook."""
    set_redaction_hook(None)
    yield
    set_redaction_hook(None)


def seeded_trace(name: str) -> TaskData:
    """A trace with the secrets in its summaries, a step, a tool call and an error."""
    return trace(
        name,
        description=CARRIER,
        input_summary=CARRIER[:400],
        errors=[ErrorDetail("AuthError", CARRIER, stack_trace=CARRIER)],
    )


def test_no_seeded_secret_reaches_the_wire_the_spool_the_database_or_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stdlib_logger: logging.Logger
) -> None:
    """Traces submitted as TaskData, as dicts and logged through the handler, first held in
    the spool while the collector is down, then delivered (one refused, which is logged):
    no seeded secret is in a spool file, a request body, the collector's database file, or
    a log line of the library; the stats count what was redacted."""
    caplog.set_level(logging.DEBUG, logger="infinium_logging")
    db = tmp_path / "traces.db"
    spool = tmp_path / "spool"
    with LocalCollector(db=db, agent_id=TEST_AGENT_ID, agent_secret=TEST_AGENT_SECRET) as collector:
        collector.set_down()
        exporter = make_exporter(collector, spool, max_retries=0)
        stdlib_logger.addHandler(InfiniumHandler(exporter=exporter))
        try:
            assert exporter.submit(seeded_trace("struct"))
            assert exporter.submit(
                {
                    "name": "dict",
                    "description": CARRIER,
                    "current_datetime": "2026-01-01T00:00:00Z",
                    "duration": 1.0,
                    "steps": [
                        {
                            "step_number": 1,
                            "action": "tool_call",
                            "description": CARRIER,
                            "metadata": {"password": SECRETS["named"], "note": CARRIER},
                            "tool_call": {"tool_name": "db", "input_summary": CARRIER[:300]},
                        }
                    ],
                }
            )
            stdlib_logger.info(
                "logged %s",
                CARRIER,
                extra={"infinium": {"name": "handler", "output_summary": CARRIER}},
            )
            assert wait_until(
                lambda: exporter.stats().spooled >= 1 or exporter.stats().in_flight == 0
            )
            held = b"".join(p.read_bytes() for p in spool.rglob("*") if p.is_file())
            assert held, "the traces wait in the spool while the collector is down"
            assert leaks(held) == []
            collector.set_up()
            collector.fail_next(1, 422)
            assert exporter.submit(seeded_trace("refused"))
            exporter.flush(10)
            assert wait_until(lambda: collector.accepted_count >= 3, 10)
            exporter.flush(10)
            stats = exporter.stats()
        finally:
            exporter.shutdown(5)
        bodies = [t.body for t in collector.traces()]
        assert len(bodies) >= 3
        for body in bodies:
            assert leaks(body) == []
            assert b"[REDACTED:" in body
    assert leaks(db.read_bytes()) == []
    assert leaks(b"".join(p.read_bytes() for p in spool.rglob("*") if p.is_file())) == []
    own = [r for r in caplog.records if r.name.startswith("infinium_logging")]
    assert own
    assert leaks("\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in own)) == []
    assert {
        "api_key",
        "aws_access_key_id",
        "aws_secret_key",
        "bearer_token",
        "jwt",
        "password",
        "secret",
    } <= set(stats.redacted)


def test_capture_tasks_and_a_sink_of_ones_own_see_redacted_traces(
    stdlib_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, clean_environment: None
) -> None:
    """What ``capture_tasks`` keeps and what a custom sink is handed are redacted as the
    exporter would send them (the agent secret of the environment included)."""
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    monkeypatch.setattr(redact, "_default", None)  # forgotten again after the test

    class Sink:
        """A sink of the application's own."""

        def __init__(self) -> None:
            self.got: list[Any] = []

        def submit(self, task: Any) -> bool:
            self.got.append(task)
            return True

    sink = Sink()
    handler = InfiniumHandler(exporter=sink)
    stdlib_logger.addHandler(handler)
    stdlib_logger.info(
        "to the sink", extra={"infinium": {"name": "sink", "input_summary": CARRIER}}
    )
    assert len(sink.got) == 1
    assert leaks(msgspec.json.encode(sink.got[0])) == []
    stdlib_logger.removeHandler(handler)
    monkeypatch.setenv("INFINIUM_DISABLED", "true")  # capture_tasks needs no credentials
    _default._reset_default()
    with capture_tasks() as tasks:
        stdlib_logger.addHandler(InfiniumHandler())
        stdlib_logger.info(
            "captured", extra={"infinium": {"name": "cap", "input_summary": CARRIER}}
        )
    assert len(tasks) == 1
    assert leaks(encode_task(tasks[0])) == []
    assert tasks[0].input_summary is not None and "[REDACTED:api_key]" in tasks[0].input_summary


def test_redaction_runs_on_a_sender_thread(
    infinium_collector: LocalCollector, stdlib_logger: logging.Logger
) -> None:
    """Without a spool, a logged trace is redacted off the caller's thread (the hook sees
    where it runs)."""
    threads: set[str] = set()

    def hook(text: str, where: str) -> str:
        threads.add(threading.current_thread().name)
        return text

    set_redaction_hook(hook)
    with make_exporter(infinium_collector) as exporter:
        stdlib_logger.addHandler(InfiniumHandler(exporter=exporter))
        stdlib_logger.info("logged", extra={"infinium": {"name": "t"}})
        assert exporter.flush(10)
    assert threads
    assert threading.current_thread().name not in threads


def test_sampling_keeps_errors_and_counts_the_rest_apart_from_drops(
    infinium_collector: LocalCollector,
) -> None:
    """At a rate of 0 every trace without an error is sampled out (counted, not dropped) and
    every trace with one is sent; the accounting still balances."""
    results: list[str] = []
    with make_exporter(
        infinium_collector,
        sample_rate=0.0,
        on_result=lambda task, response: results.append(str((response.data or {}).get("reason"))),
    ) as exporter:
        for i in range(5):
            assert exporter.submit(trace(f"ok{i}"))
        assert exporter.submit(trace("failed", errors=[ErrorDetail("E", "it broke")]))
        assert exporter.submit(
            {
                "name": "step error",
                "description": "d",
                "current_datetime": "2026-01-01T00:00:00Z",
                "duration": 1.0,
                "steps": [
                    {
                        "step_number": 1,
                        "action": "a",
                        "description": "d",
                        "error": {"error_type": "E", "message": "m"},
                    }
                ],
            }
        )
        assert exporter.flush(10)
        stats = exporter.stats()
    assert sorted(t.task.name for t in infinium_collector.traces()) == ["failed", "step error"]
    assert (stats.sampled_out, stats.sent, stats.dropped_total) == (5, 2, 0)
    assert balanced(stats)
    assert results.count("sampled_out") == 5


def test_the_sampling_decision_is_a_function_of_the_trace() -> None:
    """The same body gets the same answer (a trace read back from the spool is not decided
    anew), the rate is honoured over many traces, and errors are always kept."""
    bodies = [encode_task(trace(f"t{i}")) for i in range(2000)]
    kept = [b for b in bodies if sampled_in(b, 0.25)]
    assert 0.2 < len(kept) / len(bodies) < 0.3
    assert all(sampled_in(b, 0.25) for b in kept)
    failed = encode_task(trace("f", errors=[ErrorDetail("E", "m")]))
    assert has_errors(failed) and sampled_in(failed, 0.0)
    assert not has_errors(encode_task(trace("quoted", description='"errors":[1]')))
