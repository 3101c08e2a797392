"""structlog routed through stdlib logging (``ProcessorFormatter``), with Infinium on both sides.

    python examples/structlog_bridge.py

For applications whose structlog output goes through the standard library's
handlers.  ``InfiniumProcessor`` sits in the structlog chain (so the renderer
never sees the ``infinium`` tag), and an ``InfiniumHandler`` on the root logger
catches what plain stdlib loggers emit.  An event seen by both still gives one
step or one trace: the handler skips what the processor already took.  (The
handler alone also works: it reads the event dict ``wrap_for_formatter`` leaves
in ``record.msg``.)
"""

from __future__ import annotations

import logging

import structlog
from _local import local_collector_unless_configured, show

from infinium_logging import InfiniumHandler, InfiniumProcessor, get_default_exporter, task


def main() -> None:
    collector = local_collector_unless_configured()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso"),
            InfiniumProcessor(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    console = logging.StreamHandler()
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.dev.ConsoleRenderer(colors=False),
            ]
        )
    )
    root = logging.getLogger()
    root.addHandler(console)
    root.addHandler(InfiniumHandler())
    root.setLevel(logging.INFO)

    log = structlog.get_logger("research_agent")
    logging.getLogger("legacy.module").info("A plain stdlib record", extra={"infinium": True})
    log.info("Indexed sources", infinium={"duration": 3.2, "research": {"sources_consulted": 12}})
    with task("Answer a research question", input_summary="Which cache fits our workload?") as t:
        log.info("Searched papers", tool_call={"tool_name": "arxiv.search", "http_status": 200})
        log.info(
            "Compared findings",
            llm_call={
                "model": "claude-3-5-sonnet",
                "prompt_tokens": 2100,
                "completion_tokens": 380,
            },
        )
        t.update(output_summary="An LRU cache with a 5-minute TTL")

    get_default_exporter().flush(timeout=10)
    if collector is not None:
        collector.wait_for(3, timeout=10)
        show(collector)
        collector.stop()


if __name__ == "__main__":
    main()
