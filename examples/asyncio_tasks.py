"""asyncio: concurrent tasks, each its own trace, with the steps of its own coroutine only.

    python examples/asyncio_tasks.py

``@task`` decorates async functions; the active task lives in a context
variable, so concurrent coroutines never mix their steps.  When
``INFINIUM_BASE_URL`` is not set, a local collector is started in this process
and what it received is printed at the end.
"""

from __future__ import annotations

import asyncio
import logging
import random

from _local import local_collector_unless_configured

from infinium_logging import InfiniumHandler, current_task, get_default_exporter, task

log = logging.getLogger("triage_agent")


async def fake_llm(prompt: str, rng: random.Random) -> str:
    """A deterministic stand-in for an LLM call: it sleeps, logs its usage, answers."""
    latency = rng.uniform(0.01, 0.05)
    await asyncio.sleep(latency)
    call = {
        "model": "gpt-4o-mini",
        "provider": "openai",
        "prompt_tokens": 20 + len(prompt),
        "completion_tokens": rng.randint(5, 60),
        "latency_ms": round(latency * 1000),
    }
    log.info("LLM answered", extra={"llm_call": call, "input_preview": prompt})
    return rng.choice(["billing", "bug", "feature request"])


@task("Triage ticket", expected_outcome={"task_objective": "Label the ticket"})
async def triage(ticket: str, seed: int) -> str:
    rng = random.Random(seed)
    log.info("Received %s", ticket, extra={"ticket": ticket})
    label = await fake_llm(f"Label this ticket: {ticket}", rng)
    log.info("Labelled %s as %s", ticket, label, extra={"action": "label"})
    handle = current_task()
    if handle is not None:
        handle.update(input_summary=ticket, output_summary=label)
    return label


async def run() -> list[str]:
    tickets = [f"T-{1000 + n}" for n in range(5)]
    return await asyncio.gather(*(triage(t, n) for n, t in enumerate(tickets)))


def main() -> None:
    collector = local_collector_unless_configured()
    logging.basicConfig(level=logging.WARNING)
    log.setLevel(logging.INFO)
    log.addHandler(InfiniumHandler())

    labels = asyncio.run(run())
    print("labels:", labels)

    get_default_exporter().flush(timeout=10)
    if collector is not None:
        collector.wait_for(len(labels), timeout=10)
        for received in collector.traces():
            trace = received.task
            tickets = {
                str(ticket)
                for s in trace.steps or ()
                if (ticket := (s.metadata or {}).get("ticket")) is not None
            }
            tokens = trace.llm_usage.total_tokens if trace.llm_usage else 0
            steps = len(trace.steps or ())
            print(
                f"trace {trace.input_summary}: {steps} steps (tickets seen: {sorted(tickets)}), "
                f"{tokens} tokens -> {trace.output_summary}"
            )
        collector.stop()


if __name__ == "__main__":
    main()
