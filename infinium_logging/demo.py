"""``infinium-logging demo``: a simulated agent logs tasks to a local collector, then shows them."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import uuid
from typing import Any, TextIO

import structlog

from .collector import LocalCollector
from .exporter import Exporter
from .handler import InfiniumHandler
from .model import ExecutionStep, TaskData
from .processor import InfiniumProcessor
from .settings import Settings
from .tasks import task

__all__ = ["run_demo"]


class FakeModel:
    """A deterministic stand-in for an LLM: realistic token counts and latencies, no network."""

    def __init__(self, model: str, provider: str) -> None:
        self.model = model
        self.provider = provider
        self.calls = 0

    def call(self, purpose: str, prompt: str, answer: str) -> dict[str, Any]:
        """Return the ``llm_call`` fields of one call, as a real integration would log them."""
        self.calls += 1
        time.sleep(0.05)  # a little real time passes, so that durations are not all zero
        prompt_tokens = 180 + 9 * len(prompt) // 4 + 37 * self.calls
        completion_tokens = 12 + len(answer) // 3
        return {
            "model": self.model,
            "provider": self.provider,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "latency_ms": 240 + 11 * completion_tokens,
            "temperature": 0.2,
            "purpose": purpose,
        }


def _classify_ticket(log: logging.Logger, llm: FakeModel) -> None:
    """A clean task, logged through the stdlib handler."""
    with task(
        "Classify support ticket #4821",
        description="Read an inbound support ticket and route it to the right queue",
        input_summary="Ticket #4821: 'I was charged twice for my Pro subscription this month.'",
        expected_outcome={
            "task_objective": "Route the ticket to the correct queue with a priority",
            "acceptance_criteria": ["queue chosen", "priority set"],
        },
    ) as current:
        log.info(
            "Plan the classification",
            extra={"llm_call": llm.call("plan", "ticket text and queue list", "look up, classify")},
        )
        log.info(
            "Look up the customer",
            extra={
                "tool_call": {
                    "tool_name": "crm.lookup_customer",
                    "duration_ms": 84,
                    "http_status": 200,
                },
                "output_preview": "ACME Corp, plan Pro, 2 charges on 2026-11-01",
            },
        )
        log.info(
            "Classify the ticket",
            extra={
                "llm_call": llm.call("classify", "ticket, customer, charges", "billing/duplicate"),
                "output_preview": "queue=billing, reason=duplicate charge, priority=high",
            },
        )
        current.update(output_summary="Routed to billing (duplicate charge), priority high")


def _refund(slog: Any, llm: FakeModel) -> None:
    """A task with a tool failure it recovers from, logged through the structlog processor."""
    with task(
        "Refund duplicate charge for ticket #4821",
        description="Refund the second charge and tell the customer",
        input_summary="Customer ACME Corp, duplicate charge of 49.00 USD on 2026-11-01",
    ) as current:
        slog.info(
            "Draft the refund",
            llm_call=llm.call("draft", "charges and refund policy", "refund 49.00 USD"),
        )
        try:
            raise TimeoutError("billing API did not answer within 2 s")
        except TimeoutError:
            slog.warning(
                "Billing API timed out, retrying",
                exc_info=True,
                tool_call={"tool_name": "billing.refund", "duration_ms": 2000},
            )
        slog.info(
            "Issue the refund",
            tool_call={"tool_name": "billing.refund", "duration_ms": 132, "http_status": 200},
            output_preview="refund re_7Q2 created for 49.00 USD",
        )
        slog.info(
            "Write to the customer",
            llm_call=llm.call("reply", "refund id and tone guide", "Sorry for the double charge"),
        )
        current.update(output_summary="Refunded 49.00 USD (re_7Q2) and replied to the customer")


def _escalate(log: logging.Logger, llm: FakeModel) -> None:
    """A task that fails: the exception escapes ``task()`` and is recorded."""
    with task(
        "Escalate outage report #4823",
        description="Page the on-call engineer about a reported outage",
        input_summary="Ticket #4823: 'Checkout returns 502 for all EU customers'",
    ):
        log.info(
            "Summarise the report",
            extra={"llm_call": llm.call("summarise", "ticket text", "EU checkout down, 502s")},
        )
        log.info(
            "Page the on-call engineer",
            extra={"tool_call": {"tool_name": "pager.create_incident", "http_status": 409}},
        )
        raise RuntimeError("paging service refused the incident: the on-call rota is empty")


def _table(traces: list[TaskData], out: TextIO) -> None:
    header = f"{'trace':42} {'steps':>5} {'tokens':>7} {'duration':>9}  outcome"
    print(header, file=out)
    print("-" * len(header), file=out)
    for trace in traces:
        tokens = trace.llm_usage.total_tokens if trace.llm_usage else None
        errors = trace.errors or []
        failed = [error for error in errors if not error.recoverable]
        outcome = "ok"
        if failed:
            outcome = f"failed: {failed[-1].error_type}"
        elif errors:
            outcome = f"ok, recovered from {len(errors)} error(s)"
        print(
            f"{trace.name[:42]:42} {len(trace.steps or ()):>5} {tokens or 0:>7,} "
            f"{trace.duration:>8.2f}s  {outcome}",
            file=out,
        )


def _step_line(step: ExecutionStep) -> str:
    detail = ""
    if step.llm_call is not None:
        call = step.llm_call
        detail = f"{call.model}, {call.prompt_tokens}+{call.completion_tokens} tokens"
    elif step.tool_call is not None:
        call_ = step.tool_call
        status = f" -> {call_.http_status}" if call_.http_status else ""
        detail = f"{call_.tool_name}{status}"
    if step.error is not None:
        detail = (
            detail + "; " if detail else ""
        ) + f"{step.error.error_type}: {step.error.message}"
    return f"  {step.step_number:>2}. {step.action:14} {step.description}" + (
        f"  [{detail}]" if detail else ""
    )


def run_demo(*, keep: bool = False, out: TextIO | None = None) -> int:
    """Run the demo; with ``keep`` the collector stays up until Ctrl-C.  Returns an exit code."""
    out = out if out is not None else sys.stdout
    folder = tempfile.mkdtemp(prefix="infinium-demo-")
    db = os.path.join(folder, "traces.sqlite3")
    agent_id = str(uuid.uuid4())
    secret = f"demo-{uuid.uuid4().hex[:16]}"
    collector = LocalCollector(port=0, db=db, agent_id=agent_id, agent_secret=secret)
    collector.start()
    settings = Settings(
        agent_id=agent_id, agent_secret=secret, base_url=collector.base_url, shutdown_timeout=5.0
    )
    exporter = Exporter(settings)
    try:
        print(f"Local collector on {collector.base_url} (no account, no network)\n", file=out)
        print(
            "A simulated agent logs three tasks (one clean, one that recovers from a tool\n"
            "failure, one that fails) and one tagged event: four traces. It logs as usual:",
            file=out,
        )

        log = logging.getLogger("infinium_demo.agent")
        log.setLevel(logging.INFO)
        log.propagate = False  # the demo's own output only; the host's logging is untouched
        shown = logging.StreamHandler(out)
        shown.setFormatter(logging.Formatter("  stdlib    | %(levelname)-7s %(message)s"))
        handler = InfiniumHandler(exporter=exporter)
        log.addHandler(shown)
        log.addHandler(handler)

        slog = structlog.wrap_logger(
            structlog.PrintLogger(out),
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                InfiniumProcessor(exporter=exporter),
                lambda _, __, event: f"  structlog | {event['level'].upper():7} {event['event']}",
            ],
        )

        llm = FakeModel("gpt-4o-mini", "openai")
        _classify_ticket(log, llm)
        _refund(slog, llm)
        try:
            _escalate(log, llm)
        except RuntimeError:
            pass  # recorded in the trace as a non-recoverable error
        log.info(
            "Answered a pricing question",
            extra={"infinium": {"duration": 0.42, "output_summary": "Pro costs 49 USD a month"}},
        )

        exporter.flush(timeout=10.0)
        collector.wait_for(4, timeout=10.0)
        received = sorted(
            (record.task for record in collector.traces()), key=lambda t: t.current_datetime
        )
        log.removeHandler(handler)
        log.removeHandler(shown)

        print(f"\nThe collector received {len(received)} traces:\n", file=out)
        _table(received, out)
        detail = next((t for t in received if t.name.startswith("Refund")), None)
        if detail is not None:
            print(f"\nSteps of '{detail.name}':", file=out)
            for step in detail.steps or ():
                print(_step_line(step), file=out)
        stats = exporter.stats()
        print(f"\nExporter: {stats.sent} sent, {sum(stats.dropped.values())} dropped.", file=out)
        print(f"Traces are stored in {db}", file=out)
        print(f"  sqlite3 {db} 'select name, body from traces'", file=out)  # noqa: S608
        if keep:
            _keep_running(collector, agent_id, secret, out)
        return 0
    finally:
        exporter.shutdown(timeout=5.0)
        collector.stop()


def _keep_running(collector: LocalCollector, agent_id: str, secret: str, out: TextIO) -> None:
    # Everything after the first line printed sits inside the try: SIGINT/SIGTERM (turned into
    # KeyboardInterrupt by the command line) may arrive as soon as the banner is out.
    from ._cli_serve import export_lines, wait_for_signal  # noqa: PLC0415 - it imports this module

    try:
        print(f"\nSee the traces in a browser at {collector.viewer_url}", file=out)
        print("\nThe collector keeps running. Point an application at it: run these", file=out)
        print("lines in its shell.\n", file=out)
        print(export_lines(collector.base_url, agent_id, secret), file=out)
        print("\nPress Ctrl-C to stop.", file=out, flush=True)

        wait_for_signal()
    except KeyboardInterrupt:
        print("", file=out)
