"""structlog: add ``InfiniumProcessor`` to the chain; tagged events and task() events become traces.

    python examples/structlog_chain.py

When ``INFINIUM_BASE_URL`` is not set, a local collector is started in this
process and what it received is printed at the end.
"""

from __future__ import annotations

import structlog
from _local import local_collector_unless_configured

from infinium_logging import InfiniumProcessor, get_default_exporter, task


def main() -> None:
    collector = local_collector_unless_configured()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.set_exc_info,
            InfiniumProcessor(),  # after the enrichers, before exception formatting and rendering
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ]
    )
    log = structlog.get_logger("sales_agent")

    # A tagged event is one trace.
    log.info(
        "Qualified lead",
        infinium={"output_summary": "hot lead", "sales": {"lead_source": "webinar"}},
    )

    # Inside task(), every event at or above min_level ("info") is a step.
    structlog.contextvars.bind_contextvars(lead_id="L-77")
    with task("Write follow-up email", expected_outcome={"task_objective": "Book a demo"}) as t:
        log.info("Looked up the CRM", tool_call={"tool_name": "crm_lookup", "http_status": 200})
        call = {
            "model": "gpt-4o",
            "provider": "openai",
            "prompt_tokens": 640,
            "completion_tokens": 220,
        }
        log.info("Wrote the email", llm_call=call)
        try:
            raise ConnectionError("calendar API unreachable")
        except ConnectionError:
            log.exception("Could not propose slots")
        t.update(output_summary="Email sent without slots")

    get_default_exporter().flush(timeout=10)
    if collector is not None:
        collector.wait_for(2, timeout=10)
        for received in collector.traces():
            trace = received.task
            print(
                f"trace {trace.name!r}: {len(trace.steps or ())} steps, "
                f"{len(trace.errors or ())} errors"
            )
            for step in trace.steps or ():
                extra = step.metadata or ""
                print(f"    {step.step_number}. [{step.action}] {step.description} {extra}")
        collector.stop()


if __name__ == "__main__":
    main()
