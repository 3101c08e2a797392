"""A small OpenAI-compatible provider on 127.0.0.1 for the tests: the real SDK talks to it.

``POST /v1/chat/completions`` answers by the request: a model named
``missing-model`` gets a 404 error answer; a request with ``tools`` gets a
tool-call answer; ``stream: true`` gets server-sent events, with a usage chunk
last when ``stream_options.include_usage`` asks for one; anything else a plain
answer with usage.  ``POST /v1/embeddings`` answers one vector.  ``POST /v1/messages``
answers as Anthropic's Messages API: a ``tool_use`` block when ``tools`` are offered.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "Your refund of 19.99 EUR is on its way."
USAGE = {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43}
STREAM_USAGE = {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22}
ANTHROPIC_USAGE = {"input_tokens": 25, "output_tokens": 8}


def _completion(model: str, message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test-1",
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": f"{model}-2024-07-18",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": USAGE,
    }


def _message(model: str, tool: bool) -> dict[str, Any]:
    """An Anthropic Messages API answer."""
    content: list[dict[str, Any]] = [{"type": "text", "text": ANSWER}]
    if tool:
        call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather"}
        content = [{**call, "input": {"city": "Paris"}}]
    return {
        "id": "msg_test_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool else "end_turn",
        "stop_sequence": None,
        "usage": ANTHROPIC_USAGE,
    }


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read what arrived, not the server's log."""

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        model = str(request.get("model", "gpt-4o-mini"))
        if self.path.endswith("/messages"):
            self._json(200, _message(model, bool(request.get("tools"))))
            return
        if self.path.endswith("/embeddings"):
            self._json(
                200,
                {
                    "object": "list",
                    "model": model,
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                    "usage": {"prompt_tokens": 4, "total_tokens": 4},
                },
            )
            return
        if model == "missing-model":
            error = {"message": "The model `missing-model` does not exist", "type": "not_found"}
            self._json(404, {"error": {**error, "param": None, "code": "model_not_found"}})
            return
        if request.get("stream"):
            self._stream(model, bool((request.get("stream_options") or {}).get("include_usage")))
            return
        if request.get("tools"):
            call = {
                "id": "call_weather_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            self._json(200, _completion(model, message, "tool_calls"))
            return
        self._json(200, _completion(model, {"role": "assistant", "content": ANSWER}, "stop"))

    def _stream(self, model: str, usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = {"id": "chatcmpl-stream-1", "object": "chat.completion.chunk", "created": 1}
        base["model"] = f"{model}-2024-07-18"
        pieces = [
            {"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None},
            {"index": 0, "delta": {"content": "lo"}, "finish_reason": None},
            {"index": 0, "delta": {}, "finish_reason": "stop"},
        ]
        chunks: list[dict[str, Any]] = [{**base, "choices": [piece]} for piece in pieces]
        if usage:
            chunks.append({**base, "choices": [], "usage": STREAM_USAGE})
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class FakeProvider:
    """The server, started on a free port of 127.0.0.1; ``base_url`` is the SDK's base URL."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the openai SDK's base URL."""
        return f"{self.root}/v1"

    @property
    def root(self) -> str:
        """``http://127.0.0.1:PORT``: the anthropic SDK's base URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
