"""One run to its end in this process, on the services' own handlers.

``Agent.run`` (memory adapters) and ``DistributedAgent.run`` (Firestore, GCS, Pub/Sub) both call
``LocalDriver.run``: it registers the agent, starts the run as an intent would
(``RunExecutor.begin``), lets the ``InProcessDispatcher`` deliver every message the executor and
the tool invoker publish until the run is finished, and returns the finished ``RunRecord``. The
``LoopResult`` is the one the executor committed, so a run gives the same result here and in the
services.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.policy import GuardrailConfig
from cloudagents.domain.results import LoopResult
from cloudagents.domain.runs import RunRecord
from cloudagents.ports.bus import EventBus
from cloudagents.ports.model import ModelClient
from cloudagents.runtime.deps import Deps, ModelFactory
from cloudagents.runtime.dispatcher import WAKE_URL, InProcessDispatcher
from cloudagents.settings import Backend, Settings
from cloudagents.telemetry import tracer

DepsBuilder = Callable[[InProcessDispatcher, ModelFactory], Deps]
"""Builds the ``Deps`` of a driver: its ``bus`` and ``tasks`` are the dispatcher given."""


def run_settings(
    *, project: str, workspace: str, snapshot_messages: int = 20, backend: Backend = "memory"
) -> Settings:
    """The settings of in-process runs: wake-ups are timers of this process."""
    return Settings(
        project=project,
        workspace=workspace,
        backend=backend,
        tool_modules=(),
        wake_url=WAKE_URL,
        snapshot_messages=snapshot_messages,
    )


def run_variables(context: Mapping[str, Any]) -> dict[str, Any]:
    """The template variables of a seed-000 ``context``: every entry but ``llm_client``, as JSON
    (stored on the run; a value JSON cannot hold is kept as its ``str``, which is also what a
    template renders of it)."""
    return {
        str(key): json.loads(json.dumps(value, default=str))
        for key, value in context.items()
        if key != "llm_client"
    }


class LocalDriver:
    """Drives runs through an ``InProcessDispatcher`` over the ``Deps`` that ``build`` makes."""

    def __init__(
        self,
        build: DepsBuilder,
        *,
        outward: EventBus,
        default_model: ModelFactory,
        model_client: ModelClient | None = None,
    ) -> None:
        self.model_client = model_client
        self.default_model = default_model
        self._models: dict[str, ModelClient] = {}
        self.dispatcher = InProcessDispatcher(outward=outward)
        self.deps = build(self.dispatcher, self._model_for)
        self.dispatcher.bind(self.deps)

    def _model_for(self, agent: AgentDefinition, run_id: str) -> ModelClient:
        """The run's own model (a seed-000 ``llm_client``), the driver's, or the definition's
        (``default_model``: the composition root's provider factory)."""
        model = self._models.get(run_id) or self.model_client
        return model if model is not None else self.default_model(agent, run_id)

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

    async def run_seed(
        self,
        agent: AgentDefinition,
        message: str,
        context: Mapping[str, Any] | None,
        *,
        guardrails: GuardrailConfig | Mapping[str, Any] | None,
        run_id: str | None,
        source: str,
        model: ModelClient | None,
    ) -> LoopResult:
        """Seed 000's ``run(message, context, guardrails=...)``: the context's entries (but the
        ``llm_client``) are template variables, ``guardrails`` replace the agent's for this run;
        returns the ``LoopResult`` the executor committed."""
        run = await self.run(
            agent,
            message,
            run_id=run_id or f"run-{uuid.uuid4().hex[:16]}",
            variables=run_variables(context or {}),
            source=source,
            guardrails=(
                GuardrailConfig.model_validate(guardrails) if guardrails is not None else None
            ),
            model=model,
        )
        assert run.result is not None  # a finished run carries its result
        return run.result
