"""Seed 003's examples with only the import path changed (``src.agents.*`` and
``src.models.models`` -> ``cloudagents.mars``), the model being a local server that speaks the
OpenAI API (``OPENAI_BASE_URL``). Each runs through the one engine in process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Optional

import pytest

from cloudagents.mars import (
    Agent,
    AgentRegistry,
    LogLevel,
    Message,
    ModelConfig,
    RequestContext,
)
from tests.fakes.llm_api_servers import FakeLLMServer, FakeToolCall, fake_llm_server


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    with fake_llm_server() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield fake


def sent_messages(server: FakeLLMServer, index: int = -1) -> list[dict[str, Any]]:
    return list(server.requests[index].body["messages"])


async def test_basic_agent(server: FakeLLMServer) -> None:
    openai_model_config = ModelConfig(
        type="api",
        provider="openai",
        name="gpt-4-turbo",  # Ensure this is a valid model name for your provider
        temperature=0.7,
        max_tokens=1500,
    )
    assistant_agent = Agent(
        model=openai_model_config,
        description="You are a helpful and friendly AI assistant. Your goal is to provide "
        "accurate and concise answers.",
        agent_name="HelpfulAssistant",
    )
    server.reply_text("I am HelpfulAssistant, an AI assistant.")
    response = await assistant_agent.auto_run(initial_request="Hello, who are you?")
    assert str(response) == "I am HelpfulAssistant, an AI assistant."
    body = server.requests[-1].body
    assert body["model"] == "gpt-4-turbo" and body["temperature"] == 0.7
    assert body["max_tokens"] == 1500 or body.get("max_completion_tokens") == 1500
    assert sent_messages(server)[0]["content"].startswith("You are a helpful and friendly")
    assert AgentRegistry.get("HelpfulAssistant") is assistant_agent


async def test_agent_with_tools(server: FakeLLMServer) -> None:
    def get_current_time(timezone: Optional[str] = None) -> str:  # noqa: UP045
        """Returns the current date and time, optionally for a specific timezone."""
        return f"The current date and time is: {datetime.now().isoformat()}"

    research_model_config = ModelConfig(type="api", provider="openai", name="gpt-4-turbo")
    researcher_agent = Agent(
        model=research_model_config,
        description="You are a research assistant. You can use tools to find information.",
        tools={"get_current_time_tool": get_current_time},
        agent_name="Researcher",
    )
    server.reply_tool_calls(FakeToolCall("call_1", "get_current_time_tool", {}))
    server.reply_text("It is now.")
    response = await researcher_agent.auto_run(initial_request="What time is it now?")
    assert str(response) == "It is now."
    tools = server.requests[0].body["tools"]
    assert tools[0]["function"]["name"] == "get_current_time_tool"
    assert "timezone" in tools[0]["function"]["parameters"]["properties"]
    tool_message = next(m for m in sent_messages(server) if m["role"] == "tool")
    assert "The current date and time is" in tool_message["content"]


async def test_schema_validation_in_practice(server: FakeLLMServer) -> None:
    model_config = ModelConfig(type="api", provider="openai", name="gpt-4o")
    researcher = Agent(
        model_config=model_config,
        description="Research assistant that answers sub-questions.",
        input_schema=["sub_question"],
        output_schema=["answer"],
        agent_name="Researcher",
        allowed_peers=[],
    )
    orchestrator = Agent(
        model_config=model_config,
        description="Main agent that coordinates research.",
        input_schema=["main_query"],
        output_schema=["final_report"],
        agent_name="Orchestrator",
        allowed_peers=["Researcher"],
    )
    request_context = RequestContext()
    server.reply_text(json.dumps({"answer": "Machine learning is learning from data."}))
    # This will work - matches input_schema
    result = await orchestrator.invoke_agent(
        "Researcher", {"sub_question": "What is machine learning?"}, request_context
    )
    assert result.role == "assistant"
    assert result.content == {"answer": "Machine learning is learning from data."}
    calls = len(server.requests)
    # This will fail validation - missing required field
    result = await orchestrator.invoke_agent(
        "Researcher",
        {"wrong_field": "value"},  # Missing 'sub_question'
        request_context,
    )
    assert isinstance(result, Message) and result.role == "error"
    assert str(result.content).startswith("Request validation failed")
    assert len(server.requests) == calls  # the researcher was never asked
    assert researcher.output_schema == {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }


async def test_an_orchestrator_calls_a_peer_through_its_model(server: FakeLLMServer) -> None:
    researcher = Agent(
        model=ModelConfig(type="api", provider="openai", name="gpt-4-turbo"),
        description="I find information.",
        agent_name="ResearcherAgent",
    )
    orchestrator = Agent(
        model=ModelConfig(type="api", provider="openai", name="gpt-4-turbo"),
        description="I coordinate tasks and can talk to other agents.",
        agent_name="OrchestratorAgent",
        allowed_peers=["ResearcherAgent"],
    )
    server.reply_tool_calls(
        FakeToolCall("call_1", "invoke_researcheragent", {"request": "quantum computing?"})
    )
    server.reply_text("Qubits are getting better.")  # the researcher's own run
    server.reply_text("The researcher says: qubits are getting better.")
    response = await orchestrator.auto_run(
        initial_request="Ask the ResearcherAgent to find out about quantum computing progress.",
        max_steps=5,
    )
    assert str(response) == "The researcher says: qubits are getting better."
    assert sent_messages(server, 1)[-1] == {"role": "user", "content": "quantum computing?"}
    tool_result = next(m for m in sent_messages(server, 2) if m["role"] == "tool")
    assert tool_result["content"] == "Qubits are getting better."
    assert researcher.name == "ResearcherAgent"


async def test_memory_remembers_across_auto_runs(server: FakeLLMServer) -> None:
    chat_config = ModelConfig(type="api", provider="openai", name="gpt-4.1-mini")
    chat_agent = Agent(
        model=chat_config, description="A conversational agent.", agent_name="Chatty"
    )
    server.reply_text("Nice! Blue is a great color.")
    response1 = await chat_agent.auto_run(initial_request="Hi there! My favorite color is blue.")
    assert str(response1) == "Nice! Blue is a great color."
    server.reply_text("Your favorite color is blue.")
    response2 = await chat_agent.auto_run(initial_request="What was my favorite color?")
    assert str(response2) == "Your favorite color is blue."
    second = sent_messages(server)
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert "My favorite color is blue" in second[1]["content"]
    assert [m.role for m in chat_agent.memory.history] == ["user", "assistant"] * 2


class MyCustomAgent(Agent):  # Inherit from Agent for auto_run, memory etc.
    def __init__(
        self,
        model: ModelConfig,
        description: str,
        agent_name: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(model=model, description=description, agent_name=agent_name, **kwargs)
        self.my_custom_state = "initialized"

    async def _run(
        self, prompt: Any, request_context: RequestContext, run_mode: str, **kwargs: Any
    ) -> Message:
        await self._log_progress(
            request_context,
            LogLevel.INFO,
            f"MyCustomAgent ({self.name}) received prompt: {str(prompt)[:100]}",
        )
        if "special_trigger" in str(prompt):
            pass
        system_prompt_str = self._construct_full_system_prompt(
            base_description=self.description, json_mode_for_output=(run_mode == "auto_step")
        )
        assert system_prompt_str.startswith(self.description)
        response_content = f"Custom agent {self.name} processed: {str(prompt)[:50]}"
        if run_mode == "auto_step":  # auto_step expects a JSON response for next_action
            response_content = json.dumps(
                {
                    "thought": "This is a custom thought from MyCustomAgent.",
                    "next_action": "final_response",
                    "action_input": {"response": response_content},
                }
            )
        output_message = Message(role="assistant", content=response_content, name=self.name)
        return output_message


async def test_a_custom_agent_overriding_run(server: FakeLLMServer) -> None:
    custom_agent_config = ModelConfig(type="api", provider="openai", name="gpt-4.1-mini")
    my_agent = MyCustomAgent(
        model=custom_agent_config, description="A custom agent example.", agent_name="CustomBot"
    )
    final_response = await my_agent.auto_run(initial_request="Hello custom agent!")
    assert str(final_response) == "Custom agent CustomBot processed: Hello custom agent!"
    assert server.requests == []  # its _run is the model: no provider was called
    assert my_agent.my_custom_state == "initialized"


def test_model_config_refuses_unknown_fields_and_agent_needs_a_model() -> None:
    with pytest.raises(ValueError, match="temprature"):
        ModelConfig(type="api", provider="openai", name="gpt-4o", temprature=0.1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="ModelConfig"):
        Agent(description="no model")


async def test_the_base_run_is_one_turn_of_the_configured_model(server: FakeLLMServer) -> None:
    class Wrapping(Agent):
        async def _run(
            self, prompt: Any, request_context: RequestContext, run_mode: str, **kwargs: Any
        ) -> Message:
            inner = await super()._run(prompt, request_context, run_mode)
            return Message(role="assistant", content=f"wrapped: {inner.content}")

    agent = Wrapping(model=ModelConfig(name="gpt-4o"), description="d", agent_name="Wrapper")
    server.reply_text("inner answer")
    assert str(await agent.auto_run("hi")) == "wrapped: inner answer"
