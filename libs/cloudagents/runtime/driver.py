"""One run to its end in this process, on the services' own handlers.

``Agent.run`` (memory adapters) and ``DistributedAgent.run`` (Firestore, GCS, Pub/Sub) both call
``LocalDriver.run``: it registers the agent, starts the run as an intent would
(``RunExecutor.begin``), lets the ``InProcessDispatcher`` deliver every message the executor and
the tool invoker publish until the run is finished, and returns the finished ``RunRecord``. The
``LoopResult`` is the one the executor committed, so a run gives the same result here and in the
services.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.approvals import ApprovalRecord
from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.messages import Message
from cloudagents.domain.policy import GuardrailConfig
from cloudagents.domain.results import LoopResult
from cloudagents.domain.runs import GraphTaskLink, RunRecord
from cloudagents.ports.bus import EventBus
from cloudagents.ports.model import ModelClient
from cloudagents.runtime.approvals import ApprovalError, Approvals
from cloudagents.runtime.deps import Deps, ModelFactory
from cloudagents.runtime.dispatcher import WAKE_URL, InProcessDispatcher
from cloudagents.settings import Backend, Settings, llm_limits_from_env
from cloudagents.telemetry import tracer

log = logging.getLogger(__name__)
DepsBuilder = Callable[[InProcessDispatcher, ModelFactory], Deps]
"""Builds the ``Deps`` of a driver: its ``bus`` and ``tasks`` are the dispatcher given."""
Answer = bool | str | Mapping[str, Any] | None
ApprovalCallback = Callable[[ApprovalRecord], Answer | Awaitable[Answer]]
"""``run(..., approval=callback)``: called with each approval a step requests; answers ``True``
or ``"approve"``, ``False`` or ``"reject"``, or a mapping ``{"decision": "approve"|"reject",
"reason": ..., "arguments": {...edited...}, "principal": ..., "remember": "run"|"agent"}``;
``None`` leaves it to expire (``on_timeout``)."""
IN_PROCESS_PRINCIPAL = "local"


def _decision(answer: Answer) -> dict[str, Any] | None:
    """A callback's answer as ``Approvals.decide`` keywords (``None``: no decision)."""
    if answer is None:
        return None
    if isinstance(answer, bool):
        return {"verdict": "approve" if answer else "reject"}
    if isinstance(answer, str):
        verdict = answer.strip().lower()
        if verdict in ("approve", "approved", "yes", "y"):
            return {"verdict": "approve"}
        if verdict in ("reject", "rejected", "no", "n"):
            return {"verdict": "reject"}
        raise ValueError(f"an approval answer is approve or reject, not {answer!r}")
    decision = dict(answer)
    verdict = str(decision.pop("decision", decision.pop("verdict", "")))
    if verdict not in ("approve", "reject"):
        raise ValueError(f"an approval answer needs decision approve or reject, got {verdict!r}")
    return {"verdict": verdict, **decision}


def terminal_approval(approval: ApprovalRecord) -> Answer:
    """Ask on the terminal: ``y`` approves, anything else rejects with it as the reason."""
    arguments = json.dumps(approval.arguments, ensure_ascii=False)
    print(
        f"\n[approval] {approval.tool}({arguments}) needs approval: {approval.reason_required}",
        file=sys.stderr,
    )
    reply = input("approve? [y/N, or a reason to reject] ").strip()
    if reply.lower() in ("y", "yes"):
        return True
    return {"decision": "reject", "reason": reply or "rejected on the terminal"}


def no_approver(approval: ApprovalRecord) -> Answer:
    """No callback and no terminal: nobody can approve, so the call is rejected at once."""
    return {
        "decision": "reject",
        "reason": "no approval callback was given to run() and there is no terminal to ask on",
    }


def run_settings(
    *, project: str, workspace: str, snapshot_messages: int = 20, backend: Backend = "memory"
) -> Settings:
    """The settings of in-process runs: wake-ups are timers of this process; seed 004's
    ``RATE_LIMIT_PER_MINUTE`` and ``MAX_CONCURRENT_EXECUTIONS`` from the environment, as the
    services read them (the driver's executor applies them through ``Deps.limit_model``)."""
    calls_per_minute, max_concurrent = llm_limits_from_env()
    return Settings(
        rate_limit_per_minute=calls_per_minute,
        max_concurrent_executions=max_concurrent,
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
        self.deps.on_approval = self._on_approval
        self.dispatcher.bind(self.deps)
        self.approvals = Approvals(self.deps, self.dispatcher.executor)
        self._approvers: dict[str, ApprovalCallback] = {}

    async def _on_approval(self, approval: ApprovalRecord) -> None:
        """Ask the run's approval callback (beside the run's lane, as a person would answer
        later) and apply its answer through the same ``Approvals.decide`` as the api."""
        callback = self._approvers.get(approval.run_id)
        if callback is None:
            callback = terminal_approval if sys.stdin.isatty() else no_approver

        async def ask() -> str:
            if inspect.iscoroutinefunction(callback):
                answer = await callback(approval)
            elif callback is terminal_approval:
                answer = await asyncio.to_thread(callback, approval)
            else:
                answer = callback(approval)
                if inspect.isawaitable(answer):
                    answer = await answer
            decision = _decision(answer)
            if decision is None:
                return "left to expire"
            verdict: Literal["approve", "reject"] = decision.pop("verdict")
            principal = str(decision.pop("principal", IN_PROCESS_PRINCIPAL))
            try:
                decided = await self.approvals.decide(
                    approval.run_id,
                    approval.approval_id,
                    principal=principal,
                    verdict=verdict,
                    **decision,
                )
            except ApprovalError as exc:
                if exc.status == 409:
                    return f"already settled: {exc}"
                raise PermanentMessageError(
                    f"approval {approval.approval_id} ({approval.tool}): {exc}"
                ) from exc
            return decided.status

        self.dispatcher.spawn(approval.run_id, f"approval {approval.approval_id}", ask)

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
        approval: ApprovalCallback | None = None,
        prior_messages: list[Message] | None = None,
        conversation_id: str | None = None,
        graph_task: GraphTaskLink | None = None,
    ) -> RunRecord:
        """Run ``agent`` on ``message`` to its end. A ``run_id`` that already exists is not run
        again (as a redelivered intent): its finished record is returned. ``approval``
        answers the run's approvals (default: the terminal when interactive, else reject);
        ``conversation_id``: continue that conversation (``domain/conversations.py``)."""
        await self.deps.agents.put_agent(agent)
        if model is not None:
            self._models[run_id] = model
        if approval is not None:
            self._approvers[run_id] = approval
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
                        prior_messages=prior_messages,
                        conversation_id=conversation_id,
                        graph_task=graph_task,
                    )

                dispatcher.submit(run_id, "intent", begin)
                return await dispatcher.settle(run_id)
        finally:
            self._models.pop(run_id, None)
            self._approvers.pop(run_id, None)
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
        approval: ApprovalCallback | None = None,
        graph_task: GraphTaskLink | None = None,
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
            approval=approval,
            graph_task=graph_task,
        )
        assert run.result is not None  # a finished run carries its result
        return run.result
