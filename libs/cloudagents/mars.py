"""Seed 003's API (MARSYS) as a façade over the one engine: ``ModelConfig``, ``Agent`` with
``auto_run`` and ``invoke_agent``, ``AgentRegistry``, ``MemoryManager``, ``Message``,
``RequestContext``. A seed example runs with its imports changed to ``from cloudagents.mars
import ...``.

Every ``auto_run`` is a run of the services' own run executor and tool invoker, in this
process (``runtime/driver.py``): the agent is an ``AgentDefinition`` built from the seed's
arguments, its tools are ``Tool``s, its ``allowed_peers`` are offered as one tool each, and a
peer call is a durable child run (``engine/calls.py``). Memory is the conversation the next
``auto_run`` continues. A subclass that overrides ``_run`` is the model of its runs: each model
turn asks ``_run(prompt, request_context, "auto_step")`` and reads its JSON action.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import uuid
import weakref
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloudagents.adapters.memory.messaging import InMemoryEventBus
from cloudagents.bootstrap import (
    SdkClients,
    build_local_deps,
    build_sdk_deps,
    close_sdk_deps,
    default_model_factory,
    sdk_clients,
)
from cloudagents.domain import messages as domain
from cloudagents.domain.agents import AgentDefinition, schema_to_json_schema
from cloudagents.domain.agents import ModelConfig as EngineModelConfig
from cloudagents.domain.messages import GenerationParams, ModelRequest, ModelResponse, ToolCall
from cloudagents.domain.results import LoopExit
from cloudagents.engine.calls import peer_tool_name
from cloudagents.engine.step import schema_problem
from cloudagents.gcp import WorkspaceResources
from cloudagents.ports.model import ChunkSink
from cloudagents.runtime.driver import LocalDriver, run_settings
from cloudagents.tools import Tool, ToolRegistry

log = logging.getLogger(__name__)
MAX_DEPTH = 5
__all__ = [
    "Agent",
    "AgentRegistry",
    "LogLevel",
    "MemoryManager",
    "Message",
    "ModelConfig",
    "RequestContext",
    "aclose",
    "use_gcp",
    "use_memory",
]


class LogLevel(IntEnum):
    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARNING = logging.WARNING
    ERROR = logging.ERROR


class ModelConfig(BaseModel):
    """Seed 003's model configuration. ``api_key`` is kept in this process's environment only
    (under a generated name the definition refers to), never in a stored definition."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["api", "local"] = "api"
    provider: str = "openai"
    name: str = Field(min_length=1)
    api_key: str | None = None
    base_url: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop_sequences: list[str] | None = None
    timeout_seconds: float = 120.0

    def engine_model(self) -> EngineModelConfig:
        key_env = None
        if self.api_key:
            key_env = (
                "CLOUDAGENTS_MARS_KEY_" + uuid.uuid5(uuid.NAMESPACE_OID, self.api_key).hex[:12]
            )
            os.environ[key_env] = self.api_key
        provider = "ollama" if self.type == "local" and self.provider == "openai" else self.provider
        return EngineModelConfig.model_validate(
            {
                "provider": provider,
                "name": self.name,
                "base_url": self.base_url,
                "api_key_env": key_env,
                "timeout_seconds": self.timeout_seconds,
            }
        )

    def generation(self, max_tokens: int | None = None) -> GenerationParams:
        given = {
            "temperature": self.temperature,
            "max_tokens": max_tokens or self.max_tokens,
            "top_p": self.top_p,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "stop_sequences": self.stop_sequences,
        }
        return GenerationParams.model_validate({k: v for k, v in given.items() if v is not None})


@dataclass
class Message:
    """Seed 003's message: ``role`` is ``user``, ``assistant``, ``tool``, ``system`` or
    ``error`` (a validation failure)."""

    role: str
    content: Any = None
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return json.dumps(self.content, ensure_ascii=False)

    def to_llm_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": _text(self.content)}
        for key in ("tool_calls", "tool_call_id", "name"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_response_dict(cls, data: Mapping[str, Any], name: str | None = None) -> Message:
        return cls(
            role=str(data.get("role", "assistant")),
            content=data.get("content"),
            tool_calls=data.get("tool_calls"),
            name=name,
        )


class _Done:
    """What ``update_memory`` returns: nothing to wait for, but awaitable, since the seed's
    examples call it both ways."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class MemoryManager:
    """An agent's conversation: what the next ``auto_run`` continues from."""

    def __init__(self, memory_type: str = "conversation_history") -> None:
        self.memory_type = memory_type
        self.history: list[Message] = []

    def update_memory(self, message: Message) -> _Done:
        self.history.append(message)
        return _Done()

    def retrieve_recent(self, limit: int) -> list[Message]:
        return self.history[-limit:] if limit > 0 else []

    def to_llm_format(self) -> list[dict[str, Any]]:
        return [m.to_llm_dict() for m in self.history]

    def reset_memory(self) -> None:
        self.history.clear()


@dataclass
class RequestContext:
    """Seed 003's request context: who asked, how deep in a chain of calls."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    interaction_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    interaction_count: int = 0
    depth: int = 0
    caller_agent_name: str | None = None


class AgentRegistry:
    """Agents by ``agent_name``; an agent registers itself when it is made."""

    _agents: ClassVar[weakref.WeakValueDictionary[str, Agent]] = weakref.WeakValueDictionary()
    _counter: ClassVar[itertools.count[int]] = itertools.count(1)

    @classmethod
    def register(cls, agent: Agent, name: str | None = None) -> str:
        name = name or f"agent_{next(cls._counter)}"
        cls._agents[name] = agent
        return name

    @classmethod
    def unregister(cls, name: str) -> None:
        cls._agents.pop(name, None)

    @classmethod
    def get(cls, name: str) -> Agent | None:
        return cls._agents.get(name)

    @classmethod
    def all(cls) -> dict[str, Agent]:
        return dict(cls._agents)


def agent_id_of(name: str) -> str:
    """An engine agent id from a seed ``agent_name`` ("ResearcherAgent" -> "researcheragent")."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_") or "agent"
    return slug[:63] if slug[0].isalnum() else ("a" + slug)[:63]


@dataclass(frozen=True)
class _Backend:
    """Where the façade's runs are recorded: memory (default), or Firestore, Pub/Sub and Cloud
    Storage of ``project`` (``use_gcp``), as ``DistributedAgent`` records them."""

    project: str | None = None
    workspace: str = "mars"


_BACKEND = _Backend()


def use_gcp(project_id: str, workspace: str = "mars") -> None:
    """Record the façade's runs on GCP (or the emulators the environment names) from now on,
    as ``DistributedAgent`` does; ``use_memory()`` goes back."""
    global _BACKEND
    _BACKEND = _Backend(project_id, workspace)
    _RUNTIMES.clear()


def use_memory() -> None:
    global _BACKEND
    _BACKEND = _Backend()
    _RUNTIMES.clear()


class _Runtime:
    """The engine of the façade's agents in one event loop: one driver, one tool registry, so
    an agent and the peers it calls run side by side."""

    def __init__(self, backend: _Backend) -> None:
        self.tools = ToolRegistry()
        self.clients: SdkClients | None = None
        if backend.project is None:
            settings = run_settings(project="local-project", workspace=backend.workspace)
            self.driver = LocalDriver(
                lambda dispatcher, models: build_local_deps(
                    settings, dispatcher, tools=self.tools, model_factory=models
                ),
                outward=InMemoryEventBus(),
                default_model=default_model_factory,
            )
            return
        settings = run_settings(project=backend.project, workspace=backend.workspace, backend="gcp")
        clients = self.clients = sdk_clients(backend.project)
        resources = WorkspaceResources.for_workspace(backend.project, backend.workspace)
        clients.ensure_resources(resources.topics, resources.context_bucket)
        self.driver = LocalDriver(
            lambda dispatcher, models: build_sdk_deps(
                settings, dispatcher, clients=clients, tools=self.tools, model_factory=models
            ),
            outward=clients.outward,
            default_model=default_model_factory,
        )


_RUNTIMES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Runtime] = (
    weakref.WeakKeyDictionary()
)


async def _runtime() -> _Runtime:
    loop = asyncio.get_running_loop()
    if loop not in _RUNTIMES:
        backend = _BACKEND
        runtime = (
            await asyncio.to_thread(_Runtime, backend) if backend.project else _Runtime(backend)
        )
        _RUNTIMES.setdefault(loop, runtime)
    return _RUNTIMES[loop]


async def aclose() -> None:
    """Release this event loop's GCP clients (``use_gcp``); optional."""
    runtime = _RUNTIMES.pop(asyncio.get_running_loop(), None)
    if runtime is not None and runtime.clients is not None:
        await runtime.clients.aclose()
        await close_sdk_deps(runtime.driver.deps)


class Agent:
    """Seed 003's ``Agent``: ``Agent(model=ModelConfig(...), description=..., tools={name: fn},
    agent_name=..., allowed_peers=[...], input_schema=..., output_schema=...)``."""

    def __init__(
        self,
        model: ModelConfig | None = None,
        description: str = "",
        tools: Mapping[str, Callable[..., Any]] | None = None,
        agent_name: str | None = None,
        allowed_peers: Iterable[str] | None = None,
        input_schema: Any = None,
        output_schema: Any = None,
        memory_type: str = "conversation_history",
        max_tokens: int | None = None,
        *,
        model_config: ModelConfig | None = None,
        **kwargs: Any,
    ) -> None:
        config = model or model_config
        if config is None:
            raise TypeError("Agent needs model= (or model_config=): a ModelConfig")
        if not isinstance(config, ModelConfig):
            raise TypeError(f"model must be a ModelConfig, not {type(config).__name__}")
        self.model_config = config
        self.description = description
        self.tools = dict(tools or {})
        self.allowed_peers = set(allowed_peers or ())
        self.input_schema = schema_to_json_schema(input_schema)
        self.output_schema = schema_to_json_schema(output_schema)
        self.max_tokens = max_tokens
        self.memory = MemoryManager(memory_type)
        self.name = AgentRegistry.register(self, agent_name)
        self._tool_objects = [Tool(name, function) for name, function in self.tools.items()]
        self.extra = kwargs

    @property
    def tools_schema(self) -> list[dict[str, Any]]:
        return [t.spec().to_openai() for t in self._tool_objects]

    def definition(self, max_steps: int = 10) -> AgentDefinition:
        """This agent as the engine runs it."""
        instructions = self.description or "You are a helpful assistant."
        if self.output_schema is not None:
            instructions += (
                "\n\nYour final answer is a JSON object matching this schema: "
                + json.dumps(self.output_schema)
            )
        return AgentDefinition(
            id=agent_id_of(self.name),
            name=self.name,
            description=self.description,
            instructions=instructions,
            model=self.model_config.engine_model(),
            generation=self.model_config.generation(self.max_tokens),
            tools=[t.name for t in self._tool_objects],
            allowed_peers=[agent_id_of(p) for p in sorted(self.allowed_peers)],
            input_schema=self.input_schema,
            output_schema=self.output_schema,
            budget={"max_iterations": max(1, max_steps)},
            max_chain_depth=MAX_DEPTH,
        )

    async def auto_run(
        self,
        initial_request: Any = None,
        request_context: RequestContext | None = None,
        max_steps: int = 10,
        **kwargs: Any,
    ) -> Message:
        """Run until a final answer (at most ``max_steps`` model turns) and remember the turn.
        Returns the answer as an ``assistant`` message, or an ``error`` message saying why the
        run ended otherwise."""
        request = initial_request if initial_request is not None else kwargs.get("initial_prompt")
        context = request_context or RequestContext()
        runtime = await _runtime()
        await self._register(runtime, max_steps, set())
        model = _RunModel(self, context) if _overrides_run(self) else None
        prior = [
            domain.Message(role=m.role, content=_text(m.content))
            for m in self.memory.history
            if m.role in ("user", "assistant")
        ]
        run = await runtime.driver.run(
            self.definition(max_steps),
            _text(request),
            run_id=f"mars-{agent_id_of(self.name)}-{uuid.uuid4().hex[:12]}",
            variables={},
            source="mars",
            model=model,
            prior_messages=prior,
        )
        assert run.result is not None
        context.interaction_count += 1
        answer = _answer(
            self.name, run.result.exit, dict(run.result.payload), self.output_schema is not None
        )
        self.memory.update_memory(Message(role="user", content=request))
        if answer.role != "error":
            self.memory.update_memory(answer)
        return answer

    async def invoke_agent(
        self,
        target_agent_name: str,
        request: Any,
        request_context: RequestContext | None = None,
    ) -> Message:
        """Call a peer directly. The request is checked against the peer's ``input_schema``
        first: a mismatch is ``Message(role="error", content="Request validation failed: …")``."""
        context = request_context or RequestContext()
        if target_agent_name not in self.allowed_peers:
            return Message(
                role="error",
                content=f"{self.name} may not invoke {target_agent_name!r} (allowed_peers: "
                f"{sorted(self.allowed_peers)})",
                name=self.name,
            )
        target = AgentRegistry.get(target_agent_name)
        if target is None:
            return Message(role="error", content=f"no agent named {target_agent_name!r}")
        if context.depth + 1 > MAX_DEPTH:
            return Message(role="error", content=f"call depth {context.depth + 1} > {MAX_DEPTH}")
        if target.input_schema is not None:
            value = request if isinstance(request, dict) else {"request": request}
            if problem := schema_problem(target.input_schema, value):
                return Message(
                    role="error",
                    content=f"Request validation failed for {target_agent_name}: {problem}",
                    name=self.name,
                )
        child = RequestContext(
            request_id=context.request_id,
            interaction_count=0,
            depth=context.depth + 1,
            caller_agent_name=self.name,
        )
        return await target.auto_run(request, request_context=child)

    async def _run(
        self, prompt: Any, request_context: RequestContext, run_mode: str, **kwargs: Any
    ) -> Message:
        """One turn of the configured model through the engine, ``prompt`` as its request (what
        ``super()._run(...)`` gives a subclass); a subclass overrides it to make its own model
        turns (see the module). Memory is ``auto_run``'s, not changed here."""
        runtime = await _runtime()
        await self._register(runtime, 1, set())
        run = await runtime.driver.run(
            self.definition(1),
            _text(prompt),
            run_id=f"mars-{agent_id_of(self.name)}-{uuid.uuid4().hex[:12]}",
            variables={},
            source="mars",
        )
        assert run.result is not None
        return _answer(
            self.name, run.result.exit, dict(run.result.payload), self.output_schema is not None
        )

    async def _log_progress(
        self, request_context: RequestContext, level: LogLevel, message: str, **data: Any
    ) -> None:
        log.log(int(level), "%s: %s", self.name, message)

    def _construct_full_system_prompt(
        self, base_description: str, json_mode_for_output: bool = False
    ) -> str:
        prompt = base_description
        if json_mode_for_output:
            prompt += (
                '\nReply with JSON: {"thought": ..., "next_action": "final_response" | '
                '"call_tool" | "invoke_agent", "action_input": {...}}'
            )
        return prompt

    async def _register(self, runtime: _Runtime, max_steps: int, seen: set[str]) -> None:
        """Register this agent's tools, and its peers (recursively) as definitions."""
        seen.add(self.name)
        for tool in self._tool_objects:
            runtime.tools.register(tool)
        for peer_name in self.allowed_peers:
            peer = AgentRegistry.get(peer_name)
            if peer is not None and peer_name not in seen:
                await runtime.driver.deps.agents.put_agent(peer.definition(max_steps))
                await peer._register(runtime, max_steps, seen)


def _overrides_run(agent: Agent) -> bool:
    return type(agent)._run is not Agent._run


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _answer(name: str, exit: LoopExit, payload: dict[str, Any], structured: bool) -> Message:
    if exit is LoopExit.SATISFIED:
        if set(payload) == {"answer"} and not structured:
            return Message(role="assistant", content=payload["answer"], name=name)
        return Message(role="assistant", content=payload, name=name)
    reason = payload.get("reason", exit.value)
    if exit is LoopExit.MAX_ITERS and "output schema" in str(payload):
        reason = f"Response validation failed: {reason}"
    return Message(role="error", content=f"{exit.value}: {reason}", name=name)


class _RunModel:
    """A subclass's ``_run`` as the model of its runs: each turn passes the latest input and
    reads the JSON action (``final_response``, ``call_tool``, ``invoke_agent``) it answers."""

    def __init__(self, agent: Agent, context: RequestContext) -> None:
        self.agent = agent
        self.context = context

    async def __call__(
        self, request: ModelRequest, *, on_chunk: ChunkSink | None = None
    ) -> ModelResponse:
        latest = next((m for m in reversed(request.messages) if m.role != "system"), None)
        prompt = latest.content if latest is not None else ""
        reply = await self.agent._run(prompt, self.context, "auto_step")
        content = reply.content
        action: Any = None
        if isinstance(content, str):
            try:
                action = json.loads(content)
            except ValueError:
                action = None
        elif isinstance(content, dict):
            action = content
        if not isinstance(action, dict) or "next_action" not in action:
            return ModelResponse(content=_text(content))
        step = action["next_action"]
        given = action.get("action_input") or {}
        if step == "call_tool":
            calls = [
                ToolCall(id=f"call_{i}", name=c["name"], arguments=c.get("arguments") or {})
                for i, c in enumerate(given.get("tool_calls", []))
            ]
            return ModelResponse(tool_calls=calls)
        if step == "invoke_agent":
            name = peer_tool_name(agent_id_of(str(given.get("agent_name", ""))))
            arguments = given.get("request")
            if not isinstance(arguments, dict):
                arguments = {"request": _text(arguments)}
            return ModelResponse(tool_calls=[ToolCall(id="call_0", name=name, arguments=arguments)])
        response = given.get("response", given) if isinstance(given, dict) else given
        return ModelResponse(
            content=response if isinstance(response, dict | str) else _text(response)
        )
