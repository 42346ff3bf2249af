"""Scripted and callable providers, the retry layer, and the provider factory."""

from __future__ import annotations

from typing import Any

import pytest

from cloudagents import ConfigurationError, ModelConfig, ModelError, ModelRequest, RetryConfig
from cloudagents.adapters.llm.callable import CallableModel
from cloudagents.adapters.llm.factory import build_model_client
from cloudagents.adapters.llm.scripted import ScriptedModel
from cloudagents.domain.agents import ScriptedTurn
from cloudagents.domain.messages import Message, ModelResponse
from cloudagents.runtime.retrying import RetryingModel

REQUEST = ModelRequest(model="m", messages=[Message(role="user", content="hi")])


async def test_scripted_model_picks_turn_by_assistant_count_and_streams_chunks() -> None:
    model = ScriptedModel([ScriptedTurn(content="first"), ScriptedTurn(content="a" * 40)])
    assert (await model(REQUEST)).content == "first"
    later = REQUEST.model_copy(update={"messages": [*REQUEST.messages, Message(role="assistant")]})
    chunks: list[str] = []

    async def sink(text: str) -> None:
        chunks.append(text)

    reply = await model(later, on_chunk=sink)
    assert "".join(chunks) == "a" * 40 and len(chunks) == 3
    assert reply.usage.total_tokens == 10


class Flaky:
    def __init__(self, errors: list[ModelError]) -> None:
        self.errors = errors
        self.calls = 0

    async def __call__(self, request: ModelRequest, *, on_chunk: Any = None) -> ModelResponse:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return ModelResponse(content="ok")


async def test_retry_backoff_and_retry_after() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    inner = Flaky(
        [ModelError("rate_limit", "slow down", retry_after=5.0), ModelError("timeout", "t")]
    )
    model = RetryingModel(inner, RetryConfig(max_attempts=3, backoff_seconds=1.0), sleep=sleep)
    assert (await model(REQUEST)).content == "ok"
    assert sleeps == [5.0, 2.0]
    assert inner.calls == 3


async def test_retry_only_on_listed_errors() -> None:
    inner = Flaky([ModelError("timeout", "t")])
    model = RetryingModel(inner, RetryConfig(retry_on_errors=["rate_limit"]))
    with pytest.raises(ModelError, match="timeout"):
        await model(REQUEST)
    assert inner.calls == 1


async def test_timeout_is_classified() -> None:
    import asyncio

    class Slow:
        async def __call__(self, request: ModelRequest, *, on_chunk: Any = None) -> ModelResponse:
            await asyncio.sleep(5)
            return ModelResponse()

    model = RetryingModel(Slow(), RetryConfig(max_attempts=1), timeout_seconds=0.05)
    with pytest.raises(ModelError) as caught:
        await model(REQUEST)
    assert caught.value.kind == "timeout"


async def test_callable_model_contract_errors() -> None:
    async def returns_list(request: dict[str, Any]) -> Any:
        return []

    with pytest.raises(ModelError, match="returned list"):
        await CallableModel(returns_list)(REQUEST)

    def sync_client(request: dict[str, Any]) -> dict[str, Any]:
        return {"content": "sync works", "tool_calls": None, "usage": None}

    assert (await CallableModel(sync_client)(REQUEST)).content == "sync works"

    async def boom(request: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("provider down")

    with pytest.raises(ModelError) as caught:
        await CallableModel(boom)(REQUEST)
    assert caught.value.kind == "server"


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        build_model_client(ModelConfig(provider="openai", name="gpt-4o"), env={})
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        build_model_client(ModelConfig(provider="anthropic", name="claude"), env={})
    with pytest.raises(ConfigurationError, match="MY_KEY"):
        build_model_client(ModelConfig(provider="openai", name="x", api_key_env="MY_KEY"), env={})
    with pytest.raises(ConfigurationError, match="needs base_url"):
        build_model_client(ModelConfig(provider="custom", name="x"), env={})
    with pytest.raises(ConfigurationError, match="llm_client"):
        build_model_client(ModelConfig(provider="callable", name="x"), env={})


def test_openai_compatible_endpoints_need_no_key() -> None:
    ollama = build_model_client(
        ModelConfig(provider="ollama", name="llama3"), env={"OLLAMA_BASE_URL": "http://127.0.0.1:1"}
    )
    assert type(ollama).__name__ == "OpenAIModel"
    vllm = build_model_client(
        ModelConfig(provider="openai", name="m"), env={"OPENAI_BASE_URL": "http://127.0.0.1:2/v1"}
    )
    assert type(vllm).__name__ == "OpenAIModel"
