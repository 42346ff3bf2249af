"""Seed 002's agent registry as a façade over the one engine: ``Agent`` (a definition as seed
002 writes it: ``name``, ``description``, ``system_prompt``, schemas, ``config_data``,
``max_chain_depth``), ``AgentRegistry(session)`` with ``register_agent``, ``get_agent`` and
``process(messages, conversation_id)``, and ``HumanMessage``. A seed example runs with its
imports changed to ``from cloudagents.registry import ...``.

Every message is a run of the services' own run executor and tool invoker in this process
(``runtime/driver.py``). ``process`` routes by capability: the registered agent one of whose
capabilities (or whose name) the message names, else the first registered. A
``conversation_id`` makes the run continue that conversation and append to it
(``domain/conversations.py``): one run at a time, its last 20 messages first.
"""

from __future__ import annotations

import asyncio
import re
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudagents.adapters.memory.messaging import InMemoryEventBus
from cloudagents.bootstrap import build_local_deps, default_model_factory
from cloudagents.domain.agents import AgentDefinition, ModelConfig
from cloudagents.domain.results import LoopExit
from cloudagents.runtime.driver import LocalDriver, run_settings
from cloudagents.tools import Tool, ToolRegistry

DEFAULT_MODEL = {"provider": "openai", "name": "gpt-4o-mini"}
__all__ = ["AIMessage", "Agent", "AgentRegistry", "HumanMessage", "RegisteredAgent"]


@dataclass
class HumanMessage:
    """A user's message (the LangChain-style name seed 002 uses)."""

    content: str
    role: str = "user"


@dataclass
class AIMessage:
    """An agent's answer."""

    content: Any
    role: str = "assistant"
    agent_name: str | None = None
    run_id: str | None = None


@dataclass
class Agent:
    """Seed 002's agent definition (``src.agents.models.Agent``): stored as an
    ``AgentDefinition`` (``system_prompt`` is its instructions, ``config_data`` its capabilities
    and generation parameters)."""

    name: str
    description: str = ""
    system_prompt: str = "You are a helpful assistant."
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    config_data: dict[str, Any] = field(default_factory=dict)
    max_chain_depth: int = 3
    model: Mapping[str, Any] | None = None
    tools: list[str] = field(default_factory=list)

    def definition(self, default_model: Mapping[str, Any]) -> AgentDefinition:
        data: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "system_prompt": self.system_prompt,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "config_data": dict(self.config_data),
            "max_chain_depth": self.max_chain_depth,
            "model": dict(self.model or default_model),
            "tools": list(self.tools),
        }
        return AgentDefinition.model_validate(data)


class RegisteredAgent:
    """A registered agent: ``process_message`` runs it through the engine."""

    def __init__(self, registry: AgentRegistry, definition: AgentDefinition) -> None:
        self.registry = registry
        self.definition = definition

    @property
    def name(self) -> str:
        return self.definition.name or self.definition.id

    async def process_message(self, message: str, conversation_id: str | None = None) -> AIMessage:
        return await self.registry._run(self, message, conversation_id)


class AgentRegistry:
    """Seed 002's ``AgentRegistry(session)``. ``session`` is accepted as the seed passes it (its
    database session) and unused: definitions live in the engine's agent store. ``model`` is
    the model of definitions that name none (default: OpenAI's ``gpt-4o-mini``, the key from
    ``OPENAI_API_KEY``); ``tools`` are the functions their ``tools`` may name."""

    def __init__(
        self,
        session: Any = None,
        *,
        model: Mapping[str, Any] | ModelConfig | None = None,
        tools: Iterable[Tool] = (),
    ) -> None:
        self.session = session
        if isinstance(model, ModelConfig):
            model = model.model_dump(exclude_defaults=True)
        self.default_model = dict(model or DEFAULT_MODEL)
        self.tools = ToolRegistry(tools)
        self._agents: dict[str, RegisteredAgent] = {}
        self._drivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LocalDriver] = (
            weakref.WeakKeyDictionary()
        )

    def register_agent(
        self, agent_def: Agent | AgentDefinition | Mapping[str, Any]
    ) -> RegisteredAgent:
        """Validate and register a definition (a changed one replaces the earlier)."""
        if isinstance(agent_def, Agent):
            definition = agent_def.definition(self.default_model)
        elif isinstance(agent_def, AgentDefinition):
            definition = agent_def
        else:
            data = dict(agent_def)
            data.setdefault("model", self.default_model)
            definition = AgentDefinition.model_validate(data)
        registered = RegisteredAgent(self, definition)
        self._agents[registered.name] = registered
        return registered

    def get_agent(self, name: str) -> RegisteredAgent | None:
        return self._agents.get(name)

    def list_agents(self) -> list[RegisteredAgent]:
        return list(self._agents.values())

    def route(self, text: str) -> RegisteredAgent:
        """The agent a message goes to: one whose capability or name it names, else the first."""
        if not self._agents:
            raise LookupError("no agent is registered")
        words = set(re.findall(r"[a-z0-9_-]+", text.lower()))
        for agent in self._agents.values():
            named = {c.lower() for c in agent.definition.capabilities}
            named |= {agent.name.lower(), agent.definition.id}
            if named & words:
                return agent
        return next(iter(self._agents.values()))

    async def process(
        self,
        messages: Sequence[HumanMessage | Mapping[str, Any] | str],
        conversation_id: str | None = None,
        *,
        agent_name: str | None = None,
    ) -> AIMessage:
        """Route the latest message (or send it to ``agent_name``) and run it; with a
        ``conversation_id`` the run continues that conversation."""
        if not messages:
            raise ValueError("process needs at least one message")
        latest = messages[-1]
        if isinstance(latest, str):
            text = latest
        elif isinstance(latest, Mapping):
            text = str(latest.get("content", ""))
        else:
            text = latest.content
        agent = self.get_agent(agent_name) if agent_name else self.route(text)
        if agent is None:
            raise LookupError(f"no agent named {agent_name!r}")
        return await self._run(agent, text, conversation_id)

    async def _run(
        self, agent: RegisteredAgent, text: str, conversation_id: str | None
    ) -> AIMessage:
        driver = self._driver()
        run_id = f"registry-{agent.definition.id}-{uuid.uuid4().hex[:12]}"
        run = await driver.run(
            agent.definition,
            text,
            run_id=run_id,
            variables={},
            source="registry",
            conversation_id=conversation_id,
        )
        assert run.result is not None
        payload = dict(run.result.payload)
        if run.result.exit is LoopExit.SATISFIED:
            content: Any = payload["answer"] if set(payload) == {"answer"} else payload
        else:
            content = {"error": run.result.exit.value, "reason": payload.get("reason", "")}
        return AIMessage(content=content, agent_name=agent.name, run_id=run_id)

    def _driver(self) -> LocalDriver:
        loop = asyncio.get_running_loop()
        if loop not in self._drivers:
            settings = run_settings(project="local-project", workspace="registry")
            self._drivers[loop] = LocalDriver(
                lambda dispatcher, models: build_local_deps(
                    settings, dispatcher, tools=self.tools, model_factory=models
                ),
                outward=InMemoryEventBus(),
                default_model=default_model_factory,
            )
        return self._drivers[loop]
