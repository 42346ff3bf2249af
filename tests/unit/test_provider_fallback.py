"""Fallback providers: ``ModelConfig.fallbacks`` built into a ``FallbackModel`` by the factory,
against the local fakes (the primary fails with a real HTTP error, the fallback answers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from cloudagents.adapters.llm.factory import build_model_client
from cloudagents.adapters.llm.fallback import Candidate, FallbackModel
from cloudagents.adapters.llm.scripted import ScriptedModel
from cloudagents.domain.agents import AgentDefinition, ModelConfig, ScriptedTurn
from cloudagents.domain.errors import ConfigurationError, ModelError
from cloudagents.domain.messages import Message, ModelRequest, ModelResponse, Usage
from cloudagents.engine import pricing
from cloudagents.engine.step import reservation_hold_seconds
from cloudagents.ports.model import ChunkSink
from tests.fakes.llm_api_servers import FakeLLMServer, fake_llm_server

ENV = {"OPENAI_API_KEY": "sk-openai", "ANTHROPIC_API_KEY": "sk-ant"}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_script(server: FakeLLMServer) -> None:
    server.reset()


def chain(server: FakeLLMServer) -> ModelConfig:
    """gpt-4o first, then claude-sonnet-4 on the same fake (each on its own API)."""
    return ModelConfig.model_validate(
        {
            "provider": "openai",
            "name": "gpt-4o",
            "base_url": server.openai_base_url,
            "timeout_seconds": 5,
            "fallbacks": [
                {
                    "provider": "anthropic",
                    "name": "claude-sonnet-4",
                    "base_url": server.anthropic_base_url,
                    "timeout_seconds": 5,
                }
            ],
        }
    )


def ask() -> ModelRequest:
    # The engine asks for the agent's (primary) model name; each candidate gets its own.
    return ModelRequest(model="gpt-4o", messages=[Message(role="user", content="Hi")])


@pytest.mark.parametrize("status", [500, 429, 503])
async def test_the_fallback_answers_when_the_primary_fails(
    server: FakeLLMServer, status: int
) -> None:
    server.reply_error(status)
    server.reply_text("claude here", prompt_tokens=1000, completion_tokens=100)
    config = chain(server)
    model = build_model_client(config, env=ENV)
    assert isinstance(model, FallbackModel)

    reply = await model(ask())

    assert reply.content == "claude here"
    assert reply.model == "claude-sonnet-4"
    primary, fallback = server.requests
    assert (primary.path, primary.body["model"]) == ("/v1/chat/completions", "gpt-4o")
    assert (fallback.path, fallback.body["model"]) == ("/v1/messages", "claude-sonnet-4")
    assert [(name, error.kind) for name, error in model.failures] == [
        ("gpt-4o", "rate_limit" if status == 429 else "server")
    ]
    # Priced on the model that answered: claude-sonnet-4 at (3, 15) USD per million.
    answered = pricing.answered_by(config, reply)
    assert answered.name == "claude-sonnet-4"
    assert pricing.cost_of(answered, reply.usage) == pytest.approx((1000 * 3 + 100 * 15) / 1e6)
    await model.aclose()


async def test_the_primary_answering_is_priced_on_the_primary(server: FakeLLMServer) -> None:
    server.reply_text("gpt here", prompt_tokens=1000, completion_tokens=100)
    config = chain(server)
    model = build_model_client(config, env=ENV)

    reply = await model(ask())

    assert (reply.content, reply.model) == ("gpt here", "gpt-4o")
    assert len(server.requests) == 1
    assert pricing.cost_of(pricing.answered_by(config, reply), reply.usage) == pytest.approx(
        (1000 * 2.5 + 100 * 10) / 1e6
    )
    await model.aclose()


async def test_a_bad_request_does_not_fall_back(server: FakeLLMServer) -> None:
    server.reply_error(400)
    server.reply_text("never asked")
    model = build_model_client(chain(server), env=ENV)

    with pytest.raises(ModelError) as caught:
        await model(ask())

    assert caught.value.kind == "bad_request"
    assert len(server.requests) == 1
    assert server.pending == 1
    await model.aclose()


async def test_when_every_model_fails_the_last_error_names_them_all(
    server: FakeLLMServer,
) -> None:
    server.reply_error(500)
    server.reply_error(429, headers={"retry-after": "7"})
    model = build_model_client(chain(server), env=ENV)

    with pytest.raises(ModelError) as caught:
        await model(ask())

    assert caught.value.kind == "rate_limit"
    assert caught.value.retry_after == 7
    assert "gpt-4o: server" in str(caught.value)
    assert "claude-sonnet-4: rate_limit" in str(caught.value)
    await model.aclose()


async def test_the_kinds_that_fall_back_are_configurable(server: FakeLLMServer) -> None:
    server.reply_error(500)
    server.reply_text("not reached")
    model = build_model_client(chain(server), env=ENV, fall_back_on={"rate_limit"})

    with pytest.raises(ModelError) as caught:
        await model(ask())

    assert caught.value.kind == "server"
    assert len(server.requests) == 1
    await model.aclose()


async def test_streaming_falls_back_before_any_text_but_not_after() -> None:
    failing = ScriptedModel([ScriptedTurn(fail_with="server", fail_times=5)])
    answering = ScriptedModel([ScriptedTurn(content="second model speaking")])
    model = FallbackModel(
        [Candidate("primary", failing), Candidate("secondary", answering)],
    )
    chunks: list[str] = []

    async def sink(text: str) -> None:
        chunks.append(text)

    reply = await model(ask(), on_chunk=sink)
    assert reply.model == "secondary"
    assert "".join(chunks) == "second model speaking"

    class StreamsThenFails:
        async def __call__(
            self, request: ModelRequest, *, on_chunk: ChunkSink | None = None
        ) -> ModelResponse:
            assert on_chunk is not None
            await on_chunk("half a rep")
            raise ModelError("connection", "dropped mid-stream")

    spliced = FallbackModel(
        [Candidate("primary", StreamsThenFails()), Candidate("secondary", answering)]
    )
    chunks.clear()
    with pytest.raises(ModelError, match="dropped mid-stream"):
        await spliced(ask(), on_chunk=sink)
    assert chunks == ["half a rep"]


def test_fallbacks_are_validated() -> None:
    with pytest.raises(ValidationError, match="fallbacks of its own"):
        ModelConfig.model_validate(
            {
                "name": "a",
                "fallbacks": [{"name": "b", "fallbacks": [{"name": "c"}]}],
            }
        )
    with pytest.raises(ValidationError, match="callable"):
        ModelConfig.model_validate(
            {"name": "a", "fallbacks": [{"provider": "callable", "name": "f"}]}
        )
    with pytest.raises(ValidationError, match="provider"):
        ModelConfig.model_validate({"name": "a", "fallbacks": [{"provider": "nope", "name": "f"}]})


def test_a_fallback_missing_its_key_fails_when_built(server: FakeLLMServer) -> None:
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        build_model_client(chain(server), env={"OPENAI_API_KEY": "sk"})


def test_the_cost_reservation_covers_the_dearest_model_of_the_chain() -> None:
    cheap = ModelConfig(name="gpt-4o-mini")
    with_dear_fallback = ModelConfig(name="gpt-4o-mini", fallbacks=[ModelConfig(name="gpt-4")])
    assert pricing.max_call_cost(cheap, 1000) == pytest.approx(1000 * 0.60 / 1e6)
    assert pricing.max_call_cost(with_dear_fallback, 1000) == pytest.approx(1000 * 60.0 / 1e6)
    # A reply naming no model, or one outside the chain, is the primary's.
    assert pricing.answered_by(with_dear_fallback, _reply(None)).name == "gpt-4o-mini"
    assert pricing.answered_by(with_dear_fallback, _reply("other")).name == "gpt-4o-mini"
    assert pricing.answered_by(with_dear_fallback, _reply("gpt-4")).name == "gpt-4"


def _reply(model: str | None) -> ModelResponse:
    return ModelResponse(content="x", usage=Usage(total_tokens=1), model=model)


def test_a_call_through_the_chain_may_last_every_models_timeout() -> None:
    alone = ModelConfig(name="gpt-4o", timeout_seconds=30)
    chained = ModelConfig(
        name="gpt-4o",
        timeout_seconds=30,
        fallbacks=[ModelConfig(name="gpt-4o-mini", timeout_seconds=20)],
    )
    assert alone.chain_timeout_seconds() == 30
    assert chained.chain_timeout_seconds() == 50
    # The cost reservation is held for the whole chain on every attempt (3 by default).
    held_alone = reservation_hold_seconds(AgentDefinition(id="a", model=alone))
    held_chained = reservation_hold_seconds(AgentDefinition(id="a", model=chained))
    assert held_chained - held_alone == pytest.approx(20 * 3)


def test_a_definition_without_fallbacks_is_stored_as_before() -> None:
    plain = AgentDefinition(id="a", model=ModelConfig(name="gpt-4o"))
    assert "fallbacks" not in plain.model_dump(mode="json")["model"]
    assert "fallbacks" not in plain.model_dump_json()

    chained = AgentDefinition(
        id="a", model=ModelConfig(name="gpt-4o", fallbacks=[ModelConfig(name="gpt-4o-mini")])
    )
    stored = chained.model_dump(mode="json")
    assert [f["name"] for f in stored["model"]["fallbacks"]] == ["gpt-4o-mini"]
    assert "fallbacks" not in stored["model"]["fallbacks"][0]
    assert AgentDefinition.model_validate(stored) == chained
