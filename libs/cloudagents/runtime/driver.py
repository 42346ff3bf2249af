"""One run to its end in this process, on the services' own handlers.

``Agent.run`` (memory adapters) and ``DistributedAgent.run`` (Firestore, GCS, Pub/Sub) both call
``LocalDriver.run``: it registers the agent, starts the run as an intent would
(``RunExecutor.begin``), lets the ``InProcessDispatcher`` deliver every message the executor and
the tool invoker publish until the run is finished, and returns the finished ``RunRecord``. The
``LoopResult`` is the one the executor committed, so a run gives the same result here and in the
services.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudagents.adapters.llm.factory import build_model_client
from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.policy import GuardrailConfig
from cloudagents.domain.runs import RunRecord
from cloudagents.ports.bus import EventBus
from cloudagents.ports.model import ModelClient
from cloudagents.runtime.deps import Deps, ModelFactory
from cloudagents.runtime.dispatcher import InProcessDispatcher
from cloudagents.telemetry import tracer

DepsBuilder = Callable[[InProcessDispatcher, ModelFactory], Deps]
"""Builds the ``Deps`` of a driver: its ``bus`` and ``tasks`` are the dispatcher given."""


class LocalDriver:
    """Drives runs through an ``InProcessDispatcher`` over the ``Deps`` that ``build`` makes."""

    def __init__(
        self,
        build: DepsBuilder,
        *,
        outward: EventBus | None = None,
        model_client: ModelClient | None = None,
    ) -> None:
        self.model_client = model_client
        self._models: dict[str, ModelClient] = {}
        self.dispatcher = InProcessDispatcher(outward=outward)
        self.deps = build(self.dispatcher, self._model_for)
        self.dispatcher.bind(self.deps)

    def _model_for(self, agent: AgentDefinition, run_id: str) -> ModelClient:
        """The run's own model (a seed-000 ``llm_client``), the driver's, or the definition's."""
        model = self._models.get(run_id) or self.model_client
        return model if model is not None else build_model_client(agent.model)

    async def run(
        self,
        agent: AgentDefinition,
        message: str,
        *,
        run_id: str,
        variables: dict[str, Any],
        source: str,
        guardrails: GuardrailConfig | None = None,
        model: ModelClient | None = None,
    ) -> RunRecord:
        """Run ``agent`` on ``message`` to its end. A ``run_id`` that already exists is not run
        again (as a redelivered intent): its finished record is returned."""
        await self.deps.agents.put_agent(agent)
        if model is not None:
            self._models[run_id] = model
        dispatcher = self.dispatcher
        dispatcher.open(run_id)
        try:
            with tracer.start_as_current_span(
                f"invoke_agent {agent.id}",
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.id": agent.id,
                    "cloudagents.run_id": run_id,
                },
            ):

                async def begin() -> str:
                    return await dispatcher.executor.begin(
                        run_id=run_id,
                        agent=agent,
                        message=message,
                        variables=variables,
                        source=source,
                        guardrails=guardrails,
                    )

                dispatcher.submit(run_id, "intent", begin)
                return await dispatcher.settle(run_id)
        finally:
            self._models.pop(run_id, None)
            dispatcher.close(run_id)
