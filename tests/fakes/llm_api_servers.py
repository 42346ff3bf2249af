"""Local fake servers that speak enough of the OpenAI and Anthropic HTTP APIs for adapter tests.

One real HTTP server on 127.0.0.1 (a free port, a background thread) answers both
``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic), as JSON or as
server-sent events when the request asks to stream. Tests script it with a queue of
API-neutral ``Reply`` objects, rendered in whichever API the request came in, and read back
the requests it received to assert what an adapter put on the wire. The real SDKs talk to it
unpatched, so their parsing and error mapping are exercised for real.

    with fake_llm_server() as server:
        server.reply_text("hello", prompt_tokens=3, completion_tokens=1)
        model = OpenAIModel(model="gpt-x", api_key="k", base_url=server.openai_base_url)
        ...
        assert server.last_request.body["messages"] == [...]
"""

from __future__ import annotations

import collections
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


@dataclass
class FakeToolCall:
    """A tool call the fake model makes; ``arguments`` as a string is sent verbatim (OpenAI)."""

    id: str
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass
class Reply:
    """One scripted answer, rendered in the API of the request that consumes it.

    ``status`` >= 400 makes it an error reply (``error_body`` or a default body in the API's
    shape, plus ``headers``). ``delay_seconds`` waits before answering; ``stall_seconds``
    waits after the first streamed event (to time out mid-stream). ``stream_error_type`` sends
    an Anthropic ``error`` event inside a 200 stream. ``chunks`` is how text is streamed
    (default: word by word).
    """

    text: str | None = None
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    prompt_tokens: int = 10
    completion_tokens: int = 5
    chunks: list[str] | None = None
    status: int = 200
    error_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    stall_seconds: float = 0.0
    stream_error_type: str | None = None

    def text_chunks(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        return re.findall(r"\S+\s*|\s+", self.text or "")


@dataclass
class RecordedRequest:
    """A request the fake received: path, headers (lower-cased names) and the JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeLLMServer:
    """A scripted fake of the OpenAI and Anthropic HTTP APIs on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._replies: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """Root URL; what the Anthropic SDK takes as ``base_url``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What the OpenAI SDK takes as ``base_url`` (it includes ``/v1``)."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def last_request(self) -> RecordedRequest:
        assert self.requests, "the fake received no request"
        return self.requests[-1]

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes handlers sleeping on a delay or a stall
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        """Forget received requests and unconsumed replies, to share one server across tests."""
        with self._lock:
            self._replies.clear()
        self.requests.clear()

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def reply_text(self, text: str, **options: Any) -> None:
        self.reply(Reply(text=text, **options))

    def reply_tool_calls(
        self, *calls: FakeToolCall, text: str | None = None, **options: Any
    ) -> None:
        self.reply(Reply(text=text, tool_calls=list(calls), **options))

    def reply_error(
        self,
        status: int,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.reply(Reply(status=status, error_body=body, headers=dict(headers or {})))

    @property
    def pending(self) -> int:
        """Scripted replies not consumed yet."""
        with self._lock:
            return len(self._replies)

    def _next_reply(self) -> Reply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else None

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the server is stopping; False when it is."""
        return not self._closing.wait(seconds) if seconds > 0 else True


@contextmanager
def fake_llm_server() -> Iterator[FakeLLMServer]:
    """A started ``FakeLLMServer``, stopped on exit. Use it in a pytest fixture (any scope;
    call ``reset()`` between tests when sharing one)."""
    server = FakeLLMServer().start()
    try:
        yield server
    finally:
        server.stop()


def closed_port() -> int:
    """A localhost port nothing listens on, to provoke a refused connection."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out hang up on purpose; a broken pipe then is expected, not news.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        fake.requests.append(
            RecordedRequest(
                method="POST",
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
        )
        if self.path not in (OPENAI_PATH, ANTHROPIC_PATH):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        openai = self.path == OPENAI_PATH
        reply = fake._next_reply()
        if reply is None:
            reply = Reply(status=500, error_body=_error_body(openai, 500, "no scripted reply"))
        if not fake._wait(reply.delay_seconds):
            return
        try:
            if reply.status >= 400:
                error = reply.error_body or _error_body(openai, reply.status, "scripted error")
                self._json(reply.status, error, reply.headers)
            elif body.get("stream"):
                events = _openai_events(body, reply) if openai else _anthropic_events(body, reply)
                self._sse(events, reply)
            else:
                payload = _openai_json(body, reply) if openai else _anthropic_json(body, reply)
                self._json(200, payload, reply.headers)
        except OSError:
            pass  # the client hung up (a timeout test); nothing left to tell it

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[str], reply: Reply) -> None:
        # HTTP/1.0 without a length: the body ends when the connection closes, as SSE allows.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        for position, event in enumerate(events):
            self.wfile.write(event.encode())
            self.wfile.flush()
            if position == 0 and not self.server.fake._wait(reply.stall_seconds):
                return


def _error_body(openai: bool, status: int, message: str) -> dict[str, Any]:
    if openai:
        return {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }
    return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}


def _argument_pieces(arguments: str) -> list[str]:
    """Split a JSON string in three, as providers stream arguments in arbitrary fragments."""
    if len(arguments) < 3:
        return [arguments]
    third = len(arguments) // 3
    return [arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]


# --- OpenAI chat completions -------------------------------------------------------------


def _openai_json(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }
            for call in reply.tool_calls
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": request.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def _openai_events(request: dict[str, Any], reply: Reply) -> list[str]:
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": request.get("model", "fake"),
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events.extend(chunk({"content": piece}) for piece in reply.text_chunks())
    for index, call in enumerate(reply.tool_calls):
        opening = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [opening]}))
        events.extend(
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in _argument_pieces(call.arguments_json())
        )
    events.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if (request.get("stream_options") or {}).get("include_usage"):
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        events.append(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n")
    events.append("data: [DONE]\n\n")
    return events


# --- Anthropic messages ------------------------------------------------------------------


def _anthropic_json(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    content.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        for call in reply.tool_calls
    )
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "fake"),
        "content": content,
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens},
    }


def _anthropic_events(request: dict[str, Any], reply: Reply) -> list[str]:
    def event(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "fake"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1},
    }
    events = [event("message_start", {"message": message}), event("ping", {})]
    if reply.stream_error_type:
        error = {"type": reply.stream_error_type, "message": "scripted stream error"}
        return [*events, event("error", {"error": error})]
    index = 0
    if reply.text:
        events.append(
            event(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            )
        )
        events.extend(
            event(
                "content_block_delta",
                {"index": index, "delta": {"type": "text_delta", "text": piece}},
            )
            for piece in reply.text_chunks()
        )
        events.append(event("content_block_stop", {"index": index}))
        index += 1
    for call in reply.tool_calls:
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        events.append(event("content_block_start", {"index": index, "content_block": block}))
        events.extend(
            event(
                "content_block_delta",
                {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
            )
            for piece in _argument_pieces(call.arguments_json())
        )
        events.append(event("content_block_stop", {"index": index}))
        index += 1
    delta = {"stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None}
    events.append(
        event(
            "message_delta", {"delta": delta, "usage": {"output_tokens": reply.completion_tokens}}
        )
    )
    events.append(event("message_stop", {}))
    return events
