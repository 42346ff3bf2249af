"""AnthropicModel against a local fake of the Messages API, through the real SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from cloudagents.adapters.llm.anthropic import AnthropicModel
from cloudagents.domain.errors import ModelError
from cloudagents.domain.messages import (
    GenerationParams,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from tests.fakes.llm_api_servers import (
    FakeLLMServer,
    FakeToolCall,
    Reply,
    closed_port,
    fake_llm_server,
)

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_script(server: FakeLLMServer) -> None:
    server.reset()


@pytest.fixture(scope="module")
async def model(server: FakeLLMServer) -> AsyncIterator[AnthropicModel]:
    # Shared: building an SDK client costs tens of milliseconds (TLS context setup).
    client = AnthropicModel(
        model="claude-test",
        api_key="sk-ant-test",
        base_url=server.anthropic_base_url,
        headers={"X-Team": "agents"},
        timeout_seconds=5,
    )
    yield client
    await client.aclose()


def ask(text: str = "Hi", **kwargs: object) -> ModelRequest:
    return ModelRequest.model_validate(
        {
            "model": "claude-test",
            "messages": [
                Message(role="system", content="Be brief."),
                Message(role="user", content=text),
            ],
            **kwargs,
        }
    )


async def test_text_reply_with_usage_and_request_on_the_wire(
    server: FakeLLMServer, model: AnthropicModel
) -> None:
    server.reply_text("Hello there!", prompt_tokens=12, completion_tokens=3)
    generation = GenerationParams(
        temperature=0.3,
        max_tokens=200,
        top_p=0.9,
        frequency_penalty=0.5,
        presence_penalty=-0.5,
        stop_sequences=["END"],
    )

    response = await model(ask(generation=generation))

    assert response == ModelResponse(
        content="Hello there!",
        usage=Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15),
    )
    assert response.done is None
    sent = server.last_request
    assert sent.path == "/v1/messages"
    # SDK 2.x sends the key as a bearer token, older ones as x-api-key; the API takes both.
    assert sent.headers.get("x-api-key") == "sk-ant-test" or (
        sent.headers.get("authorization") == "Bearer sk-ant-test"
    )
    assert "anthropic-version" in sent.headers
    assert sent.headers["x-team"] == "agents"
    # temperature, top_p and the penalties are not sent: the current API refuses them.
    assert sent.body == {
        "model": "claude-test",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 200,
        "stop_sequences": ["END"],
    }


async def test_defaults_max_tokens_and_omits_unset_params(
    server: FakeLLMServer, model: AnthropicModel
) -> None:
    server.reply_text("ok")
    await model(
        ModelRequest(
            model="claude-test",
            messages=[
                Message(role="system", content="One."),
                Message(role="system", content="Two."),
                Message(role="user", content="Hi"),
            ],
        )
    )
    assert server.last_request.body == {
        "model": "claude-test",
        "system": "One.\n\nTwo.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 4096,
    }


async def test_tool_calls_are_parsed(server: FakeLLMServer, model: AnthropicModel) -> None:
    server.reply_tool_calls(
        FakeToolCall(id="toolu_a", name="get_weather", arguments={"city": "Paris"}),
        FakeToolCall(id="toolu_b", name="get_weather", arguments={"city": "Oslo"}),
        text="Let me check.",
        prompt_tokens=20,
        completion_tokens=8,
    )

    response = await model(ask("Weather in Paris and Oslo?", tools=[WEATHER]))

    assert response.content == "Let me check."
    assert response.tool_calls == [
        ToolCall(id="toolu_a", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="toolu_b", name="get_weather", arguments={"city": "Oslo"}),
    ]
    assert response.usage == Usage(prompt_tokens=20, completion_tokens=8, total_tokens=28)
    assert server.last_request.body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]


async def test_round_trip_with_tool_calls_and_results(
    server: FakeLLMServer, model: AnthropicModel
) -> None:
    server.reply_text("Paris 21°C, Oslo 9°C.")
    history = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather in Paris and Oslo?"),
        Message(
            role="assistant",
            content="Checking both.",
            tool_calls=[
                ToolCall(id="toolu_1", name="get_weather", arguments={"city": "Paris"}),
                ToolCall(id="toolu_2", name="get_weather", arguments={"city": "Oslo"}),
            ],
        ),
        Message(role="tool", tool_call_id="toolu_1", name="get_weather", content='{"c": 21}'),
        Message(role="tool", tool_call_id="toolu_2", name="get_weather", content='{"c": 9}'),
        Message(role="user", content="Answer in one line."),
    ]

    response = await model(ModelRequest(model="claude-test", messages=history, tools=[WEATHER]))

    assert response.content == "Paris 21°C, Oslo 9°C."
    sent = server.last_request.body
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Oslo?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            # Both results and the follow-up text share one user turn, results first.
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"c": 21}'},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": '{"c": 9}'},
                {"type": "text", "text": "Answer in one line."},
            ],
        },
    ]


async def test_assistant_turn_of_only_tool_calls_has_no_empty_text(
    server: FakeLLMServer, model: AnthropicModel
) -> None:
    server.reply_text("done")
    history = [
        Message(role="user", content="Go"),
        Message(role="assistant", content="", tool_calls=[ToolCall(id="t1", name="get_weather")]),
        Message(role="tool", tool_call_id="t1", content=""),
    ]
    await model(ModelRequest(model="claude-test", messages=history))
    assert server.last_request.body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
    ]


async def test_streaming_sends_deltas_and_returns_the_same_response(
    server: FakeLLMServer, model: AnthropicModel
) -> None:
    reply = Reply(text="Hello there, world!", chunks=["Hel", "lo there", ", world!"])
    server.reply(reply, reply)
    chunks: list[str] = []

    async def sink(delta: str) -> None:
        chunks.append(delta)

    plain = await model(ask())
    streamed = await model(ask(), on_chunk=sink)

    assert chunks == ["Hel", "lo there", ", world!"]
    assert streamed == plain
    assert streamed.usage == Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    assert server.last_request.body["stream"] is True


async def test_streaming_tool_calls_are_accumulated(
    server: FakeLLMServer, model: AnthropicModel
) -> None:
    reply = Reply(
        text="Checking.",
        tool_calls=[
            FakeToolCall(id="toolu_a", name="get_weather", arguments={"city": "Paris"}),
            FakeToolCall(id="toolu_b", name="get_weather", arguments={"city": "Reykjavík"}),
        ],
    )
    server.reply(reply, reply)
    chunks: list[str] = []

    async def sink(delta: str) -> None:
        chunks.append(delta)

    plain = await model(ask(tools=[WEATHER]))
    streamed = await model(ask(tools=[WEATHER]), on_chunk=sink)

    assert chunks == ["Checking."]
    assert streamed == plain
    assert [(c.id, c.arguments) for c in streamed.tool_calls] == [
        ("toolu_a", {"city": "Paris"}),
        ("toolu_b", {"city": "Reykjavík"}),
    ]


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (429, {"retry-after": "7"}, "rate_limit", 7.0),
        (429, {}, "rate_limit", None),
        (401, {}, "auth", None),
        (403, {}, "auth", None),
        (400, {}, "bad_request", None),
        (404, {}, "bad_request", None),
        (413, {}, "bad_request", None),
        (500, {}, "server", None),
        (529, {}, "server", None),
        (529, {"retry-after": "4"}, "server", 4.0),
    ],
)
async def test_http_errors_are_classified(
    server: FakeLLMServer,
    model: AnthropicModel,
    status: int,
    headers: dict[str, str],
    kind: str,
    retry_after: float | None,
) -> None:
    server.reply_error(status, headers=headers)
    with pytest.raises(ModelError) as caught:
        await model(ask())
    assert caught.value.kind == kind
    assert caught.value.retry_after == retry_after
    assert str(status) in str(caught.value)


async def test_http_error_before_a_stream_is_classified(
    server: FakeLLMServer, model: AnthropicModel
) -> None:
    server.reply_error(429, headers={"retry-after": "2"})

    async def sink(delta: str) -> None:
        raise AssertionError("no text expected")

    with pytest.raises(ModelError) as caught:
        await model(ask(), on_chunk=sink)
    assert (caught.value.kind, caught.value.retry_after) == ("rate_limit", 2.0)


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [("overloaded_error", "server"), ("rate_limit_error", "rate_limit"), ("mystery", "server")],
)
async def test_error_event_inside_a_stream_is_classified(
    server: FakeLLMServer, model: AnthropicModel, error_type: str, kind: str
) -> None:
    server.reply(Reply(text="unused", stream_error_type=error_type))

    async def sink(delta: str) -> None:
        pass

    with pytest.raises(ModelError) as caught:
        await model(ask(), on_chunk=sink)
    assert caught.value.kind == kind


async def test_retry_after_as_an_http_date(server: FakeLLMServer, model: AnthropicModel) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    server.reply_error(429, headers={"retry-after": when})
    with pytest.raises(ModelError) as caught:
        await model(ask())
    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 30


async def test_a_failing_chunk_sink_is_not_a_model_error(
    server: FakeLLMServer, model: AnthropicModel
) -> None:
    server.reply_text("Hello there")

    async def sink(delta: str) -> None:
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        await model(ask(), on_chunk=sink)


async def test_connection_refused_is_a_connection_error() -> None:
    model = AnthropicModel(
        model="claude-test", api_key="k", base_url=f"http://127.0.0.1:{closed_port()}"
    )
    with pytest.raises(ModelError) as caught:
        await model(ask())
    assert caught.value.kind == "connection"
    await model.aclose()


async def test_slow_reply_is_a_timeout(server: FakeLLMServer) -> None:
    model = AnthropicModel(
        model="claude-test", api_key="k", base_url=server.anthropic_base_url, timeout_seconds=0.2
    )
    server.reply(Reply(text="too late", delay_seconds=2))
    with pytest.raises(ModelError) as caught:
        await model(ask())
    assert caught.value.kind == "timeout"
    await model.aclose()


async def test_stream_that_stalls_is_a_timeout(server: FakeLLMServer) -> None:
    model = AnthropicModel(
        model="claude-test", api_key="k", base_url=server.anthropic_base_url, timeout_seconds=0.2
    )
    server.reply(Reply(text="never finished", stall_seconds=2))

    async def sink(delta: str) -> None:
        pass

    with pytest.raises(ModelError) as caught:
        await model(ask(), on_chunk=sink)
    assert caught.value.kind == "timeout"
    await model.aclose()
