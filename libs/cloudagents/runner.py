"""The in-process runner: run an agent with no cloud at all, on the services' own step code.

``await Agent(definition).run("message")`` runs the run executor and the tool invoker in this
process (``runtime/driver.py``), on in-memory adapters, until the run ends, and returns the
``LoopResult`` the executor committed: the same result the services give.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from cloudagents.adapters.llm.callable import CallableModel
from cloudagents.adapters.memory.messaging import InMemoryEventBus
from cloudagents.bootstrap import build_local_deps, default_model_factory
from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.policy import GuardrailConfig
from cloudagents.domain.results import LoopResult
from cloudagents.domain.runs import GraphTaskLink
from cloudagents.functions import FunctionStore
from cloudagents.ports.budgets import CostLedger, RateLimiter
from cloudagents.ports.bus import EventBus
from cloudagents.ports.model import ModelClient
from cloudagents.runtime.driver import ApprovalCallback, LocalDriver, run_settings
from cloudagents.tools import ToolRegistry, ToolSource

Clock = Callable[[], datetime]
LOCAL_PROJECT = "local-project"
LOCAL_WORKSPACE = "local"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def load_definitions(path: str | Path) -> list[AgentDefinition]:
    """Agent definitions from a YAML file: one mapping, a list, or ``{agents: [...]}``."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict) and "agents" in data:
        data = data["agents"]
    items = data if isinstance(data, list) else [data]
    return [AgentDefinition.model_validate(item) for item in items]


class Agent:
    """An agent you can run in process. Tools are Python functions or ``Tool``s (or objects
    shaped like seed 000's own ``Tool``); every tool passed is offered to the model."""

    def __init__(
        self,
        definition: AgentDefinition,
        *,
        tools: Mapping[str, ToolSource] | list[ToolSource] | ToolRegistry | None = None,
        model_client: ModelClient | None = None,
        cost_ledger: CostLedger | None = None,
        rate_limiter: RateLimiter | None = None,
        clock: Clock = _utcnow,
        outward: EventBus | None = None,
        peers: Sequence[Agent | AgentDefinition] = (),
        functions: FunctionStore | None = None,
    ) -> None:
        """``peers``: the agents this one may call (those its ``allowed_peers`` names), run in
        this process as child runs; an ``Agent`` peer brings its tools. ``functions``: where the
        stored functions the definition names among its tools are (seed 002; by default an
        empty in-memory store)."""
        self.definition = definition
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry.from_mapping(tools)
        self.peers = [
            p.definition.model_copy(update={"tools": p.offered_tools(p.definition)})
            if isinstance(p, Agent)
            else p
            for p in peers
        ]
        for peer in peers:
            if isinstance(peer, Agent):
                for peer_tool in peer.tools:
                    self.tools.register(peer_tool)
        self.model_client = model_client
        self.clock = clock
        self._settings = run_settings(project=LOCAL_PROJECT, workspace=LOCAL_WORKSPACE)
        self._driver = LocalDriver(
            lambda dispatcher, models: build_local_deps(
                self._settings,
                dispatcher,
                tools=self.tools,
                model_factory=models,
                cost_ledger=cost_ledger,
                rate_limiter=rate_limiter,
                clock=clock,
                functions=functions,
            ),
            outward=outward if outward is not None else InMemoryEventBus(),
            default_model=default_model_factory,
            model_client=model_client,
        )

    @property
    def driver(self) -> LocalDriver:
        """What runs this agent's runs; ``driver.deps.runs`` holds their records."""
        return self._driver

    def offered_tools(self, agent: AgentDefinition) -> list[str]:
        """The tools offered to the model: the definition's, then every tool passed to this
        ``Agent`` (passing a tool is enough; the services, whose tools come from modules, offer
        only the definition's)."""
        return list(dict.fromkeys([*agent.tools, *(t.name for t in self.tools)]))

    async def run(
        self,
        message: str,
        context: Mapping[str, Any] | None = None,
        *,
        guardrails: GuardrailConfig | Mapping[str, Any] | None = None,
        run_id: str | None = None,
        approval: ApprovalCallback | None = None,
        graph_task: GraphTaskLink | None = None,
    ) -> LoopResult:
        """Run to an exit. ``context["llm_client"]`` overrides the model; other context keys are
        template variables for ``user_template``. ``guardrails`` overrides the definition's.
        ``approval`` answers the approvals of gated tool calls (``runtime/driver.py``); without
        it they are asked on the terminal when there is one, else rejected. ``graph_task``: the
        graph workflow node task this run is (an agent node, ``graphs/agents.py``)."""
        llm_client = (context or {}).get("llm_client")
        for peer in self.peers:
            await self._driver.deps.agents.put_agent(peer)
        return await self._driver.run_seed(
            self.definition.model_copy(update={"tools": self.offered_tools(self.definition)}),
            message,
            context,
            guardrails=guardrails,
            run_id=run_id,
            source="inprocess",
            model=CallableModel(llm_client) if llm_client is not None else None,
            approval=approval,
            graph_task=graph_task,
        )
