"""OpenAIModel against a local fake of the chat-completions API, through the real SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from cloudagents.adapters.llm.openai import OpenAIModel
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
async def model(server: FakeLLMServer) -> AsyncIterator[OpenAIModel]:
    # Shared: building an SDK client costs tens of milliseconds (TLS context setup).
    client = OpenAIModel(
        model="gpt-test",
        api_key="sk-test",
        base_url=server.openai_base_url,
        headers={"X-Team": "agents"},
        timeout_seconds=5,
    )
    yield client
    await client.aclose()


def ask(text: str = "Hi", **kwargs: object) -> ModelRequest:
    return ModelRequest.model_validate(
        {
            "model": "gpt-test",
            "messages": [
                Message(role="system", content="Be brief."),
                Message(role="user", content=text),
            ],
            **kwargs,
        }
    )


async def test_text_reply_with_usage_and_request_on_the_wire(
    server: FakeLLMServer, model: OpenAIModel
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
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["x-team"] == "agents"
    assert sent.body["model"] == "gpt-test"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert "tools" not in sent.body
    assert not sent.body.get("stream")
    assert {k: sent.body[k] for k in generation.model_dump() if k in sent.body} == {
        "temperature": 0.3,
        "max_tokens": 200,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
    }
    assert sent.body["stop"] == ["END"]


async def test_unset_generation_params_are_not_sent(
    server: FakeLLMServer, model: OpenAIModel
) -> None:
    server.reply_text("ok")
    await model(ask())
    assert set(server.last_request.body) == {"model", "messages"}


async def test_tool_calls_are_parsed(server: FakeLLMServer, model: OpenAIModel) -> None:
    server.reply_tool_calls(
        FakeToolCall(id="call_a", name="get_weather", arguments={"city": "Paris"}),
        FakeToolCall(id="call_b", name="get_weather", arguments={"city": "Oslo"}),
        prompt_tokens=20,
        completion_tokens=8,
    )

    response = await model(ask("Weather in Paris and Oslo?", tools=[WEATHER]))

    assert response.content is None
    assert response.tool_calls == [
        ToolCall(id="call_a", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="call_b", name="get_weather", arguments={"city": "Oslo"}),
    ]
    assert response.usage == Usage(prompt_tokens=20, completion_tokens=8, total_tokens=28)
    assert server.last_request.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]


@pytest.mark.parametrize("raw", ['{"city": "Par', "[1, 2]", "not json"])
async def test_malformed_arguments_are_kept_raw(
    server: FakeLLMServer, model: OpenAIModel, raw: str
) -> None:
    server.reply_tool_calls(FakeToolCall(id="call_x", name="get_weather", arguments=raw))
    response = await model(ask(tools=[WEATHER]))
    assert response.tool_calls == [
        ToolCall(id="call_x", name="get_weather", arguments={"_raw": raw})
    ]


async def test_round_trip_with_tool_call_and_result(
    server: FakeLLMServer, model: OpenAIModel
) -> None:
    server.reply_text("It is 21°C in Paris.")
    history = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather in Paris?"),
        Message(
            role="assistant",
            content=None,
            tool_calls=[ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})],
        ),
        Message(role="tool", tool_call_id="call_1", name="get_weather", content='{"temp_c": 21}'),
    ]

    response = await model(ModelRequest(model="gpt-test", messages=history, tools=[WEATHER]))

    assert response.content == "It is 21°C in Paris."
    assert server.last_request.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {
            "role": "tool",
            "content": '{"temp_c": 21}',
            "tool_call_id": "call_1",
            "name": "get_weather",
        },
    ]


async def test_streaming_sends_deltas_and_returns_the_same_response(
    server: FakeLLMServer, model: OpenAIModel
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
    sent = server.last_request.body
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_streaming_tool_calls_are_accumulated(
    server: FakeLLMServer, model: OpenAIModel
) -> None:
    reply = Reply(
        text="Checking.",
        tool_calls=[
            FakeToolCall(id="call_a", name="get_weather", arguments={"city": "Paris"}),
            FakeToolCall(id="call_b", name="get_weather", arguments={"city": "Reykjavík"}),
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
        ("call_a", {"city": "Paris"}),
        ("call_b", {"city": "Reykjavík"}),
    ]


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (429, {"retry-after": "7"}, "rate_limit", 7.0),
        (429, {"retry-after-ms": "1500"}, "rate_limit", 1.5),
        (429, {}, "rate_limit", None),
        (401, {}, "auth", None),
        (403, {}, "auth", None),
        (400, {}, "bad_request", None),
        (404, {}, "bad_request", None),
        (422, {}, "bad_request", None),
        (500, {}, "server", None),
        (503, {"retry-after": "3"}, "server", 3.0),
    ],
)
async def test_http_errors_are_classified(
    server: FakeLLMServer,
    model: OpenAIModel,
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
    server: FakeLLMServer, model: OpenAIModel
) -> None:
    server.reply_error(429, headers={"retry-after": "2"})

    async def sink(delta: str) -> None:
        raise AssertionError("no text expected")

    with pytest.raises(ModelError) as caught:
        await model(ask(), on_chunk=sink)
    assert (caught.value.kind, caught.value.retry_after) == ("rate_limit", 2.0)


async def test_retry_after_as_an_http_date(server: FakeLLMServer, model: OpenAIModel) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    server.reply_error(429, headers={"retry-after": when})
    with pytest.raises(ModelError) as caught:
        await model(ask())
    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 30


async def test_a_failing_chunk_sink_is_not_a_model_error(
    server: FakeLLMServer, model: OpenAIModel
) -> None:
    server.reply_text("Hello there")

    async def sink(delta: str) -> None:
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        await model(ask(), on_chunk=sink)


async def test_connection_refused_is_a_connection_error() -> None:
    model = OpenAIModel(
        model="gpt-test", api_key="sk-test", base_url=f"http://127.0.0.1:{closed_port()}/v1"
    )
    with pytest.raises(ModelError) as caught:
        await model(ask())
    assert caught.value.kind == "connection"
    await model.aclose()


async def test_slow_reply_is_a_timeout(server: FakeLLMServer) -> None:
    model = OpenAIModel(
        model="gpt-test", api_key="sk-test", base_url=server.openai_base_url, timeout_seconds=0.2
    )
    server.reply(Reply(text="too late", delay_seconds=2))
    with pytest.raises(ModelError) as caught:
        await model(ask())
    assert caught.value.kind == "timeout"
    await model.aclose()


async def test_stream_that_stalls_is_a_timeout(server: FakeLLMServer) -> None:
    model = OpenAIModel(
        model="gpt-test", api_key="sk-test", base_url=server.openai_base_url, timeout_seconds=0.2
    )
    server.reply(Reply(text="never finished", stall_seconds=2))

    async def sink(delta: str) -> None:
        pass

    with pytest.raises(ModelError) as caught:
        await model(ask(), on_chunk=sink)
    assert caught.value.kind == "timeout"
    await model.aclose()
