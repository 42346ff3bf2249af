"""Seed 004 provider names and environment: ``google``/``gemini``, ``OPENAI_BASE_URL``,
``OLLAMA_BASE_URL``, checked by what arrives at the local OpenAI-speaking fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudagents.adapters.llm.factory import GEMINI_OPENAI_BASE_URL, build_model_client
from cloudagents.adapters.llm.openai import OpenAIModel
from cloudagents.domain.agents import ModelConfig
from cloudagents.domain.errors import ConfigurationError
from cloudagents.domain.messages import Message, ModelRequest
from tests.fakes.llm_api_servers import FakeLLMServer, fake_llm_server


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_script(server: FakeLLMServer) -> None:
    server.reset()


def ask(model: str) -> ModelRequest:
    return ModelRequest(model=model, messages=[Message(role="user", content="Hi")])


async def call(client: object, model: str) -> str | None:
    assert isinstance(client, OpenAIModel)
    try:
        reply = await client(ask(model))
    finally:
        await client.aclose()
    return reply.content_text()


@pytest.mark.parametrize(
    ("provider", "variable"),
    [
        ("google", "GOOGLE_API_KEY"),
        ("google", "GEMINI_API_KEY"),
        ("gemini", "GEMINI_API_KEY"),
        ("gemini", "GOOGLE_API_KEY"),
    ],
)
async def test_google_and_gemini_take_either_key_and_speak_openai(
    server: FakeLLMServer, provider: str, variable: str
) -> None:
    server.reply_text("hello from gemini")
    config = ModelConfig.model_validate(
        {"provider": provider, "name": "gemini-2.5-flash", "base_url": server.openai_base_url}
    )

    client = build_model_client(config, env={variable: "g-key"})

    assert await call(client, "gemini-2.5-flash") == "hello from gemini"
    sent = server.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer g-key"
    assert sent.body["model"] == "gemini-2.5-flash"


def test_google_defaults_to_geminis_openai_endpoint() -> None:
    client = build_model_client(
        ModelConfig(provider="google", name="gemini-2.5-pro"), env={"GOOGLE_API_KEY": "k"}
    )
    assert isinstance(client, OpenAIModel)
    assert str(client._client.base_url) == GEMINI_OPENAI_BASE_URL
    assert GEMINI_OPENAI_BASE_URL == "https://generativelanguage.googleapis.com/v1beta/openai/"


def test_google_key_wins_over_gemini_key_for_google() -> None:
    client = build_model_client(
        ModelConfig(provider="google", name="gemini-2.5-pro"),
        env={"GOOGLE_API_KEY": "google", "GEMINI_API_KEY": "gemini"},
    )
    assert isinstance(client, OpenAIModel)
    assert client._client.api_key == "google"


@pytest.mark.parametrize("provider", ["google", "gemini"])
def test_a_missing_google_key_names_both_variables(provider: str) -> None:
    config = ModelConfig.model_validate({"provider": provider, "name": "gemini-2.5-flash"})
    with pytest.raises(ConfigurationError, match="GOOGLE_API_KEY") as caught:
        build_model_client(config, env={"OPENAI_API_KEY": "not this one"})
    assert "GEMINI_API_KEY" in str(caught.value)


def test_an_explicit_key_variable_is_the_only_one_named() -> None:
    config = ModelConfig(provider="google", name="gemini-2.5-flash", api_key_env="TEAM_GEMINI")
    with pytest.raises(ConfigurationError, match=r"set the environment variable TEAM_GEMINI$"):
        build_model_client(config, env={"GOOGLE_API_KEY": "ignored"})


async def test_openai_base_url_is_honoured(server: FakeLLMServer) -> None:
    server.reply_text("via OPENAI_BASE_URL")
    client = build_model_client(
        ModelConfig(provider="openai", name="gpt-4o"),
        env={"OPENAI_API_KEY": "sk", "OPENAI_BASE_URL": server.openai_base_url},
    )
    assert await call(client, "gpt-4o") == "via OPENAI_BASE_URL"
    assert server.last_request.headers["authorization"] == "Bearer sk"


@pytest.mark.parametrize("suffix", ["", "/", "/v1"])
async def test_ollama_base_url_is_the_server_root(server: FakeLLMServer, suffix: str) -> None:
    server.reply_text("from llama")
    client = build_model_client(
        ModelConfig(provider="ollama", name="llama3"),
        env={"OLLAMA_BASE_URL": server.base_url + suffix},
    )
    assert await call(client, "llama3") == "from llama"
    assert server.last_request.path == "/v1/chat/completions"


async def test_config_base_url_wins_over_the_environment(server: FakeLLMServer) -> None:
    server.reply_text("configured")
    client = build_model_client(
        ModelConfig(provider="ollama", name="llama3", base_url=server.openai_base_url),
        env={"OLLAMA_BASE_URL": "http://127.0.0.1:9"},
    )
    assert await call(client, "llama3") == "configured"
