"""Redaction of what goes to Infino: a sink made directly (with its spool) and the default
route a logged trace takes when ``INFINIUM_INFINO_ENDPOINT`` is set."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporters import wait_until
from infino_server import ACCESS_KEY, SECRET_KEY, InfinoServer, running
from test_redact_delivery import CARRIER, SECRETS, leaks

from infinium_logging import _default, infino_default, redact
from infinium_logging.handler import InfiniumHandler
from infinium_logging.infino import InfinoSink
from infinium_logging.model import ExecutionStep, ToolCall
from infinium_logging.testing import TEST_AGENT_SECRET

DATASET = "infinium-traces"
STEPS = "infinium-steps"


@pytest.fixture
def infino(monkeypatch: pytest.MonkeyPatch, clean_environment: None) -> Iterator[InfinoServer]:
    """A local Infino endpoint, no INFINIUM_* from outside, and a default redactor made from
    this test's environment (forgotten again afterwards, and the test's sinks with it: a
    sink the process-wide registry still holds would be flushed by later tests)."""
    monkeypatch.setattr(redact, "_default", None)
    for server in running():
        try:
            yield server
        finally:
            infino_default._reset()
            _default._reset_default()
            gc.collect()


def stored(server: InfinoServer) -> str:
    """Every row Infino stored, in both datasets, as one text."""
    return json.dumps(server.documents(DATASET) + server.documents(STEPS))


def test_no_seeded_secret_reaches_infino_or_its_spool(
    infino: InfinoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A trace with a secret of every kind in its description, its steps and a tool's named
    argument, sent to a trace and a steps dataset through a spool: none of the secrets (nor
    Infino's own secret key) is in a spool file or a stored row; the markers are, and the
    sink's stats count them."""
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", TEST_AGENT_SECRET)
    spool = tmp_path / "spool"
    sink = InfinoSink(
        endpoint=infino.url,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        steps_dataset=STEPS,
        spool_dir=str(spool),
        linger=0.05,
    )
    steps = [
        ExecutionStep(1, "tool_call", CARRIER, tool_call=ToolCall("db", input_summary=CARRIER)),
        ExecutionStep(2, "note", f"the key {SECRET_KEY}", metadata={"password": SECRETS["named"]}),
    ]
    try:
        assert sink.submit(
            {
                "name": "seeded",
                "description": CARRIER,
                "current_datetime": "2026-01-01T00:00:00Z",
                "duration": 1.0,
                "steps": steps,
            }
        )
        held = b"".join(p.read_bytes() for p in spool.rglob("*") if p.is_file())
        assert held, "the trace is written to the spool before submit returns"
        assert leaks(held) == [] and SECRET_KEY.encode() not in held
        assert sink.flush(10.0)
        stats = sink.stats()
    finally:
        sink.shutdown(5.0)
    rows = stored(infino)
    assert len(infino.ids(DATASET)) == 1 and len(infino.ids(STEPS)) == 2
    assert leaks(rows) == [] and SECRET_KEY not in rows
    assert "[REDACTED:api_key]" in rows and "[REDACTED:secret]" in rows
    assert {"api_key", "jwt", "secret"} <= set(stats.redacted)


def test_a_logged_trace_reaches_infino_redacted_by_the_default_route(
    infino: InfinoServer, monkeypatch: pytest.MonkeyPatch, stdlib_logger: logging.Logger
) -> None:
    """With only ``INFINIUM_INFINO_*`` set, a tagged event logged through the handler goes to
    Infino alone, and arrives without the secrets it was logged with."""
    monkeypatch.setenv("INFINIUM_INFINO_ENDPOINT", infino.url)
    monkeypatch.setenv("INFINIUM_INFINO_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("INFINIUM_INFINO_SECRET_KEY", SECRET_KEY)
    carrier = CARRIER.replace(SECRETS["agent"], "none")  # no agent secret is configured here
    handler = InfiniumHandler()
    stdlib_logger.addHandler(handler)
    try:
        stdlib_logger.info(
            "done %s", carrier, extra={"infinium": {"name": "logged", "output_summary": carrier}}
        )
        sink = infino_default.default_infino()
        assert sink is not None
        assert wait_until(lambda: len(infino.ids(DATASET)) == 1, timeout=10.0)
    finally:
        stdlib_logger.removeHandler(handler)
    rows = stored(infino)
    assert "[REDACTED:api_key]" in rows
    assert leaks(rows) == []
