"""Configuration only: ``dictConfig`` builds the handler, ``INFINIUM_*`` variables do the rest.

    python examples/dictconfig.py

The same dict works from YAML or JSON.  When ``INFINIUM_BASE_URL`` is not set,
a local collector is started in this process and what it received is printed.
"""

from __future__ import annotations

import logging
import logging.config
import os

from _local import local_collector_unless_configured

from infinium_logging import task

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "infinium": {"class": "infinium_logging.InfiniumHandler", "level": "INFO"},
    },
    "root": {"level": "INFO", "handlers": ["console", "infinium"]},
}


def main() -> None:
    collector = local_collector_unless_configured()
    if collector is not None:
        # INFINIUM_TAGS end up in every trace's environment.custom_tags.
        os.environ.setdefault("INFINIUM_TAGS", "service=dictconfig-example,env=local")
    logging.config.dictConfig(LOGGING)
    log = logging.getLogger("research_agent")

    with task("Summarise three papers", input_summary="arXiv ids 2401.1, 2401.2, 2401.3"):
        for paper in ("2401.1", "2401.2", "2401.3"):
            call = {
                "model": "claude-3-5-haiku",
                "provider": "anthropic",
                "prompt_tokens": 2400,
                "completion_tokens": 310,
            }
            log.info("Summarised %s", paper, extra={"llm_call": call})
    log.info("Daily digest sent", extra={"infinium": {"output_summary": "3 summaries mailed"}})

    logging.shutdown()  # flushes the handler, which flushes the exporter (bounded)
    if collector is not None:
        collector.wait_for(2, timeout=10)
        for received in collector.traces():
            trace = received.task
            tags = trace.environment.custom_tags if trace.environment else {}
            print(f"trace {trace.name!r}: {len(trace.steps or ())} steps, tags {tags}")
        collector.stop()


if __name__ == "__main__":
    main()
