"""Which seed 004 generation parameters reach the Anthropic Messages API, per API version,
read from the request body the local Anthropic fake received (through the real SDK)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from cloudagents.adapters.llm.anthropic import SAMPLING_REMOVED_IN, AnthropicModel, sampling_params
from cloudagents.domain.messages import GenerationParams, Message, ModelRequest
from tests.fakes.llm_api_servers import FakeLLMServer, fake_llm_server

LEGACY = "2023-06-01"
EVERYTHING = GenerationParams(
    temperature=0.2,
    top_p=0.9,
    max_tokens=200,
    frequency_penalty=0.5,
    presence_penalty=0.1,
    stop_sequences=["CLASSIFICATION COMPLETE"],
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_script(server: FakeLLMServer) -> None:
    server.reset()


@pytest.fixture(scope="module")
async def current(server: FakeLLMServer) -> AsyncIterator[AnthropicModel]:
    """The SDK's own API version (2026-10-21 for anthropic 2.x)."""
    client = AnthropicModel(
        model="claude-sonnet-4-5", api_key="k", base_url=server.anthropic_base_url
    )
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def legacy(server: FakeLLMServer) -> AsyncIterator[AnthropicModel]:
    client = AnthropicModel(
        model="claude-3-haiku",
        api_key="k",
        base_url=server.anthropic_base_url,
        headers={"anthropic-version": LEGACY},
    )
    yield client
    await client.aclose()


def ask(generation: GenerationParams) -> ModelRequest:
    return ModelRequest(
        model="claude-test",
        messages=[Message(role="user", content="Classify this.")],
        generation=generation,
    )


def sampling_sent(server: FakeLLMServer) -> dict[str, object]:
    body = server.last_request.body
    return {k: body[k] for k in ("temperature", "top_p", "top_k") if k in body}


async def test_current_version_gets_max_tokens_and_stops_but_no_sampling(
    server: FakeLLMServer, current: AnthropicModel, caplog: pytest.LogCaptureFixture
) -> None:
    assert current.api_version >= SAMPLING_REMOVED_IN
    server.reply_text("ok")
    with caplog.at_level(logging.DEBUG, logger="cloudagents.adapters.llm.anthropic"):
        await current(ask(EVERYTHING))

    sent = server.last_request
    assert sent.headers["anthropic-version"] == current.api_version
    assert sent.body["max_tokens"] == 200
    assert sent.body["stop_sequences"] == ["CLASSIFICATION COMPLETE"]
    assert sampling_sent(server) == {}
    assert "frequency_penalty" not in sent.body and "presence_penalty" not in sent.body
    dropped = " ".join(r.getMessage() for r in caplog.records)
    for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        assert name in dropped


async def test_legacy_version_gets_temperature_not_both(
    server: FakeLLMServer, legacy: AnthropicModel, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply_text("ok")
    with caplog.at_level(logging.DEBUG, logger="cloudagents.adapters.llm.anthropic"):
        await legacy(ask(EVERYTHING))

    sent = server.last_request
    assert sent.headers["anthropic-version"] == LEGACY
    assert sampling_sent(server) == {"temperature": 0.2}
    assert sent.body["max_tokens"] == 200
    assert sent.body["stop_sequences"] == ["CLASSIFICATION COMPLETE"]
    assert "frequency_penalty" not in sent.body and "presence_penalty" not in sent.body
    assert "top_p (Claude refuses temperature and top_p together)" in caplog.text


async def test_legacy_version_gets_top_p_alone(
    server: FakeLLMServer, legacy: AnthropicModel
) -> None:
    server.reply_text("ok")
    await legacy(ask(GenerationParams(top_p=0.7)))
    assert sampling_sent(server) == {"top_p": 0.7}


async def test_legacy_temperature_is_capped_at_anthropics_maximum(
    server: FakeLLMServer, legacy: AnthropicModel
) -> None:
    server.reply_text("ok")
    await legacy(ask(GenerationParams(temperature=1.6)))
    assert sampling_sent(server) == {"temperature": 1.0}


async def test_legacy_sampling_also_reaches_a_streamed_request(
    server: FakeLLMServer, legacy: AnthropicModel
) -> None:
    server.reply_text("streamed reply")
    chunks: list[str] = []

    async def sink(text: str) -> None:
        chunks.append(text)

    reply = await legacy(ask(GenerationParams(temperature=0.0, max_tokens=50)), on_chunk=sink)

    assert reply.content == "streamed reply"
    assert "".join(chunks) == "streamed reply"
    assert server.last_request.body["stream"] is True
    assert sampling_sent(server) == {"temperature": 0.0}
    assert server.last_request.body["max_tokens"] == 50


@pytest.mark.parametrize(
    ("generation", "version", "expected"),
    [
        (GenerationParams(), LEGACY, {}),
        (GenerationParams(temperature=0.5), LEGACY, {"temperature": 0.5}),
        (GenerationParams(temperature=0.5, top_p=0.5), LEGACY, {"temperature": 0.5}),
        (GenerationParams(top_p=0.5), "2025-01-01", {"top_p": 0.5}),
        (GenerationParams(temperature=0.5, top_p=0.5), SAMPLING_REMOVED_IN, {}),
        (GenerationParams(temperature=0.5), "2027-01-01", {}),
        (GenerationParams(frequency_penalty=1.0, presence_penalty=1.0), LEGACY, {}),
    ],
)
def test_sampling_rule(
    generation: GenerationParams, version: str, expected: dict[str, float]
) -> None:
    assert sampling_params(generation, api_version=version) == expected


async def test_a_pin_in_any_letter_case_replaces_the_sdks_version(server: FakeLLMServer) -> None:
    client = AnthropicModel(
        model="claude-3-haiku",
        api_key="k",
        base_url=server.anthropic_base_url,
        headers={"Anthropic-Version": LEGACY, "X-Team": "agents"},
    )
    server.reply_text("ok")
    try:
        await client(ask(GenerationParams(top_p=0.5)))
    finally:
        await client.aclose()
    assert client.api_version == LEGACY
    assert server.last_request.headers["anthropic-version"] == LEGACY
    assert server.last_request.headers["x-team"] == "agents"
    assert sampling_sent(server) == {"top_p": 0.5}
