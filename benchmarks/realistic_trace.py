"""The one realistic trace every figure uses (~11.5 KB on the wire), ours and the official client's.

10 steps (5 with an LLM call, 3 with a tool call, 2 decisions with a little
metadata), previews of about 200 characters, LLM usage with the 5 calls, an
expected outcome, an environment with 5 custom tags and two small sections
(``time_tracking`` and ``general``).  The text is generated from a fixed seed,
so every run and every version benchmarks exactly the same bytes.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import random
from typing import Any

from infinium_logging.convert import to_task
from infinium_logging.model import TaskData, encode_task

__all__ = [
    "AGENT_ID",
    "AGENT_SECRET",
    "OFFICIAL_MISSING",
    "STEP_EVENTS",
    "check_same_body",
    "official_available",
    "official_body",
    "official_client",
    "official_task",
    "our_task",
    "step_events",
    "trace_dict",
]

#: Credentials every benchmark server accepts (the official client wants a UUID and 8+ chars).
AGENT_ID = "6f1c2b9e-8d7a-4e61-9f3b-2a5c6d7e8f90"
AGENT_SECRET = "bench-secret-not-real"

_PROSE = (
    "the agent compared the invoice lines against the published pricing table and found that "
    "one monthly subscription fee was charged twice because a retry of the payment webhook "
    "created a second order; the refund policy allows an automatic refund below the approval "
    "threshold, so it drafted a reply that explains the duplicate charge, cites the policy "
    "section, files the refund request and flags the account for a human review of the "
    "billing integration before the next cycle"
)
_WORDS = tuple(_PROSE.split())

_MODELS = (
    ("gpt-4o-2024-08-06", "openai", "plan"),
    ("claude-3-5-sonnet-20241022", "anthropic", "classify"),
    ("gpt-4o-mini-2024-07-18", "openai", "extract"),
    ("gemini-1.5-pro-002", "google", "draft_reply"),
    ("claude-3-5-haiku-20241022", "anthropic", "verify"),
)
_TOOLS = ("crm.lookup_account", "billing.list_invoices", "kb.search_policies")
# What each of the 10 steps is: 5 LLM calls, 3 tool calls, 2 decisions.
_KINDS = ("llm", "tool", "llm", "tool", "llm", "decision", "llm", "tool", "llm", "decision")


def _text(rng: random.Random, length: int) -> str:
    """Plausible English of exactly ``length`` characters, ending with a full stop."""
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[: length - 1].rstrip().ljust(length - 1, "s") + "."


def trace_dict() -> dict[str, Any]:
    """The trace as a plain dict of TaskData fields (only the fields that are set); a new copy."""
    return copy.deepcopy(_TRACE)


def _build() -> dict[str, Any]:
    rng = random.Random(20260115)
    calls: list[dict[str, Any]] = []
    for i, (model, provider, purpose) in enumerate(_MODELS):
        calls.append(
            {
                "model": model,
                "provider": provider,
                "prompt_tokens": 1200 + 137 * i,
                "completion_tokens": 250 + 41 * i,
                "latency_ms": 800 + 113 * i,
                "temperature": 0.2,
                "purpose": purpose,
            }
        )
    steps: list[dict[str, Any]] = []
    llm_index = tool_index = 0
    for number, kind in enumerate(_KINDS, start=1):
        step: dict[str, Any] = {
            "step_number": number,
            "action": {"llm": "llm_call", "tool": "tool_call", "decision": "decision"}[kind],
            "description": _text(rng, 90),
            "duration_ms": 150 + 97 * number,
            "input_preview": _text(rng, 200),
            "output_preview": _text(rng, 200),
        }
        if kind == "llm":
            step["llm_call"] = dict(calls[llm_index])
            llm_index += 1
        elif kind == "tool":
            step["tool_call"] = {
                "tool_name": _TOOLS[tool_index],
                "duration_ms": 120 + 35 * tool_index,
                "input_summary": _text(rng, 120),
                "output_summary": _text(rng, 160),
                "http_status": 200,
            }
            tool_index += 1
        else:
            step["metadata"] = {"branch": "auto_refund", "confidence": 0.92, "rule": "R-17"}
        steps.append(step)
    prompt = sum(c["prompt_tokens"] for c in calls)
    completion = sum(c["completion_tokens"] for c in calls)
    return {
        "name": "Resolve billing dispute ticket #48213",
        "description": _text(rng, 300),
        "current_datetime": "2026-01-15T10:30:00.000000Z",
        "duration": 12.345,
        "time_tracking": {
            "start_time": "2026-01-15T10:29:47.655000Z",
            "end_time": "2026-01-15T10:30:00.000000Z",
        },
        "general": {
            "tools_used": list(_TOOLS),
            "tags": ["billing", "refund", "escalated"],
        },
        "llm_usage": {
            "model": "multiple",
            "provider": "multiple",
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "estimated_cost_usd": 0.0421,
            "api_calls_count": len(calls),
            "total_latency_ms": sum(c["latency_ms"] for c in calls),
            "calls": calls,
        },
        "input_summary": _text(rng, 500),
        "output_summary": _text(rng, 520),
        "steps": steps,
        "expected_outcome": {
            "task_objective": _text(rng, 150),
            "required_deliverables": ["customer reply", "refund request", "ticket note"],
            "constraints": ["no refunds above 500 USD without approval", "cite policy sections"],
            "acceptance_criteria": ["reply sent", "refund filed or escalated"],
        },
        "environment": {
            "framework": "langgraph",
            "framework_version": "0.2.45",
            "python_version": "3.11.7",
            "sdk_version": "1.2.0",
            "runtime": "kubernetes",
            "region": "eu-west-1",
            "custom_tags": {
                "team": "support-automation",
                "deployment": "prod-blue",
                "tenant": "acme-corp",
                "pipeline": "billing-v3",
                "git_sha": "4f9c2ab",
            },
        },
    }


_TRACE = _build()


def our_task() -> TaskData:
    """The trace as our :class:`~infinium_logging.model.TaskData` (strict ``to_task``)."""
    return to_task(trace_dict())


def step_events() -> list[tuple[str, dict[str, Any]]]:
    """The 10 steps as ``(message, fields)`` log events: what ``task()`` turns back into steps."""
    events = []
    for step in _TRACE["steps"]:
        fields = {
            key: copy.deepcopy(value)
            for key, value in step.items()
            if key not in ("step_number", "description", "metadata")
        }
        fields.update(step.get("metadata") or {})
        events.append((step["description"], fields))
    return events


STEP_EVENTS = step_events()


# --- the official client (infinium-o2) ---------------------------------------------------------

#: What the table says where a comparison needs the official client and it is not installed.
OFFICIAL_MISSING = "infinium-o2 not installed (pip install -e '.[bench]'): not compared"


def official_available() -> bool:
    """Whether the official client (a benchmark-only dependency) can be imported."""
    return importlib.util.find_spec("infinium") is not None


def official_task() -> Any:
    """The same trace built from the official client's dataclasses."""
    # The official client is a benchmark-only dependency: imported where it is needed.
    from infinium import types as t  # noqa: PLC0415

    d = trace_dict()

    def llm(call: dict[str, Any] | None) -> Any:
        return None if call is None else t.LlmCall(**call)

    def tool(call: dict[str, Any] | None) -> Any:
        return None if call is None else t.ToolCall(**call)

    steps = [
        t.ExecutionStep(
            **{**s, "llm_call": llm(s.get("llm_call")), "tool_call": tool(s.get("tool_call"))}
        )
        for s in d["steps"]
    ]
    usage = d["llm_usage"]
    return t.TaskData(
        name=d["name"],
        description=d["description"],
        current_datetime=d["current_datetime"],
        duration=d["duration"],
        time_tracking=t.TimeTracking(**d["time_tracking"]),
        general=t.General(**d["general"]),
        llm_usage=t.LlmUsage(**{**usage, "calls": [llm(c) for c in usage["calls"]]}),
        input_summary=d["input_summary"],
        output_summary=d["output_summary"],
        steps=steps,
        expected_outcome=t.ExpectedOutcome(**d["expected_outcome"]),
        environment=t.EnvironmentContext(**d["environment"]),
    )


def official_client(base_url: str = "http://127.0.0.1:9/api/v1", **options: Any) -> Any:
    """An ``infinium.InfiniumClient`` with the benchmark credentials (close it after use)."""
    from infinium import InfiniumClient  # noqa: PLC0415

    return InfiniumClient(
        agent_id=AGENT_ID, agent_secret=AGENT_SECRET, base_url=base_url, **options
    )


def official_body(client: Any, task: Any) -> bytes:
    """The exact body the official client POSTs: ``_task_data_to_dict`` then httpx's ``json=``."""
    return json.dumps(
        client._task_data_to_dict(task), ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def check_same_body() -> int:
    """Raise unless our body equals the official client's byte for byte; return its size."""
    client = official_client()
    try:
        theirs = official_body(client, official_task())
    finally:
        client.close()
    ours = encode_task(our_task())
    if ours != theirs:
        raise AssertionError(
            "encode_task differs from the official client's body "
            f"({len(ours)} vs {len(theirs)} bytes)"
        )
    return len(ours)
