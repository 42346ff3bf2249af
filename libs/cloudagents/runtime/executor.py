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
from cloudagents.domain.errors import ModelError, PermanentMessageError
from cloudagents.domain.events import (
    ContentChunk,
    ThinkingStatus,
    event_id,
)
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.messages import (
    Message,
    ModelResponse,
    ToolCall,
    ToolSpec,
    tool_message,
)
from cloudagents.domain.policy import GuardrailConfig
from cloudagents.domain.results import LoopExit
from cloudagents.domain.runs import (
    AuditRecord,
    ModelCallRecord,
    ParentCall,
    RunRecord,
    StepMessage,
    WakeUp,
)
from cloudagents.domain.steps import StepCommit
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
    reservation_hold_seconds,
)
from cloudagents.faults import crash_point
from cloudagents.ports.stores import RunStore
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.retrying import RetryingModel
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
) -> bool:
    """Create the run document and its opening transcript; ``False`` if it already existed.

    ``prior_messages`` (a handoff's transferred context) go between the instructions and the
    new user message; the other agent's replies among them are named after ``prior_agent``.
    ``guardrails`` replace the agent's for this run (seed 000's ``run(guardrails=...)``).
    """
    if await deps.runs.get_run(run_id) is not None:
        # A redelivered intent or offer: look before writing. A create that fails on an existing
        # run costs a failed commit, and hundreds of them (one per redelivery) contend with the
        # run's own transactions.
        return False
    try:
        opening = initial_messages(agent, message, variables)
    except (KeyError, ValueError) as exc:
        raise PermanentMessageError(f"cannot build the first message: {exc}") from exc
    if prior_messages:
        carried = [
            m.model_copy(update={"name": m.name or prior_agent}) if m.role == "assistant" else m
            for m in prior_messages
            if m.role != "system"
        ]
        opening = [opening[0], *carried, *opening[1:]]
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
            "call_path": [*caller.call_path, caller.agent_id],
            "call_depth": caller.call_depth + 1,
        }
        if caller.deadline_at is not None:
            deadline = min(deadline, caller.deadline_at)
    run = RunRecord(
        run_id=run_id,
        agent_id=agent.id,
        deadline_at=deadline,
        created_at=now,
        variables=variables,
        source=source,
        principal=principal,
        parent_run_id=parent_run_id,
        chain_depth=chain_depth,
        traceparent=None,
        guardrails=guardrails,
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
        transcript = [*known, *await runs.messages(run.run_id, start=len(known))]
        if len(transcript) != run.message_count:
            transcript = await runs.messages(run.run_id)
        self._runs[run.run_id] = transcript
        while len(self._runs) > self.max_runs:
            self._runs.popitem(last=False)
        return list(transcript)

    def forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)


class RunExecutor:
    """Applies intents and step messages."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.transcripts = TranscriptCache()

    async def handle_intent(self, intent: IntentionMessage) -> str:
        """Create the run an intent names (once) and apply its first step."""
        try:
            start = intent.start_run()
        except ValidationError as exc:
            raise PermanentMessageError(f"intent payload is not a run start: {exc}") from exc
        agent = await self.deps.agents.get_agent(start.agent_id)
        if agent is None:
            raise PermanentMessageError(f"unknown agent {start.agent_id!r}")
        return await self.begin(
            run_id=intent.run_id,
            agent=agent,
            message=start.message,
            variables=dict(start.variables),
            source="pubsub" if intent.source_agent != "api" else "api",
            parent_run_id=start.parent_run_id,
            parent_call=start.parent_call,
        )

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
        agent = await self.deps.agents.get_agent(run.agent_id)
        if agent is None:
            gone = Stop(LoopExit.ERROR, f"agent {run.agent_id!r} no longer exists")
            return await self._commit(*plan.plan_stop(self._context(), run, run.progress, [], gone))
        if run.guardrails is not None:
            agent = agent.model_copy(update={"guardrails": run.guardrails})
        if (overdue := plan.timed_out(run, self.deps.clock())) is not None:
            return await self._commit(
                *plan.plan_stop(self._context(), run, run.progress, [], overdue)
            )
        transcript = await self.transcripts.read(self.deps.runs, run)
        new_messages: list[Message] = []
        progress = run.progress
        if run.status in waits.WAITING_STATUSES:
            results = await self._tool_results(run)
            new_messages.extend(results)
            transcript.extend(results)
            # Counted when their results are applied: a run that ends waiting for a tool (its
            # deadline) has not executed it (seed 000: ``tool_calls`` is "tools executed").
            progress = progress.model_copy(
                update={"tool_calls": progress.tool_calls + len(results)}
            )
        if blocked := check_before_model_call(agent, progress, transcript):
            return await self._commit(
                *plan.plan_stop(self._context(), run, progress, new_messages, blocked)
            )
        day = self.deps.clock().date().isoformat()
        reserve = pricing.max_call_cost(agent.model, agent.generation.max_tokens)
        if agent.budget.max_daily_cost is not None:
            spent = await self.deps.cost_ledger.spent(agent.id, day)
            if capped := check_daily_cost(agent, spent, reserve):
                return await self._commit(
                    *plan.plan_stop(self._context(), run, progress, new_messages, capped)
                )
        peers = await self._peers(agent)
        reply_or_error = await self._call_model(run, agent, transcript, day, reserve, peers)
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
        gated, cleared = await self._gates(run, agent, reply.tool_calls)
        children = agent_calls.child_calls(run, agent, reply.tool_calls, peers)
        specs, _ = self._offered(agent, peers)
        outcome = decide(agent, progress, reply, specs, gated, cleared, children)
        new_messages.append(reply.as_message())
        commit, label = plan.plan_outcome(
            self._context(), run, agent, progress, new_messages, reply, outcome
        )
        return await self._commit(
            commit.model_copy(update={"applied_model_call": attempt_id}), label
        )

    async def _peers(self, agent: AgentDefinition) -> dict[str, AgentDefinition]:
        """The registered definitions of the agent's ``allowed_peers`` (one tool each)."""
        found: dict[str, AgentDefinition] = {}
        for peer_id in agent.allowed_peers:
            peer = await self.deps.agents.get_agent(peer_id)
            if peer is not None:
                found[peer_id] = peer
        return found

    def _offered(
        self, agent: AgentDefinition, peers: dict[str, AgentDefinition]
    ) -> tuple[dict[str, ToolSpec], list[str]]:
        """The tools the model may call: the registered ones, and one per peer agent; and the
        names offered, the agent's tools then its peers'."""
        specs = self.deps.tools.specs()
        offer = list(agent.tools)
        for peer in peers.values():
            spec = agent_calls.peer_spec(peer)
            specs[spec.name] = spec
            offer.append(spec.name)
        return specs, offer

    async def _gates(
        self, run: RunRecord, agent: AgentDefinition, calls: list[ToolCall]
    ) -> tuple[dict[int, Gate], set[int]]:
        """The calls of a reply that wait for a person, by index (``engine/approvals.py``):
        the tool's own rule or the policy's decide; and those a remembered approval covers.
        The decision is stored on the step's tool-call records, so a redelivered step never
        decides differently: only one commit of the step applies."""
        policy = agent.approval
        gates: dict[int, Gate] = {}
        for i, call in enumerate(calls):
            tool = self.deps.tools.get(call.name)
            if tool is None:
                continue  # not a tool here: the invoker answers with an error, nobody is asked
            rule = policy.tools.get(call.name) if policy is not None else None
            says = needs_approval(tool, rule, call.arguments)
            source = f"the approval rule {rule!r}" if rule else f"tool {call.name!r}"
            if (found := approvals.gate(policy, call, tool.risk_level, says, source)) is not None:
                gates[i] = found
        cleared: set[int] = set()
        if gates:
            names = sorted({calls[i].name for i in gates})
            grants = await self.deps.runs.approval_grants(run.run_id, agent.id, names)
            now = self.deps.clock()
            cleared = {i for i in gates if approvals.granted(grants, calls[i].name, now)}
            gates = {i: g for i, g in gates.items() if i not in cleared}
        return gates, cleared

    async def _tool_results(self, run: RunRecord) -> list[Message]:
        calls = await self.deps.runs.tool_calls(run.run_id, run.seq - 1)
        messages = []
        for record in calls:
            result = record.result
            if record.result_uri:
                blob = await self.deps.blobs.get(record.result_uri)
                result = blob.decode() if blob is not None else f"(missing {record.result_uri})"
            messages.append(tool_message(record.call, result))
        return messages

    async def _call_model(
        self,
        run: RunRecord,
        agent: AgentDefinition,
        transcript: list[Message],
        day: str,
        reserve: float,
        peers: dict[str, AgentDefinition],
    ) -> tuple[ModelResponse, float, str] | ModelError:
        model = RetryingModel(
            self.deps.model_factory(agent, run.run_id),
            agent.retry,
            timeout_seconds=agent.model.timeout_seconds,
        )
        specs, offer = self._offered(agent, peers)
        request = build_request(agent, transcript, specs, offer)
        chunks = _ChunkBatcher(self.deps, run.run_id, run.seq)
        reservation = await self.deps.cost_ledger.reserve(
            agent.id, day, reserve, hold_seconds=reservation_hold_seconds(agent)
        )
        actual = 0.0
        with tracer.start_as_current_span(f"chat {agent.model.name}") as span:
            try:
                # Before the call, so it sorts first among the step's phase-``a`` events.
                await chunks.status(f"calling model {agent.model.name}")
                reply = await model(request, on_chunk=chunks.add)
            except ModelError as error:
                span.set_status(trace.StatusCode.ERROR, str(error))
                await self.deps.cost_ledger.settle(agent.id, day, reservation, 0.0)
                return error
            # Settle first: the call is paid for whatever fails after it.
            actual = pricing.cost_of(agent.model, reply.usage)
            await self.deps.cost_ledger.settle(agent.id, day, reservation, actual)
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
