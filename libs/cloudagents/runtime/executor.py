"""The run executor: one agent step per message, applied exactly once per ``(run_id, seq)``.

Order inside a step: read the run -> checks -> model call (never inside a transaction; every call
is recorded with its usage and cost) -> decide -> one transaction that applies the step only if
the run is still at ``seq`` -> publish the step's outbox. A redelivered message for the step just
committed re-publishes that outbox, so a crash between commit and publish loses nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from pydantic import ValidationError

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.approvals import ApprovalRecord
from cloudagents.domain.conversations import CONVERSATION_WINDOW
from cloudagents.domain.errors import LimitReached, ModelError, PermanentMessageError
from cloudagents.domain.events import (
    ContentChunk,
    ThinkingStatus,
    event_id,
)
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.messages import (
    GenerationParams,
    Message,
    ModelResponse,
    ToolCall,
    ToolSpec,
    tool_message,
)
from cloudagents.domain.policy import GuardrailConfig
from cloudagents.domain.results import LoopExit, RunProgress
from cloudagents.domain.runs import (
    AuditRecord,
    GraphTaskLink,
    ModelCallRecord,
    ParentCall,
    RunRecord,
    StepMessage,
    TokenLink,
    WakeUp,
)
from cloudagents.domain.steps import StepCommit
from cloudagents.domain.templates import TemplateError
from cloudagents.engine import approvals, plan, pricing, waits
from cloudagents.engine import calls as agent_calls
from cloudagents.engine.approvals import Gate
from cloudagents.engine.step import (
    Stop,
    account,
    build_request,
    check_before_model_call,
    check_daily_cost,
    decide,
    initial_messages,
    opening_stop,
    reservation_hold_seconds,
    unrenderable_opening,
)
from cloudagents.faults import crash_point
from cloudagents.graphs.dispatch import node_dispatch
from cloudagents.graphs.runs import (
    DEFAULT_DISPATCH_SECONDS,
    WorkflowRunError,
    start_workflow_run,
)
from cloudagents.ports.model import ModelClient
from cloudagents.ports.stores import RunStore
from cloudagents.runtime.definitions import definition, pin_agents
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.retrying import RetryingModel
from cloudagents.runtime.toolbox import pin_functions, run_specs, tool_names
from cloudagents.telemetry import genai_attributes, tracer
from cloudagents.tools import needs_approval

log = logging.getLogger(__name__)
CHUNK_FLUSH_CHARS = 400
CHUNK_FLUSH_SECONDS = 0.25


async def start_run(
    deps: Deps,
    *,
    run_id: str,
    agent: AgentDefinition,
    message: str,
    variables: dict[str, Any],
    source: str,
    principal: str | None = None,
    parent_run_id: str | None = None,
    chain_depth: int = 0,
    prior_messages: list[Message] | None = None,
    prior_agent: str | None = None,
    guardrails: GuardrailConfig | None = None,
    parent_call: ParentCall | None = None,
    conversation_id: str | None = None,
    token_link: TokenLink | None = None,
    generation: GenerationParams | None = None,
    graph_task: GraphTaskLink | None = None,
) -> bool:
    """Create the run document and its opening transcript; ``False`` if it already existed.
    ``token_link``: the workflow token firing the run executes (``runtime/transitions.py``);
    ``generation`` replaces the agent's generation parameters for this run; ``graph_task``: the
    graph workflow node task the run is (``graphs/agents.py``).

    ``prior_messages`` (a handoff's transferred context) go between the instructions and the
    new user message; the other agent's replies among them are named after ``prior_agent``.
    ``guardrails`` replace the agent's for this run (seed 000's ``run(guardrails=...)``).
    The stored functions among the agent's tools are pinned on the run here
    (``toolbox.pin_functions``), whoever starts it: the api, an intent, a handoff, ``Agent.run``.
    """
    if await deps.runs.get_run(run_id) is not None:
        # A redelivered intent or offer: look before writing. A create that fails on an existing
        # run costs a failed commit, and hundreds of them (one per redelivery) contend with the
        # run's own transactions.
        return False
    opening_error: str | None = None
    try:
        opening = initial_messages(agent, message, variables)
    except TemplateError as exc:
        # Not the caller's exception: the run exists and ends ERROR with the reason at its
        # first step (``opening_stop``), through the api, an intent or ``Agent.run`` alike.
        opening, opening_error = unrenderable_opening(agent, message), str(exc)
    if conversation_id is not None:
        # The conversation's last turns come first; the claim (ConversationBusy while another
        # run holds it) appends this run's message, and its finishing commit its answer.
        window = await deps.runs.conversation_messages(conversation_id, last=CONVERSATION_WINDOW)
        await deps.runs.claim_conversation(
            conversation_id, run_id=run_id, agent_id=agent.id, message=opening[-1]
        )
        prior_messages = [*window, *(prior_messages or [])]
        prior_agent = prior_agent or agent.id
    if prior_messages:
        carried = [
            m.model_copy(update={"name": m.name or prior_agent}) if m.role == "assistant" else m
            for m in prior_messages
            if m.role != "system"
        ]
        opening = [opening[0], *carried, *opening[1:]]
    functions = await pin_functions(deps, agent)
    now = deps.clock()
    deadline = now + timedelta(seconds=agent.timeout_seconds)
    tree: dict[str, Any] = {}
    if parent_call is not None:
        # An agent-to-agent call: the child joins its caller's tree, and ends by its caller's
        # deadline at the latest (an answer after it would reach no one).
        caller = await deps.runs.get_run(parent_call.run_id)
        if caller is None:
            raise PermanentMessageError(f"the calling run {parent_call.run_id!r} does not exist")
        tree = {
            "parent_call": parent_call,
            "root_run_id": caller.root_run_id or caller.run_id,
            "root_agent_id": caller.root_agent_id or caller.agent_id,
            "call_path": [*caller.call_path, caller.agent_id],
            "call_depth": caller.call_depth + 1,
        }
        # The tree shares its root's token budget: a call may use what its caller has left.
        caller_agent = await definition(deps, caller, caller.agent_id)
        cap = caller.token_budget
        if cap is None and caller_agent is not None:
            cap = caller_agent.budget.max_tokens_per_run
        if cap is not None:
            tree["token_budget"] = max(cap - caller.progress.total_tokens, 0)
        if caller.deadline_at is not None:
            deadline = min(deadline, caller.deadline_at)
    run = RunRecord(
        run_id=run_id,
        agent_id=agent.id,
        deadline_at=deadline,
        created_at=now,
        variables=variables,
        opening_error=opening_error,
        token_link=token_link,
        generation=generation,
        graph_task=graph_task,
        source=source,
        principal=principal,
        parent_run_id=parent_run_id,
        chain_depth=chain_depth,
        traceparent=None,
        guardrails=guardrails,
        functions=functions,
        agent_versions=await pin_agents(deps, agent),
        conversation_id=conversation_id,
        **tree,
    )
    return await deps.runs.create_run(run, opening)


class TranscriptCache:
    """The transcripts of recently stepped runs, so a step reads only the messages added since
    this process last saw the run (reads per step stay flat as a run grows).

    Safe with any number of instances: messages are append-only and numbered, so what a process
    holds is always a prefix of the transcript; the rest is read from ``start=len(prefix)`` and
    the result is checked against the run's ``message_count`` (a full read if it disagrees).
    """

    def __init__(self, max_runs: int = 64) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[str, list[Message]] = OrderedDict()

    async def read(self, runs: RunStore, run: RunRecord) -> list[Message]:
        known = self._runs.pop(run.run_id, [])
        if len(known) > run.message_count:
            known = []
        transcript = list(known)
        if len(transcript) < run.message_count:
            transcript.extend(await runs.messages(run.run_id, start=len(known)))
        if len(transcript) != run.message_count:
            transcript = await runs.messages(run.run_id)
        self._keep(run.run_id, transcript)
        return list(transcript)

    def committed(self, run_id: str, message_count: int, added: list[Message]) -> None:
        """A step this process committed appended ``added``, ending at ``message_count``: kept,
        so the run's next step here reads no transcript (only if what is held is the prefix
        just before them; otherwise the next read finds what is missing)."""
        known = self._runs.get(run_id)
        if known is not None and len(known) + len(added) == message_count:
            self._keep(run_id, [*known, *added])

    def _keep(self, run_id: str, transcript: list[Message]) -> None:
        self._runs.pop(run_id, None)
        self._runs[run_id] = transcript
        while len(self._runs) > self.max_runs:
            self._runs.popitem(last=False)

    def forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)


class RunExecutor:
    """Applies intents and step messages."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.transcripts = TranscriptCache()

    async def handle_intent(self, intent: IntentionMessage) -> str:
        """Create the run an intent names (once) and apply its first step; an intent that names
        a graph starts a workflow run instead (``start_workflow``)."""
        if intent.starts_workflow:
            return await self.start_workflow(intent)
        try:
            start = intent.start_run()
        except ValidationError as exc:
            raise PermanentMessageError(f"intent payload is not a run start: {exc}") from exc
        agent = await self.deps.agents.get_agent(start.agent_id)
        if agent is None:
            run = await self.deps.runs.get_run(intent.run_id)
            if run is not None and not run.finished:
                # ``POST /runs`` created it, then the agent was deleted: end it, with the reason,
                # rather than leave a queued run that no step will ever move.
                gone = Stop(LoopExit.ERROR, f"agent {start.agent_id!r} no longer exists")
                return await self.stop(run, gone)
            raise PermanentMessageError(f"unknown agent {start.agent_id!r}")
        return await self.begin(
            run_id=intent.run_id,
            agent=agent,
            message=start.message,
            variables=dict(start.variables),
            source="pubsub" if intent.source_agent != "api" else "api",
            parent_run_id=start.parent_run_id,
            parent_call=start.parent_call,
            conversation_id=start.conversation_id,
            graph_task=start.graph_task,
        )

    async def start_workflow(self, intent: IntentionMessage) -> str:
        """Start the graph workflow run an intent names, once: the run id is the payload's
        ``workflow_id`` or the intent's ``run_id``, so a redelivered intent finds its run (and
        publishes its still open tasks again) instead of starting a second one. The same
        start as ``POST /workflows/{graph}/runs`` (``graphs/runs.py``)."""
        try:
            start = intent.start_workflow()
        except ValidationError as exc:
            raise PermanentMessageError(f"intent payload is not a workflow start: {exc}") from exc
        if self.deps.workflows is None:
            raise PermanentMessageError("this service has no workflow store for a workflow intent")
        try:
            _, created = await start_workflow_run(
                self.deps.workflows,
                node_dispatch(self.deps.settings, self.deps.bus.publish, self.deps.tasks.schedule),
                workspace=self.deps.settings.workspace,
                graph=start.graph,
                initial_state=start.initial_state,
                workflow_id=start.workflow_id or intent.run_id,
                max_steps=start.max_steps,
                priority=start.priority,
                dispatch_seconds=DEFAULT_DISPATCH_SECONDS,
                existing_ok=True,
            )
        except WorkflowRunError as exc:  # unknown graph, an id taken by another graph's run
            raise PermanentMessageError(str(exc)) from exc
        return "workflow-started" if created else "workflow-duplicate"

    async def begin(
        self,
        *,
        run_id: str,
        agent: AgentDefinition,
        message: str,
        variables: dict[str, Any],
        source: str,
        parent_run_id: str | None = None,
        guardrails: GuardrailConfig | None = None,
        parent_call: ParentCall | None = None,
        prior_messages: list[Message] | None = None,
        conversation_id: str | None = None,
        graph_task: GraphTaskLink | None = None,
    ) -> str:
        """Create the run (once), schedule its deadline wake-up and apply its first step: what
        an intent does, and what ``Agent.run`` and ``DistributedAgent.run`` do in process.
        ``prior_messages``: an earlier conversation the run continues (between the
        instructions and the new message)."""
        await start_run(
            self.deps,
            run_id=run_id,
            agent=agent,
            message=message,
            variables=variables,
            source=source,
            parent_run_id=parent_run_id,
            guardrails=guardrails,
            parent_call=parent_call,
            prior_messages=prior_messages,
            prior_agent=agent.id,
            conversation_id=conversation_id,
            graph_task=graph_task,
        )
        # The run's deadline wake-up, on every delivery of the intent (a duplicate is harmless,
        # a missing one is a run nobody ends): it ends the run at timeout_seconds whatever it is
        # waiting for, even if every message of the run is lost.
        await self.deps.schedule_wake(
            WakeUp(run_id=run_id, at=self.deps.clock() + timedelta(seconds=agent.timeout_seconds))
        )
        return await self.handle_step(StepMessage(run_id=run_id, seq=0))

    async def handle_step(self, message: StepMessage) -> str:
        """Apply step ``message.seq`` of the run, or recognise a stale/duplicate message."""
        run = await self.deps.runs.get_run(message.run_id)
        if run is None:
            raise PermanentMessageError(f"unknown run {message.run_id!r}")
        if message.seq < run.seq:
            if message.seq == run.seq - 1 and run.outbox:
                await self.deps.publish(run.outbox)
                return "replayed-outbox"
            return "stale"
        if message.seq > run.seq:
            return "ahead"
        if run.finished:
            return "finished"
        if waits.waiting(run):
            return "waiting-for-tools"
        with tracer.start_as_current_span(
            "agent.step", attributes={"cloudagents.run_id": run.run_id, "cloudagents.seq": run.seq}
        ):
            return await self._step(run)

    async def stop(self, run: RunRecord, stop: Stop) -> str:
        """End the run at its current step with ``stop`` (a timeout, from its wake-up)."""
        return await self._commit(*plan.plan_stop(self._context(), run, run.progress, [], stop))

    async def _step(self, run: RunRecord) -> str:
        agent = await definition(self.deps, run, run.agent_id)
        if agent is None:
            gone = Stop(LoopExit.ERROR, f"agent {run.agent_id!r} no longer exists")
            return await self._commit(*plan.plan_stop(self._context(), run, run.progress, [], gone))
        if run.guardrails is not None:
            agent = agent.model_copy(update={"guardrails": run.guardrails})
        if run.generation is not None:
            agent = agent.model_copy(update={"generation": run.generation})
        if run.token_budget is not None:
            own = agent.budget.max_tokens_per_run
            share = max(run.token_budget, 1)
            tree_cap = share if own is None else min(own, share)
            agent = agent.model_copy(
                update={"budget": agent.budget.model_copy(update={"max_tokens_per_run": tree_cap})}
            )
        if (overdue := plan.timed_out(run, self.deps.clock())) is not None:
            return await self._commit(
                *plan.plan_stop(self._context(), run, run.progress, [], overdue)
            )
        if (unrenderable := opening_stop(run.opening_error)) is not None:
            return await self._commit(
                *plan.plan_stop(self._context(), run, run.progress, [], unrenderable)
            )
        transcript = await self.transcripts.read(self.deps.runs, run)
        new_messages: list[Message] = []
        progress = run.progress
        if run.status in waits.WAITING_STATUSES:
            results, below = await self._tool_results(run)
            new_messages.extend(results)
            transcript.extend(results)
            # Counted when their results are applied: a run that ends waiting for a tool (its
            # deadline) has not executed it (seed 000: ``tool_calls`` is "tools executed").
            # The calls' child runs are charged to this run: a tree spends its root's budget.
            progress = progress.model_copy(
                update={
                    "tool_calls": progress.tool_calls + len(results),
                    "total_tokens": progress.total_tokens + below.total_tokens,
                    "prompt_tokens": progress.prompt_tokens + below.prompt_tokens,
                    "completion_tokens": progress.completion_tokens + below.completion_tokens,
                    "cost_usd": progress.cost_usd + below.cost_usd,
                }
            )
        if blocked := check_before_model_call(agent, progress, transcript):
            return await self._commit(
                *plan.plan_stop(self._context(), run, progress, new_messages, blocked)
            )
        day = self.deps.clock().date().isoformat()
        reserve = pricing.max_call_cost(agent.model, agent.generation.max_tokens)
        payers = await self._payers(run, agent)
        for payer in payers:
            spent = await self.deps.cost_ledger.spent(payer.id, day)
            if capped := check_daily_cost(payer, spent, reserve):
                return await self._commit(
                    *plan.plan_stop(self._context(), run, progress, new_messages, capped)
                )
        tools = await run_specs(self.deps, run)
        peers = await self._peers(run, agent)
        specs, offer = self._offered(agent, tools, peers)
        # Every call is reserved and settled in its own agent's ledger (what it spent, cap or
        # not), and in its tree's root agent's when that one has a cap.
        ledgers = list(dict.fromkeys([agent.id, *(p.id for p in payers)]))
        reply_or_error = await self._call_model(
            run, agent, transcript, day, reserve, specs, offer, ledgers, payers
        )
        if isinstance(reply_or_error, LimitReached):
            return await self._defer(run, reply_or_error)
        if isinstance(reply_or_error, ModelError):
            progress = progress.model_copy(
                update={"errors": [*progress.errors, str(reply_or_error)]}
            )
            stop = Stop(LoopExit.ERROR, str(reply_or_error))
            return await self._commit(
                *plan.plan_stop(self._context(), run, progress, new_messages, stop)
            )
        reply, cost, attempt_id = reply_or_error
        progress = account(progress, reply, cost)
        # Gated by the run's tools (registered and stored functions), not its peers.
        gated, cleared = await self._gates(run, agent, reply.tool_calls, tools)
        children = agent_calls.child_calls(run, agent, reply.tool_calls, peers)
        outcome = decide(agent, progress, reply, specs, gated, cleared, children)
        new_messages.append(reply.as_message())
        commit, label = plan.plan_outcome(
            self._context(), run, agent, progress, new_messages, reply, outcome
        )
        return await self._commit(
            commit.model_copy(update={"applied_model_call": attempt_id}), label
        )

    async def _defer(self, run: RunRecord, refused: LimitReached) -> str:
        """The shared LLM limits refused the call (it never reached the provider and cost
        nothing): nothing is committed, and a wake-up applies the step after ``retry_after``."""
        at = self.deps.clock() + timedelta(seconds=refused.retry_after)
        await self.deps.schedule_wake(WakeUp(run_id=run.run_id, seq=run.seq, step=True, at=at))
        log.info("step deferred by the LLM limits", extra={"run_id": run.run_id})
        return "deferred"

    async def _payers(self, run: RunRecord, agent: AgentDefinition) -> list[AgentDefinition]:
        """Whose daily cost caps a model call of this run counts against: its agent's, and in
        a tree of calls its root agent's too (a fan-out cannot spend past the root's cap)."""
        payers = [agent] if agent.budget.max_daily_cost is not None else []
        if run.root_agent_id is not None and run.root_agent_id != agent.id:
            root = await definition(self.deps, run, run.root_agent_id)
            if root is not None and root.budget.max_daily_cost is not None:
                payers.append(root)
        return payers

    async def _peers(self, run: RunRecord, agent: AgentDefinition) -> dict[str, AgentDefinition]:
        """The registered definitions of the agent's ``allowed_peers`` (one tool each), at the
        versions the run pinned."""
        found: dict[str, AgentDefinition] = {}
        for peer_id in agent.allowed_peers:
            peer = await definition(self.deps, run, peer_id)
            if peer is not None:
                found[peer_id] = peer
        return found

    def _offered(
        self,
        agent: AgentDefinition,
        tools: dict[str, ToolSpec],
        peers: dict[str, AgentDefinition],
    ) -> tuple[dict[str, ToolSpec], list[str]]:
        """The tools the model may call: the run's (registered ones and its pinned stored
        functions, ``toolbox.run_specs``), and one per peer agent; and the names offered, the
        agent's tools (``name@hash`` as ``name``) then its peers'."""
        specs = dict(tools)
        offer = tool_names(agent)
        for peer in peers.values():
            spec = agent_calls.peer_spec(peer)
            specs[spec.name] = spec
            offer.append(spec.name)
        return specs, offer

    async def _gates(
        self,
        run: RunRecord,
        agent: AgentDefinition,
        calls: list[ToolCall],
        specs: dict[str, ToolSpec],
    ) -> tuple[dict[int, Gate], set[int]]:
        """The calls of a reply that wait for a person, by index (``engine/approvals.py``):
        the tool's own rule or the policy's decide; and those a remembered approval covers.
        The decision is stored on the step's tool-call records, so a redelivered step never
        decides differently: only one commit of the step applies. A stored function of the run
        (``specs``, ``toolbox.run_specs``) is gated like a tool: by the policy's rule for its
        name, else by its risk against the threshold (it has no rule of its own)."""
        policy = agent.approval
        gates: dict[int, Gate] = {}
        for i, call in enumerate(calls):
            spec = specs.get(call.name)
            if spec is None:
                continue  # not a tool here: the invoker answers with an error, nobody is asked
            tool = None if call.name in run.functions else self.deps.tools.get(call.name)
            rule = policy.tools.get(call.name) if policy is not None else None
            says = needs_approval(tool, rule, call.arguments)
            source = f"the approval rule {rule!r}" if rule else f"tool {call.name!r}"
            if (found := approvals.gate(policy, call, spec.risk_level, says, source)) is not None:
                gates[i] = found
        cleared: set[int] = set()
        if gates:
            names = sorted({calls[i].name for i in gates})
            grants = await self.deps.runs.approval_grants(run.run_id, agent.id, names)
            now = self.deps.clock()
            cleared = {i for i in gates if approvals.granted(grants, calls[i].name, now)}
            gates = {i: g for i, g in gates.items() if i not in cleared}
        return gates, cleared

    async def _tool_results(self, run: RunRecord) -> tuple[list[Message], RunProgress]:
        """The step's tool results as messages, and what the calls' child runs spent."""
        # Every call of the step was claimed (its results are all in): none is only listed.
        calls = await self.deps.runs.tool_calls(run.run_id, run.seq - 1, unclaimed=False)
        messages = []
        below = RunProgress()
        for record in calls:
            if record.child_run_id is not None and record.status == "done":
                child = await self.deps.runs.get_run(record.child_run_id)
                if child is not None:
                    spent = child.progress
                    below = below.model_copy(
                        update={
                            "total_tokens": below.total_tokens + spent.total_tokens,
                            "prompt_tokens": below.prompt_tokens + spent.prompt_tokens,
                            "completion_tokens": below.completion_tokens + spent.completion_tokens,
                            "cost_usd": below.cost_usd + spent.cost_usd,
                        }
                    )
            result = record.result
            if record.result_uri:
                blob = await self.deps.blobs.get(record.result_uri)
                result = blob.decode() if blob is not None else f"(missing {record.result_uri})"
            messages.append(tool_message(record.call, result))
        return messages, below

    async def _call_model(
        self,
        run: RunRecord,
        agent: AgentDefinition,
        transcript: list[Message],
        day: str,
        reserve: float,
        specs: dict[str, ToolSpec],
        offer: list[str],
        ledgers: list[str],
        payers: list[AgentDefinition],
    ) -> tuple[ModelResponse, float, str] | ModelError:
        model: ModelClient = RetryingModel(
            self.deps.model_factory(agent, run.run_id),
            agent.retry,
            timeout_seconds=agent.model.timeout_seconds,
        )
        if self.deps.limit_model is not None:
            model = self.deps.limit_model(model, agent, self.deps.clock)
        request = build_request(agent, transcript, specs, offer)
        chunks = _ChunkBatcher(self.deps, run.run_id, run.seq)
        hold = reservation_hold_seconds(agent)
        # A reservation holds the estimate against a cap; a ledger without one only records
        # what was spent (settled below), so it reserves nothing: one write less per call.
        capped = {agent.id} if agent.budget.max_daily_cost is not None else set()
        capped |= {payer.id for payer in payers}
        reservations = {
            key: (
                await self.deps.cost_ledger.reserve(key, day, reserve, hold_seconds=hold)
                if key in capped
                else ""
            )
            for key in ledgers
        }
        actual = 0.0
        with tracer.start_as_current_span(f"chat {agent.model.name}") as span:
            try:
                # Before the call, so it sorts first among the step's phase-``a`` events.
                await chunks.status(f"calling model {agent.model.name}")
                started = time.perf_counter()
                reply = await model(request, on_chunk=chunks.add)
                duration_ms = (time.perf_counter() - started) * 1000
            except ModelError as error:
                span.set_status(trace.StatusCode.ERROR, str(error))
                for key, reservation in reservations.items():
                    await self.deps.cost_ledger.settle(key, day, reservation, 0.0)
                return error
            # Settle first: the call is paid for whatever fails after it.
            actual = pricing.cost_of(agent.model, reply.usage)
            for key, reservation in reservations.items():
                await self.deps.cost_ledger.settle(key, day, reservation, actual)
            await chunks.flush()
            span.set_attributes(
                genai_attributes(
                    system=agent.model.provider,
                    model=agent.model.name,
                    input_tokens=reply.usage.prompt_tokens,
                    output_tokens=reply.usage.completion_tokens,
                )
            )
        attempt_id = uuid.uuid4().hex
        await self.deps.runs.record_model_call(
            ModelCallRecord(
                run_id=run.run_id,
                seq=run.seq,
                attempt_id=attempt_id,
                model=agent.model.name,
                usage=reply.usage,
                cost_usd=actual,
                duration_ms=duration_ms,
            )
        )
        crash_point("executor.after_model_call")
        return reply, actual, attempt_id

    def _context(self) -> plan.StepContext:
        return plan.StepContext(
            now=self.deps.clock(),
            wake_seconds=self.deps.settings.wake_seconds,
            context_bucket=self.deps.topology.context_bucket,
        )

    async def _commit(self, commit: StepCommit, label: str) -> str:
        committed = await self.deps.runs.commit_step(commit)
        crash_point("executor.after_commit")
        if committed is None:
            # Another delivery applied this step first; its outbox is already on its way.
            return "lost-race"
        if committed.finished:
            self.transcripts.forget(commit.run_id)
        else:
            self.transcripts.committed(
                commit.run_id, committed.message_count, list(commit.new_messages)
            )
        await self.deps.publish(committed.outbox)
        if commit.approvals:
            await self._requested(commit.approvals)
        log.info(
            "step committed",
            extra={
                "fields": {"run_id": commit.run_id, "seq": commit.expected_seq, "outcome": label}
            },
        )
        return label

    async def _requested(self, requests: list[ApprovalRecord]) -> None:
        """Audit each approval the step requested (an entry named after the approval, so a
        repeat writes the same one) and tell the in-process approval callback, if any."""
        for approval in requests:
            await self.deps.audit.record_audit(
                AuditRecord(
                    id=f"approval-requested-{approval.doc_id}".replace(":", "-"),
                    action="approval requested",
                    outcome="allowed",
                    status=202,
                    principal=approval.started_by,
                    target=approval.run_id,
                    reason=f"approval {approval.approval_id} of {approval.tool}: "
                    f"{approval.reason_required}; expires {approval.expires_at.isoformat()}",
                    created_at=approval.requested_at,
                )
            )
            if self.deps.on_approval is not None:
                await self.deps.on_approval(approval)


class _ChunkBatcher:
    """Streams reply text into ``content_chunk`` events, batched so a long reply costs one write
    per batch rather than one per token.

    The rule: buffered text is flushed when at least ``CHUNK_FLUSH_CHARS`` (400) characters are
    buffered or at least ``CHUNK_FLUSH_SECONDS`` (0.25 s) have passed since the last flush (or
    since the model call started), whichever comes first, and at the end of the reply. The check
    runs as text arrives, so a model that streams steadily is seen at most ~0.25 s late, and a
    reply costs at most one write per 0.25 s or per 400 characters."""

    def __init__(
        self,
        deps: Deps,
        run_id: str,
        seq: int,
        *,
        flush_chars: int = CHUNK_FLUSH_CHARS,
        flush_seconds: float = CHUNK_FLUSH_SECONDS,
    ) -> None:
        self.deps = deps
        self.run_id = run_id
        self.seq = seq
        self.flush_chars = flush_chars
        self.flush_seconds = flush_seconds
        self.buffer: list[str] = []
        self.size = 0
        self.count = 0
        self.last_flush = time.monotonic()

    async def add(self, text: str) -> None:
        self.buffer.append(text)
        self.size += len(text)
        if (
            self.size >= self.flush_chars
            or time.monotonic() - self.last_flush >= self.flush_seconds
        ):
            await self.flush()

    async def status(self, status: str) -> None:
        """A ``thinking`` event, numbered in the same phase-``a`` sequence as the chunks."""
        await self.flush()
        event = ThinkingStatus(
            run_id=self.run_id,
            seq=self.seq,
            id=event_id(self.seq, "a", self.count),
            status=status,
        )
        self.count += 1
        await self.deps.runs.add_events(self.run_id, [event])

    async def flush(self) -> None:
        if not self.buffer:
            return
        event = ContentChunk(
            run_id=self.run_id,
            seq=self.seq,
            id=event_id(self.seq, "a", self.count),
            chunk="".join(self.buffer),
        )
        self.buffer, self.size = [], 0
        self.count += 1
        self.last_flush = time.monotonic()
        await self.deps.runs.add_events(self.run_id, [event])
