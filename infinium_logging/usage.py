"""LLM usage: the LLM calls of a task's steps added up into its ``llm_usage``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .fields import as_float, as_int

__all__ = [
    "Usage",
    "call_field",
]


def call_field(call: object, name: str) -> object:
    """One field of an LlmCall given as a Struct or a dict."""
    if type(call) is dict or isinstance(call, Mapping):
        return call.get(name)
    return getattr(call, name, None)


class Usage:
    """Running totals of a task's LLM calls, for ``llm_usage``."""

    __slots__ = (
        "calls",
        "completion",
        "cost",
        "count",
        "latency",
        "models",
        "prompt",
        "providers",
    )

    def __init__(self) -> None:
        self.count = 0
        self.prompt: int | None = None
        self.completion: int | None = None
        self.latency: int | None = None
        self.cost: float | None = None
        self.models: list[str] = []
        self.providers: list[str] = []
        self.calls: list[Any] = []

    def add(self, call: object, extra: Mapping[str, Any] | None, keep: bool) -> None:
        """Count one call; ``keep`` says whether it is also listed in ``calls``."""
        self.count += 1
        prompt = as_int(call_field(call, "prompt_tokens"))
        if prompt is not None:
            self.prompt = (self.prompt or 0) + prompt
        completion = as_int(call_field(call, "completion_tokens"))
        if completion is not None:
            self.completion = (self.completion or 0) + completion
        latency = as_int(call_field(call, "latency_ms"))
        if latency is not None:
            self.latency = (self.latency or 0) + latency
        if extra:
            cost = as_float(
                extra.get("llm_call.estimated_cost_usd", extra.get("llm_call.cost_usd"))
            )
            if cost is not None:
                self.cost = (self.cost or 0.0) + cost
        for name, seen in (("model", self.models), ("provider", self.providers)):
            text = call_field(call, name)
            if isinstance(text, str) and text and text not in seen and len(seen) < 2:
                seen.append(text)
        if keep:
            self.calls.append(call)

    def merge(self, later: Usage, limit: int) -> None:
        """Add the calls counted in ``later`` (all made after this one's), keeping at most
        ``limit`` in ``calls``: the same totals as adding them here one by one."""
        self.count += later.count
        if later.prompt is not None:
            self.prompt = (self.prompt or 0) + later.prompt
        if later.completion is not None:
            self.completion = (self.completion or 0) + later.completion
        if later.latency is not None:
            self.latency = (self.latency or 0) + later.latency
        if later.cost is not None:
            self.cost = (self.cost or 0.0) + later.cost
        for mine, theirs in ((self.models, later.models), (self.providers, later.providers)):
            for text in theirs:
                if text not in mine and len(mine) < 2:
                    mine.append(text)
        room = limit - len(self.calls)
        if room > 0:
            self.calls.extend(later.calls[:room])

    def as_dict(self) -> dict[str, Any]:
        """``llm_usage``: sums, ``total_tokens``, ``api_calls_count``, and model/provider
        when there is exactly one (``"multiple"`` otherwise)."""
        usage: dict[str, Any] = {"api_calls_count": self.count}
        if self.models:
            usage["model"] = self.models[0] if len(self.models) == 1 else "multiple"
        if self.providers:
            usage["provider"] = self.providers[0] if len(self.providers) == 1 else "multiple"
        if self.prompt is not None:
            usage["prompt_tokens"] = self.prompt
        if self.completion is not None:
            usage["completion_tokens"] = self.completion
        if self.prompt is not None or self.completion is not None:
            usage["total_tokens"] = (self.prompt or 0) + (self.completion or 0)
        if self.cost is not None:
            usage["estimated_cost_usd"] = round(self.cost, 10)
        if self.latency is not None:
            usage["total_latency_ms"] = self.latency
        if self.calls:
            usage["calls"] = list(self.calls)
        return usage
