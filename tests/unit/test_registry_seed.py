"""Seed 002's agent registry example with the import path changed (``src.agents.registry`` and
``src.agents.models`` -> ``cloudagents.registry``; the seed's ``{...}`` placeholders filled in;
``session`` is the seed's database session, unused here), the model a local server that speaks
the OpenAI API. ``process`` routes by capability and continues a conversation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudagents.registry import Agent, AgentRegistry, HumanMessage
from tests.fakes.llm_api_servers import FakeLLMServer, fake_llm_server


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    with fake_llm_server() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield fake


async def test_creating_an_agent_and_processing_messages(server: FakeLLMServer) -> None:
    session = None
    # Initialize registry
    registry = AgentRegistry(session)

    # Create agent definition
    agent_def = Agent(
        name="SearchAgent",
        description="Handles search queries",
        system_prompt="You are a search assistant...",
        input_schema={"type": "object", "properties": {"query": {"type": "string"}}},
        output_schema={"type": "object", "properties": {"results": {"type": "array"}}},
        config_data={"capabilities": ["search", "filter"]},
        max_chain_depth=3,
    )

    # Register agent
    agent = registry.register_agent(agent_def)
    assert agent.definition.id == "search-agent"
    assert agent.definition.capabilities == ["search", "filter"]
    registry.register_agent(
        Agent(
            name="MathAgent", system_prompt="You do sums.", config_data={"capabilities": ["math"]}
        )
    )

    server.reply_text('{"results": ["cloudagents"]}')
    # Process messages with automatic routing
    response = await registry.process(
        messages=[HumanMessage(content="Search for...")], conversation_id="123"
    )
    assert response.agent_name == "SearchAgent" and response.content == {"results": ["cloudagents"]}
    assert server.requests[-1].body["messages"][0]["content"] == "You are a search assistant..."

    server.reply_text('{"results": ["again"]}')
    response = await registry.process(
        messages=[HumanMessage(content="Search for more")], conversation_id="123"
    )
    sent = [(m["role"], m["content"]) for m in server.requests[-1].body["messages"]]
    assert sent[1:] == [
        ("user", "Search for..."),
        ("assistant", '{"results": ["cloudagents"]}'),
        ("user", "Search for more"),
    ]

    # Direct agent usage
    agent = registry.get_agent("SearchAgent")
    assert agent is not None
    server.reply_text('{"results": []}')
    result = await agent.process_message("Search for...")
    assert result.content == {"results": []}
    server.reply_text("4")
    routed = await registry.process([HumanMessage(content="math: 2+2")])
    assert routed.agent_name == "MathAgent" and routed.content == "4"
