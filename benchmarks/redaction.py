"""Figure 13: redaction of the realistic trace on the sender thread, against building and
encoding it there.

What a sender adds per trace is :meth:`~infinium_logging.redact.Redactor.encoded`
over the trace and its body: a scan of the body that, for a trace without
secrets (nearly all of them), is all it costs.  The baseline is what the sender
does with a submitted dict anyway: build it (lenient ``to_task``) and encode it.
13b is a trace with one key in a step's preview: the scan finds it, and every
string is then visited.  13 scans in one pass with Hyperscan (the ``fast`` extra,
which ``dev`` installs); 13c is the same scan without it, as a plain install does
it (one ``re`` pass per hint).  The caller's side is untouched (figures 1-4 and 10
measure it; ``--compare`` shows them against an earlier run).
"""

from __future__ import annotations

from infinium_logging import _redact_scan
from infinium_logging.convert import to_task
from infinium_logging.model import encode_task
from infinium_logging.redact import Redactor

from .common import Plan
from .realistic_trace import AGENT_SECRET, our_task, trace_dict
from .timing import Row, Summary, compare, loop

__all__ = ["figure_13"]

#: A key as an agent's tool output would carry it (not a real one).
_KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zT3BlbkFJ7Qx"


def figure_13(plan: Plan) -> list[Row]:
    """Redaction cost per trace as a share of building and encoding it; target < 20%."""
    redactor = Redactor("secrets", secrets=(AGENT_SECRET,))
    redactor.prepare()  # as a sender thread does first
    plain = Redactor("secrets", secrets=(AGENT_SECRET,), one_pass=False)  # a plain install
    one_pass = _redact_scan.available() is not None
    task = our_task()
    body = encode_task(task)
    assert redactor.encoded(task, body) is task, "the realistic trace holds nothing to redact"
    seeded = trace_dict()
    seeded["steps"][3]["output_preview"] = f"token issued: {_KEY}"
    dirty = to_task(seeded, strict=False)
    dirty_body = encode_task(dirty)
    assert redactor.encoded(dirty, dirty_body) is not dirty
    baseline = loop(
        "encode(build(DICT, strict=False))",
        {"encode": encode_task, "build": to_task, "DICT": trace_dict()},
    )
    rows = []
    for row_id, trace, trace_body, target, used in (
        ("13", task, body, "< 20%", redactor),
        ("13b", dirty, dirty_body, "—", redactor),
        ("13c", task, body, "—", plain),
    ):
        ours = loop(
            "redact(TASK, BODY)", {"redact": used.encoded, "TASK": trace, "BODY": trace_body}
        )
        pair = compare(
            ours,
            baseline,
            n=plan.encodes,
            rounds=plan.rounds,
            chunks=plan.chunks,
            warmup=plan.encodes // 4,
        )
        share = Summary.of([100.0 * r for r in pair.ratio.samples])
        figure = {
            "13": "redaction on the sender, realistic trace",
            "13b": "redaction on the sender, realistic trace with a key in it",
            "13c": "redaction on the sender, realistic trace, without the fast extra",
        }[row_id]
        notes = {
            "13": "one pass (Hyperscan)" if one_pass else "fast extra not installed: re passes",
            "13b": "found: every string visited and the trace copied",
            "13c": "one re pass per hint",
        }
        rows.append(
            Row(
                id=row_id,
                figure=figure,
                ours=Summary.of([v / 1000 for v in pair.a.samples]),
                baseline=Summary.of([v / 1000 for v in pair.b.samples]),
                unit="µs/trace",
                value=share,
                value_unit="% of build+encode",
                target=target,
                passed=(share.median < 20.0) if row_id == "13" else None,
                baseline_label="to_task(strict=False) + encode_task on the sender",
                note=notes[row_id],
            )
        )
    return rows
