"""A real headless Chromium for the viewer's tests and screenshots, and traces to show in it."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Any

import urllib3
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from infinium_logging.collector import LocalCollector
from infinium_logging.convert import to_task
from infinium_logging.model import encode_task

INSTALL_HINT = (
    "the trace viewer's tests drive a real headless Chromium and found none. Install "
    "Debian's packages (as root): apt-get update && apt-get install -y chromium chromium-driver "
    "(or set CHROMIUM and CHROMEDRIVER to the browser and its driver)"
)

# Without the background-networking flags Chromium keeps calling out to update, sync and
# safe-browsing services; the tests must send traffic to loopback only.
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def browser_paths() -> tuple[str, str] | None:
    """Chromium and chromedriver, when both are installed."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    driver = (
        os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    )
    if os.access(chromium, os.X_OK) and os.access(driver, os.X_OK):
        return chromium, driver
    return None


def start_browser(profile: str, width: int = 1280, height: int = 900) -> WebDriver:
    """A headless Chromium with a fresh profile in ``profile``; RuntimeError if none is installed."""
    paths = browser_paths()
    if paths is None:
        raise RuntimeError(INSTALL_HINT)
    chromium, driver = paths
    options = Options()
    options.binary_location = chromium
    for flag in _FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so selenium never looks one up (or downloads one).
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def new_profile() -> tempfile.TemporaryDirectory[str]:
    """A fresh, throw-away browser profile directory."""
    return tempfile.TemporaryDirectory(prefix="infinium-viewer-chromium-")


AGENT_ID = "5b0e6f2a-8c1d-4e3f-9a7b-2c4d6e8f0a1b"
OTHER_AGENT_ID = "9d3c2b1a-0f9e-4d8c-b7a6-958473625140"
AGENT_SECRET = "agent-secret-that-must-not-show"


def post_trace(
    collector: LocalCollector,
    pool: urllib3.PoolManager,
    trace: dict[str, Any],
    agent_id: str = AGENT_ID,
) -> str:
    """Send one trace as the client does; returns the collector's trace id."""
    body = encode_task(to_task(trace))
    response = pool.request(
        "POST",
        f"{collector.base_url}/agents/{agent_id}/trace",
        body=body,
        headers={
            "Content-Type": "application/json",
            "x-agent-id": agent_id,
            "x-agent-key": AGENT_SECRET,
        },
    )
    assert response.status == 200, response.data
    trace_id = response.json()["traceId"]
    assert isinstance(trace_id, str)
    return trace_id


def simple_trace(name: str, *, duration: float = 1.5, error: bool = False) -> dict[str, Any]:
    """A small trace: one LLM step and one tool step, optionally an error."""
    trace: dict[str, Any] = {
        "name": name,
        "description": f"{name}: a short run.",
        "current_datetime": "2026-12-07T14:02:11.000000Z",
        "duration": duration,
        "steps": [
            {
                "step_number": 1,
                "action": "llm.chat",
                "description": "Plan the answer",
                "duration_ms": 420,
                "llm_call": {
                    "model": "gpt-4o-mini",
                    "provider": "openai",
                    "prompt_tokens": 310,
                    "completion_tokens": 95,
                },
            },
            {
                "step_number": 2,
                "action": "tool.search_orders",
                "description": "Look the order up",
                "duration_ms": 180,
                "tool_call": {"tool_name": "search_orders", "duration_ms": 180},
            },
        ],
    }
    if error:
        trace["errors"] = [
            {"error_type": "TimeoutError", "message": "the shipping API did not answer in 10 s"}
        ]
    return trace


def rich_trace() -> dict[str, Any]:
    """A support agent's run with every part the viewer shows: LLM and tool steps, a failed
    tool call with its stack trace, usage over two models, expected outcome, environment and
    tags, a section, and the marks of a trace that ``fit_task`` shrank."""
    stack = (
        "Traceback (most recent call last):\n"
        '  File "agent/tools.py", line 88, in refund\n'
        "    response = client.post(url, json=payload, timeout=10)\n"
        '  File "httpx/_client.py", line 1145, in post\n'
        "    raise ReadTimeout(message)\n"
        "httpx.ReadTimeout: timed out after 10.0 s"
    )
    return {
        "name": "Refund request #48213",
        "description": "Read the customer's email, checked the order and issued a partial refund.",
        "current_datetime": "2026-12-07T14:02:11.000000Z",
        "duration": 6.42,
        "input_summary": "Email: 'My blender arrived with a cracked jar, I want my money back.'",
        "output_summary": "Refunded 35.00 EUR for the jar; replied to the customer with the label.",
        "support": {
            "call_id": "TCK-48213",
            "issue_type": "damaged item",
            "priority": "high",
            "resolution": "partial refund",
            "follow_up_required": False,
        },
        "general": {"tags": ["refunds", "eu-west", "canary"], "retries": 1},
        "llm_usage": {
            "prompt_tokens": 4210,
            "completion_tokens": 688,
            "total_tokens": 4898,
            "estimated_cost_usd": 0.0213,
            "api_calls_count": 3,
        },
        "steps": [
            {
                "step_number": 1,
                "action": "classify_email",
                "description": "Classify the request",
                "duration_ms": 810,
                "input_preview": "My blender arrived with a cracked jar, I want my money back.",
                "output_preview": '{"intent": "refund", "confidence": 0.94}',
                "llm_call": {
                    "model": "gpt-4o-mini",
                    "provider": "openai",
                    "prompt_tokens": 612,
                    "completion_tokens": 41,
                    "purpose": "classification",
                },
            },
            {
                "step_number": 2,
                "action": "lookup_order",
                "description": "Find the order",
                "duration_ms": 240,
                "tool_call": {
                    "tool_name": "orders.lookup",
                    "duration_ms": 240,
                    "input_summary": "customer=c_1842 sku=BL-400",
                    "output_summary": "order 48213, paid 89.00 EUR, delivered 2 days ago",
                    "http_status": 200,
                },
                "metadata": {"cache": "miss", "region": "eu-west-1"},
            },
            {
                "step_number": 3,
                "action": "issue_refund",
                "description": "Refund the whole order",
                "duration_ms": 10_030,
                "tool_call": {
                    "tool_name": "payments.refund",
                    "duration_ms": 10_030,
                    "input_summary": "order=48213 amount=89.00",
                    "http_status": 504,
                    "error": {
                        "error_type": "ReadTimeout",
                        "message": "payments API timed out after 10.0 s",
                        "recoverable": True,
                        "retry_count": 1,
                        "stack_trace": stack,
                    },
                },
            },
            {
                "step_number": 4,
                "action": "decide_amount",
                "description": "Refund only the jar",
                "duration_ms": 1_420,
                "llm_call": {
                    "model": "claude-sonnet-4",
                    "provider": "anthropic",
                    "prompt_tokens": 2_950,
                    "completion_tokens": 402,
                    "purpose": "decision",
                },
            },
            {
                "step_number": 5,
                "action": "issue_refund",
                "description": "Refund 35.00 EUR",
                "duration_ms": 520,
                "tool_call": {"tool_name": "payments.refund", "duration_ms": 520},
            },
            {
                "step_number": 6,
                "action": "draft_reply",
                "description": "Write the reply",
                "duration_ms": 1_150,
                "output_preview": "Hello Ana, I'm sorry about the jar. I've refunded 35.00 EUR ...",
                "llm_call": {
                    "model": "gpt-4o-mini",
                    "provider": "openai",
                    "prompt_tokens": 648,
                    "completion_tokens": 245,
                },
            },
        ],
        "expected_outcome": {
            "task_objective": "Resolve the refund request within policy",
            "required_deliverables": ["a refund or a refusal", "a reply to the customer"],
            "constraints": ["refund at most the price paid"],
            "acceptance_criteria": ["the customer is told the amount"],
        },
        "environment": {
            "framework": "langgraph",
            "framework_version": "0.2.60",
            "python_version": "3.12.7",
            "runtime": "kubernetes",
            "region": "eu-west-1",
            "custom_tags": {
                "team": "support-bots",
                "truncated": "true",
                "truncated_fields": "step previews",
            },
        },
        "errors": [
            {
                "error_type": "ReadTimeout",
                "message": "payments API timed out after 10.0 s (retried once, then succeeded)",
                "recoverable": True,
                "retry_count": 1,
                "stack_trace": stack,
            }
        ],
    }


def fresh_agent() -> str:
    """A new agent id, to keep traces of different tests apart."""
    return str(uuid.uuid4())
