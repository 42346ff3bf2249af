"""Seed 000's public API: ``DistributedAgent``, an agent run in process and recorded on GCP.

``from cloudagents.gcp import DistributedAgent, Budget`` works like the seed's
``from agisa_sac.gcp import ...``. ``await agent.run(message, context={"llm_client": fn})`` runs
the services' own run executor, tool invoker, wake-ups and context snapshotter in this process
(``runtime/driver.py``) on the Firestore and Cloud Storage adapters, so an SDK run is recorded
exactly as a service run is:

* Firestore ``agent_runs/{run_id}`` (``source="sdk"``) with its transcript, model calls, tool
  calls and events, one ``interactions/{run_id}-{seq:06d}`` per model step, the ``LoopResult`` on
  the finished run, and ``handoff_offers/{offer_id}`` when the model hands off;
* Cloud Storage ``gs://{project_id}-agent-context``: the last ``snapshot_messages`` (20) messages
  after each step, with the pointer on the run;
* Pub/Sub, through each step's outbox: ``{workspace_topic}-handoff`` gets ``{"offer_id": ...}``
  (what the handoff broker reads) and ``{workspace_topic}-tools-audit`` one record per tool call.

On the emulators (``PUBSUB_EMULATOR_HOST`` / ``STORAGE_EMULATOR_HOST`` set) missing topics and the
bucket are created on first use; in production they come from Terraform and a missing one is a
``ConfigurationError`` naming it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudagents.adapters.llm.callable import CallableModel, LLMCallable
from cloudagents.adapters.llm.factory import build_model_client
from cloudagents.bootstrap import (
    SdkClients,
    build_sdk_deps,
    close_sdk_deps,
    default_model_factory,
    sdk_clients,
)
from cloudagents.domain.agents import AgentDefinition, ModelConfig, Provider
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.policy import Budget, GuardrailConfig, RetryConfig
from cloudagents.domain.results import LoopExit, LoopResult
from cloudagents.domain.runs import snapshot_object_name
from cloudagents.ports.model import ModelClient
from cloudagents.runtime.driver import ApprovalCallback, LocalDriver, run_settings
from cloudagents.tools import Tool, ToolRegistry, ToolSource

__all__ = [
    "Budget",
    "DistributedAgent",
    "GuardrailConfig",
    "IntentionMessage",
    "LoopExit",
    "LoopResult",
    "ModelConfig",
    "RetryConfig",
    "Tool",
    "WorkspaceResources",
]


@dataclass(frozen=True)
class WorkspaceResources:
    """The names seed 000 gives a workspace's resources (``cloudagents.topology``'s names)."""

    project_id: str
    workspace_topic: str
    audit_topic: str
    handoff_topic: str
    context_bucket: str

    @classmethod
    def for_workspace(cls, project_id: str, workspace_topic: str) -> WorkspaceResources:
        return cls(
            project_id=project_id,
            workspace_topic=workspace_topic,
            audit_topic=f"{workspace_topic}-tools-audit",
            handoff_topic=f"{workspace_topic}-handoff",
            context_bucket=f"{project_id}-agent-context",
        )

    @property
    def topics(self) -> tuple[str, ...]:
        return (self.workspace_topic, self.audit_topic, self.handoff_topic)


def infer_provider(model: str) -> Provider:
    """The provider a bare model name implies when no ``llm_client`` is given."""
    name = model.lower()
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith("gemini"):
        return "gemini"
    return "openai"


@dataclass
class _Backend:
    """The driver of one event loop (the Firestore client is bound to the loop it was built in)."""

    loop: asyncio.AbstractEventLoop
    driver: LocalDriver


class DistributedAgent:
    """Seed 000's agent: ``await agent.run(message, context={"llm_client": fn})``.

    ``model`` is a model name (the seed) or a ``ModelConfig``. With a name, the ``llm_client``
    from ``context`` serves the calls; with no ``llm_client`` the provider is inferred from the
    name (``claude*`` -> Anthropic, ``gemini*`` -> Gemini, otherwise OpenAI; keys from the
    environment). ``tools`` is ``{"name": Tool(...)}``, a list of ``Tool``s, or plain functions.
    """

    def __init__(
        self,
        agent_id: str,
        instructions: str,
        model: str | ModelConfig,
        project_id: str,
        workspace_topic: str,
        budget: Budget | Mapping[str, Any] | None = None,
        tools: Mapping[str, ToolSource] | list[ToolSource] | ToolRegistry | None = None,
        *,
        guardrails: GuardrailConfig | Mapping[str, Any] | None = None,
        capabilities: tuple[str, ...] | list[str] = (),
        snapshot_messages: int = 20,
        retry: RetryConfig | Mapping[str, Any] | None = None,
    ) -> None:
        if not project_id:
            raise ValueError("project_id is required")
        if not workspace_topic:
            raise ValueError("workspace_topic is required")
        if snapshot_messages < 1:
            raise ValueError("snapshot_messages must be at least 1")
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry.from_mapping(tools)
        config = ModelConfig(provider="callable", name=model) if isinstance(model, str) else model
        definition: dict[str, Any] = {
            "id": agent_id,
            "instructions": instructions,
            "model": config,
            "tools": [t.name for t in self.tools],
            "capabilities": list(capabilities),
            "budget": Budget.model_validate(budget) if budget is not None else Budget(),
        }
        if guardrails is not None:
            definition["guardrails"] = GuardrailConfig.model_validate(guardrails)
        if retry is not None:
            definition["retry"] = RetryConfig.model_validate(retry)
        self.definition = AgentDefinition.model_validate(definition)
        self.agent_id = agent_id
        self.project_id = project_id
        self.workspace_topic = workspace_topic
        self.snapshot_messages = snapshot_messages
        self.resources = WorkspaceResources.for_workspace(project_id, workspace_topic)
        self._settings = run_settings(
            project=project_id,
            workspace=workspace_topic,
            snapshot_messages=snapshot_messages,
            backend="gcp",
        )
        self._model_name = model if isinstance(model, str) else None
        self._inferred: ModelClient | None = None
        self._clients: SdkClients | None = None
        self._backend: _Backend | None = None
        self._checking: asyncio.Task[None] | None = None
        self._resources_checked = False

    @classmethod
    def from_definition(
        cls,
        definition: AgentDefinition,
        *,
        project_id: str,
        workspace_topic: str,
        tools: Mapping[str, ToolSource] | list[ToolSource] | ToolRegistry | None = None,
        snapshot_messages: int = 20,
    ) -> DistributedAgent:
        """An agent from a full ``AgentDefinition`` (output schema, timeouts, generation, ...);
        the tools passed are offered to the model besides the definition's."""
        agent = cls(
            definition.id,
            definition.instructions,
            definition.model,
            project_id,
            workspace_topic,
            tools=tools,
            snapshot_messages=snapshot_messages,
        )
        offered = list(dict.fromkeys([*definition.tools, *(t.name for t in agent.tools)]))
        agent.definition = definition.model_copy(update={"tools": offered})
        return agent

    @property
    def budget(self) -> Budget:
        return self.definition.budget

    def _model(self, llm_client: LLMCallable | None) -> ModelClient | None:
        """The run's model: its ``llm_client``, or the provider the model name implies."""
        if llm_client is not None:
            return CallableModel(llm_client)
        if self._model_name is None:
            return None  # a ModelConfig: the definition's own provider
        if self._inferred is None:
            config = ModelConfig(provider=infer_provider(self._model_name), name=self._model_name)
            self._inferred = build_model_client(config)
        return self._inferred

    async def run(
        self,
        message: str,
        context: Mapping[str, Any] | None = None,
        *,
        guardrails: GuardrailConfig | Mapping[str, Any] | None = None,
        run_id: str | None = None,
        approval: ApprovalCallback | None = None,
    ) -> LoopResult:
        """Run to an exit and return the ``LoopResult``; everything is recorded on GCP as it goes.

        ``context["llm_client"]`` is the model; other context entries are template variables,
        stored on the run. ``guardrails`` overrides the agent's for this run. ``approval``
        answers the approvals of gated calls (the approval documents are in Firestore, as the
        services write them); without it they are asked on the terminal, else rejected.
        """
        model = self._model((context or {}).get("llm_client"))
        backend = await self._ready()
        return await backend.driver.run_seed(
            self.definition,
            message,
            context,
            guardrails=guardrails,
            run_id=run_id,
            source="sdk",
            model=model,
            approval=approval,
        )

    async def _ready(self) -> _Backend:
        """The driver of this event loop (built on first use); the resources checked once."""
        loop = asyncio.get_running_loop()
        if self._clients is None:
            self._clients = sdk_clients(self.project_id)
        clients = self._clients
        backend = self._backend
        if backend is None or backend.loop is not loop:
            # No await between the check and the assignment: concurrent first runs share one.
            settings, tools = self._settings, self.tools
            driver = LocalDriver(
                lambda dispatcher, models: build_sdk_deps(
                    settings, dispatcher, clients=clients, tools=tools, model_factory=models
                ),
                outward=clients.outward,
                default_model=default_model_factory,
            )
            backend = self._backend = _Backend(loop, driver)
            self._checking = None
        if not self._resources_checked:
            if self._checking is None:
                self._checking = loop.create_task(asyncio.to_thread(self._ensure_resources))
            try:
                await asyncio.shield(self._checking)
            except BaseException:
                self._checking = None  # the next run checks again
                raise
            self._resources_checked = True
        return backend

    def _ensure_resources(self) -> None:
        """Topics and bucket exist: created on the emulators, a clear error in production."""
        if self._clients is None:
            self._clients = sdk_clients(self.project_id)
        self._clients.ensure_resources(self.resources.topics, self.resources.context_bucket)

    async def aclose(self) -> None:
        """Flush pending Pub/Sub messages and release the clients (optional)."""
        backend, self._backend = self._backend, None
        clients, self._clients = self._clients, None
        self._resources_checked = False
        if clients is not None:
            await clients.aclose()
        if backend is not None and backend.loop is asyncio.get_running_loop():
            await close_sdk_deps(backend.driver.deps)

    async def __aenter__(self) -> DistributedAgent:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def snapshot_uri(self, run_id: str, seq: int) -> str:
        """Where the snapshot of ``run_id`` at step ``seq`` is stored."""
        return f"gs://{self.resources.context_bucket}/{snapshot_object_name(run_id, seq)}"

    def __repr__(self) -> str:
        return (
            f"DistributedAgent({self.agent_id!r}, model={self.definition.model.name!r}, "
            f"project_id={self.project_id!r}, workspace_topic={self.workspace_topic!r})"
        )
