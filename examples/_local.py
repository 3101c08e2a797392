"""Shared by the examples: use the configured endpoint, or a local collector started here."""

from __future__ import annotations

import os

from infinium_logging.collector import LocalCollector

DEMO_AGENT_ID = "3f1c2b9e-8d7a-4e61-9f3b-2a5c6d7e8f90"


def local_collector_unless_configured() -> LocalCollector | None:
    """Start a collector on 127.0.0.1 and point INFINIUM_* at it, unless a URL is configured.

    With ``INFINIUM_BASE_URL`` set (for example to what ``infinium-logging serve`` or
    ``infinium-logging demo --keep`` printed), the examples send there instead.
    """
    if os.environ.get("INFINIUM_BASE_URL"):
        return None
    collector = LocalCollector().start()
    os.environ["INFINIUM_BASE_URL"] = collector.base_url
    os.environ.setdefault("INFINIUM_AGENT_ID", DEMO_AGENT_ID)
    os.environ.setdefault("INFINIUM_AGENT_SECRET", "local-demo-secret")
    return collector


def show(collector: LocalCollector) -> None:
    """Print one line per trace the collector received, then its steps."""
    for received in collector.traces():
        trace = received.task
        tokens = trace.llm_usage.total_tokens if trace.llm_usage else 0
        steps = len(trace.steps or ())
        print(f"trace {trace.name!r}: {steps} steps, {tokens or 0} tokens, {trace.duration:.3f} s")
        for step in trace.steps or ():
            print(f"    {step.step_number}. [{step.action}] {step.description}")
