"""Send traces you build yourself, and get the answers now: ``Exporter.send_batch``.

    python examples/send_batch.py

Useful for back-filling, or a script that must know each trace id.  The batch
goes out concurrently over the pool, through the same throttle and retries as
background delivery; results come back in input order.
"""

from __future__ import annotations

from _local import local_collector_unless_configured

from infinium_logging import Exporter, LlmUsage, TaskData, utc_now_iso

DOCUMENTS = [
    ("Quarterly report", 1.9, 1830, 212),
    ("Onboarding guide", 1.2, 960, 140),
    ("Incident review", 2.4, 2410, 260),
]


def main() -> None:
    collector = local_collector_unless_configured()
    tasks = [
        TaskData(
            name=f"Summarize: {title}",
            description=f"2-sentence summary of '{title}'",
            current_datetime=utc_now_iso(),
            duration=seconds,
            input_summary=f"Document: {title}",
            output_summary="A two-sentence summary.",
            llm_usage=LlmUsage(
                model="gpt-4o",
                provider="openai",
                prompt_tokens=prompt,
                completion_tokens=completion,
                api_calls_count=1,
            ),
        )
        for title, seconds, prompt, completion in DOCUMENTS
    ]
    with Exporter() as exporter:  # settings from INFINIUM_*
        result = exporter.send_batch(tasks)
    print(f"Sent {result.successful}/{result.total} traces")
    for task, response in zip(tasks, result.results, strict=True):
        print(f"  {task.name}: {response.trace_id if response.success else response.message}")
    if collector is not None:
        collector.stop()


if __name__ == "__main__":
    main()
