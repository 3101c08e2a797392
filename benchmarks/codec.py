"""Figure 5: ``encode_task`` vs the official client's ``_task_data_to_dict`` + ``json.dumps``.

The official client's body is built exactly as it builds it (``_task_data_to_dict``,
then httpx's ``json=`` encoding: ``ensure_ascii=False``, compact separators),
from the same trace as its own dataclasses; the run first checks that both
bodies are identical, byte for byte.
"""

from __future__ import annotations

from infinium_logging.model import encode_task

from .common import Plan
from .realistic_trace import (
    OFFICIAL_MISSING,
    check_same_body,
    official_available,
    official_body,
    official_client,
    official_task,
    our_task,
)
from .timing import Row, Summary, compare, loop, measure

__all__ = ["figure_5"]


def figure_5(plan: Plan) -> list[Row]:
    """Encoding the trace: ours vs the official client's; target >= 25x faster."""
    if not official_available():
        alone = measure(
            loop("encode(TASK)", {"encode": encode_task, "TASK": our_task()}),
            n=plan.encodes,
            rounds=plan.rounds,
            chunks=plan.chunks,
            warmup=plan.encodes // 4,
        )
        return [
            Row(
                id="5",
                figure="encode_task of the trace",
                ours=Summary.of([v / 1000 for v in alone.samples]),
                baseline=None,
                unit="µs/trace",
                value=None,
                value_unit="x faster",
                target=">= 25x faster",
                passed=None,
                baseline_label="infinium-o2 _task_data_to_dict + json.dumps",
                note=OFFICIAL_MISSING,
                extra={"body_bytes": len(encode_task(our_task()))},
            )
        ]
    size = check_same_body()
    client = official_client()
    try:
        ours = loop("encode(TASK)", {"encode": encode_task, "TASK": our_task()})
        theirs = loop(
            "body(client, TASK)",
            {"body": official_body, "client": client, "TASK": official_task()},
        )
        pair = compare(
            ours,
            theirs,
            n=plan.encodes,
            rounds=plan.rounds,
            chunks=plan.chunks,
            warmup=plan.encodes // 4,
        )
    finally:
        client.close()
    speedup = Summary.of([b / a for a, b in zip(pair.a.samples, pair.b.samples, strict=True)])
    return [
        Row(
            id="5",
            figure="encode_task of the trace",
            ours=Summary.of([v / 1000 for v in pair.a.samples]),
            baseline=Summary.of([v / 1000 for v in pair.b.samples]),
            unit="µs/trace",
            value=speedup,
            value_unit="x faster",
            target=">= 25x faster",
            passed=speedup.median >= 25.0,
            baseline_label="infinium-o2 _task_data_to_dict + json.dumps",
            note=f"bodies identical byte for byte ({size:,} bytes)",
            extra={"body_bytes": size},
        )
    ]
