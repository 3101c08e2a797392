"""OpenTelemetry GenAI spans: every LLM and tool call is a step, with one line and no other code.

    pip install 'infinium-logging[otel]' openai opentelemetry-instrumentation-openai-v2
    python examples/otel_genai.py

Runs offline: it starts a small OpenAI-compatible server on 127.0.0.1 for the real
``openai`` SDK to talk to.  Traces go where ``INFINIUM_BASE_URL``,
``INFINIUM_AGENT_ID`` and ``INFINIUM_AGENT_SECRET`` say; when ``INFINIUM_BASE_URL``
is not set, a local collector is started in this process and what it received is
printed at the end.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
from _local import local_collector_unless_configured, show
from opentelemetry import trace

from infinium_logging import get_default_exporter, task
from infinium_logging.otel import instrument


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers chat completions as OpenAI does: a tool call when tools are offered."""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        message: dict[str, Any] = {"role": "assistant", "content": "It is sunny in Paris."}
        finish = "stop"
        if request.get("tools"):
            function = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
            call = {"id": "call_1", "type": "function", "function": function}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        body = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_767_225_600,
                "model": request["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


WEATHER_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


def main() -> None:
    collector = local_collector_unless_configured()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    # The one line: a span processor on the global provider, the installed instrumentations on.
    print("instrumented:", instrument(capture_content=True))

    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="sk-local-demo"
    )
    ask: Any = [{"role": "user", "content": "What is the weather in Paris?"}]

    # Inside task(): each call is a step of the task's trace.
    with task("Answer the weather question"):
        client.chat.completions.create(model="gpt-4o-mini", messages=ask, tools=[WEATHER_TOOL])
        # A tool of your own, as a GenAI tool span: a tool_call step.
        tracer = trace.get_tracer("weather_agent")
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"}
        with tracer.start_as_current_span("execute_tool get_weather", attributes=attributes):
            pass
        client.chat.completions.create(model="gpt-4o-mini", messages=ask)

    # Outside any task: the OpenTelemetry trace is one trace when its root span ends.
    with tracer.start_as_current_span("Nightly weather digest"):
        client.chat.completions.create(model="gpt-4o-mini", messages=ask)

    get_default_exporter().flush(timeout=10)
    server.shutdown()
    if collector is not None:
        collector.wait_for(2, timeout=10)
        show(collector)
        collector.stop()


if __name__ == "__main__":
    main()
