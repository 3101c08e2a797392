"""Read back what the platform made of a trace: ``get_interpreted_result``.

    python examples/interpreted_result.py

Sends one trace with ``Exporter.send`` (synchronous: you get the trace id at
once), then asks for Maestro's interpretation.  The platform grades traces
asynchronously, so ``interpretedTraceResult`` may be ``None`` for a while; the
local collector never grades (it always answers ``None``).
"""

from __future__ import annotations

import time

from _local import local_collector_unless_configured

from infinium_logging import ExpectedOutcome, Exporter, TaskData, utc_now_iso


def main() -> None:
    collector = local_collector_unless_configured()
    with Exporter() as exporter:
        response = exporter.send(
            TaskData(
                name="Classify ticket T-1042",
                description="Route an inbound ticket to a queue",
                current_datetime=utc_now_iso(),
                duration=0.8,
                output_summary="queue=billing",
                expected_outcome=ExpectedOutcome(task_objective="Pick the right queue"),
            )
        )
        trace_id = response.trace_id
        print(f"trace id: {trace_id}")
        assert trace_id is not None
        for _ in range(3):
            result = exporter.get_interpreted_result(trace_id)
            data = result.data or {}
            if data.get("interpretedTraceResult") is not None:
                print("interpretation:", data["interpretedTraceResult"])
                break
            print("not graded yet:", data.get("message", ""))
            time.sleep(0.2)
    if collector is not None:
        collector.stop()


if __name__ == "__main__":
    main()
