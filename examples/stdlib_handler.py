"""Standard-library logging: add one handler, and tagged records and task() events become traces.

    python examples/stdlib_handler.py

Traces go where ``INFINIUM_BASE_URL``, ``INFINIUM_AGENT_ID`` and
``INFINIUM_AGENT_SECRET`` say.  When ``INFINIUM_BASE_URL`` is not set, a local
collector is started in this process and what it received is printed at the end.
"""

from __future__ import annotations

import logging

from _local import local_collector_unless_configured, show

from infinium_logging import InfiniumHandler, get_default_exporter, task


def main() -> None:
    collector = local_collector_unless_configured()

    # The three lines: a console for you, a handler for Infinium, a logger.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().addHandler(InfiniumHandler())
    log = logging.getLogger("support_agent")

    # A tagged record is one trace.
    log.info(
        "Classified ticket %s as billing",
        "T-1042",
        extra={"infinium": {"input_summary": "Charged twice for May", "output_summary": "billing"}},
    )

    # Inside task(), every record the handler accepts is a step of one trace.
    with task(
        "Answer ticket T-1042",
        expected_outcome={"task_objective": "Resolve the double charge"},
    ) as t:
        log.info(
            "Searched the knowledge base",
            extra={"tool_call": {"tool_name": "kb_search", "duration_ms": 38}, "hits": 3},
        )
        call = {
            "model": "gpt-4o-mini",
            "provider": "openai",
            "prompt_tokens": 812,
            "completion_tokens": 164,
            "latency_ms": 930,
        }
        log.info("Drafted a reply", extra={"llm_call": call})
        try:
            raise TimeoutError("refund API timed out")
        except TimeoutError:
            log.exception("Refund failed, retrying")
        log.info("Refund issued", extra={"action": "refund", "amount_eur": 19.99})
        t.update(output_summary="Refunded 19.99 EUR and replied to the customer")

    get_default_exporter().flush(timeout=10)
    if collector is not None:
        collector.wait_for(2, timeout=10)
        show(collector)
        collector.stop()


if __name__ == "__main__":
    main()
