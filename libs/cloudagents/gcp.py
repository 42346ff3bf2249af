"""Seed 000's public API: ``DistributedAgent``, an agent run in process and recorded on GCP.

``from cloudagents.gcp import DistributedAgent, Budget`` works like the seed's
``from agisa_sac.gcp import ...``. ``await agent.run(message, context={"llm_client": fn})`` runs the
in-process loop (``cloudagents.runner.Agent``, the same step engine as the services) and a
``RunObserver`` writes what the services write:

* Firestore ``agent_runs/{run_id}`` (``source="sdk"``) with its transcript, model calls, tool
  calls and events, one ``interactions/{run_id}-{seq:06d}`` per model step, the ``LoopResult`` on
  the finished run, and ``handoff_offers/{offer_id}`` when the model hands off. Every change is a
  ``RunStore.commit_step`` at the run's current ``seq``, so SDK runs and service runs look alike.
* Cloud Storage ``gs://{project_id}-agent-context``: the last ``snapshot_messages`` (20) messages
  after each step, with the pointer on the run.
* Pub/Sub ``{workspace_topic}-tools``: one audit record per tool call (attribute ``kind=audit``),
  and ``{workspace_topic}-handoff``: ``{"offer_id": ...}``, the message the handoff broker reads.

On the emulators (``PUBSUB_EMULATOR_HOST`` / ``STORAGE_EMULATOR_HOST`` set) missing topics and the
bucket are created on first use; in production they come from Terraform and a missing one is a
``ConfigurationError`` naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudagents.adapters.llm.callable import LLMCallable
from cloudagents.context import ContextSnapshot, save_snapshot, snapshot_object_name
from cloudagents.domain.agents import AgentDefinition, ModelConfig, Provider
from cloudagents.domain.events import (
    Completed,
    ContentChunk,
    Failed,
    HandoffEvent,
    RunEvent,
    ToolCallEvent,
    ToolResultEvent,
    event_id,
)
from cloudagents.domain.handoffs import HandoffOffer, HandoffTarget
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.messages import Message, ModelResponse, ToolCall
from cloudagents.domain.policy import Budget, GuardrailConfig, RetryConfig
from cloudagents.domain.results import LoopExit, LoopResult, RunProgress
from cloudagents.domain.runs import (
    Interaction,
    ModelCallRecord,
    OutboxMessage,
    RunRecord,
    RunStatus,
    SnapshotPointer,
    StepMessage,
    ToolCallRecord,
)
from cloudagents.engine import pricing
from cloudagents.engine.step import CallTools, Finish, HandOff, StepOutcome, Stop, describe
from cloudagents.ports.bus import BlobStore, EventBus
from cloudagents.ports.observer import RunObserver
from cloudagents.ports.stores import RunStore, StepCommit
from cloudagents.runner import Agent
from cloudagents.telemetry import current_traceparent, tracer
from cloudagents.tools import Tool, ToolRegistry, ToolResult, ToolSource

__all__ = [
    "Budget",
    "DistributedAgent",
    "GcpRunObserver",
    "GuardrailConfig",
    "IntentionMessage",
    "LoopExit",
    "LoopResult",
    "ModelConfig",
    "RetryConfig",
    "Tool",
    "WorkspaceResources",
]

log = logging.getLogger(__name__)

TOOL_RESULT_INLINE_BYTES = 64_000
"""Tool results larger than this go to the bucket, as the tool invoker does (Settings default)."""

TERRAFORM_HINT = (
    "Topics and the bucket are created by Terraform (terraform/environments/*, generated from "
    "cloudagents.topology); apply it for this project and workspace, or set "
    "PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST to run against the local emulators, where "
    "they are created on first use."
)


@dataclass(frozen=True)
class WorkspaceResources:
    """The names seed 000 gives a workspace's resources."""

    project_id: str
    workspace_topic: str
    audit_topic: str
    handoff_topic: str
    context_bucket: str

    @classmethod
    def for_workspace(
        cls, project_id: str, workspace_topic: str, *, audit_topic: str | None = None
    ) -> WorkspaceResources:
        return cls(
            project_id=project_id,
            workspace_topic=workspace_topic,
            audit_topic=audit_topic or f"{workspace_topic}-tools",
            handoff_topic=f"{workspace_topic}-handoff",
            context_bucket=f"{project_id}-agent-context",
        )

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.workspace_topic, self.audit_topic, self.handoff_topic)))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (anything JSON cannot hold becomes its ``str``)."""
    return json.loads(json.dumps(value, default=str))


def _json_variables(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context entries that can be stored as run variables (the llm_client cannot)."""
    variables: dict[str, Any] = {}
    for key, value in context.items():
        if key == "llm_client":
            continue
        try:
            variables[str(key)] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            continue
    return variables


@dataclass
class _PendingStep:
    """The record of a step that ended the run: committed together with the result."""

    interaction: Interaction
    model_call: str
    events: list[RunEvent]


@dataclass
class _RunState:
    agent: AgentDefinition
    seq: int = 0
    persisted: int = 0
    chunks: list[str] = field(default_factory=list)
    calls: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    pending: _PendingStep | None = None
    offer: HandoffOffer | None = None
    detached: bool = False


class GcpRunObserver(RunObserver):
    """Records an in-process run through the ports: run store, event bus, blob store.

    Non-terminal steps (tool calls, run-again) are committed as they happen; the step that ends
    the run is committed with the ``LoopResult`` (and the handoff offer) in one transaction, as
    the run executor does.
    """

    def __init__(
        self,
        runs: RunStore,
        bus: EventBus,
        blobs: BlobStore,
        resources: WorkspaceResources,
        *,
        snapshot_messages: int = 20,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if snapshot_messages < 1:
            raise ValueError("snapshot_messages must be at least 1")
        self.runs = runs
        self.bus = bus
        self.blobs = blobs
        self.resources = resources
        self.snapshot_messages = snapshot_messages
        self.clock = clock
        self._variables: dict[str, dict[str, Any]] = {}
        self._runs: dict[str, _RunState] = {}

    def prepare(self, run_id: str, variables: dict[str, Any]) -> None:
        """Remember what to store on the run document when it starts."""
        self._variables[run_id] = variables

    def discard(self, run_id: str) -> None:
        """Forget a run that ended without ``finished`` (an exception escaped the loop)."""
        self._variables.pop(run_id, None)
        self._runs.pop(run_id, None)

    # -- RunObserver -------------------------------------------------------------------------

    async def started(self, run_id: str, agent: AgentDefinition, messages: list[Message]) -> None:
        run = RunRecord(
            run_id=run_id,
            agent_id=agent.id,
            status=RunStatus.RUNNING,
            variables=self._variables.pop(run_id, {}),
            source="sdk",
            traceparent=current_traceparent(),
        )
        if not await self.runs.create_run(run, list(messages)):
            raise ValueError(f"run {run_id!r} already exists in agent_runs")
        self._runs[run_id] = _RunState(agent=agent, persisted=len(messages))

    async def chunk(self, run_id: str, text: str) -> None:
        state = self._runs.get(run_id)
        if state is not None:
            state.chunks.append(text)

    async def step(
        self,
        run_id: str,
        reply: ModelResponse,
        outcome: StepOutcome,
        progress: RunProgress,
        messages: list[Message],
    ) -> None:
        state = self._runs[run_id]
        if state.detached:
            return
        seq = state.seq
        attempt_id = uuid.uuid4().hex
        await self.runs.record_model_call(
            ModelCallRecord(
                run_id=run_id,
                seq=seq,
                attempt_id=attempt_id,
                model=state.agent.model.name,
                usage=reply.usage,
                cost_usd=pricing.cost_of(state.agent.model, reply.usage),
            )
        )
        events: list[RunEvent] = []
        if state.chunks:
            text = "".join(state.chunks)
            state.chunks.clear()
            events.append(
                ContentChunk(run_id=run_id, seq=seq, id=event_id(seq, "a", 0), chunk=text)
            )
        interaction = Interaction(
            run_id=run_id,
            agent_id=state.agent.id,
            seq=seq,
            decision=describe(outcome),
            total_tokens=reply.usage.total_tokens,
            tool_calls=[c.name for c in reply.tool_calls],
        )
        if isinstance(outcome, Finish | Stop | HandOff):
            state.pending = _PendingStep(interaction, attempt_id, events)
            return
        records: list[ToolCallRecord] = []
        if isinstance(outcome, CallTools):
            for index, call in enumerate(outcome.calls):
                records.append(
                    ToolCallRecord(
                        run_id=run_id,
                        seq=seq,
                        index=index,
                        call=call,
                        idempotency_key=f"{run_id}:{seq}:{index}",
                    )
                )
                state.calls.setdefault(call.id, []).append((seq, index))
                events.append(
                    ToolCallEvent(
                        run_id=run_id,
                        seq=seq,
                        id=event_id(seq, "b", index),
                        call_id=call.id,
                        tool_name=call.name,
                        arguments=call.arguments,
                    )
                )
        commit = StepCommit(
            run_id=run_id,
            expected_seq=seq,
            new_messages=messages[state.persisted :],
            # The tools run here, in process: nothing is left pending for the tool invoker.
            status=RunStatus.RUNNING,
            progress=progress.model_copy(update={"tool_calls": progress.tool_calls + len(records)}),
            tool_calls=records,
            interaction=interaction,
            events=events,
            applied_model_call=attempt_id,
        )
        if await self._commit(state, commit, len(messages)):
            await self._snapshot(run_id, state, messages)

    async def tool_called(self, run_id: str, call: ToolCall, result: ToolResult) -> None:
        state = self._runs[run_id]
        places = state.calls.get(call.id)
        if state.detached or not places:
            return
        seq, index = places.pop(0)
        value: Any = _jsonable(result.content)
        result_uri: str | None = None
        if len(json.dumps(value)) > TOOL_RESULT_INLINE_BYTES:
            name = f"runs/{run_id}/tool_results/{seq:06d}-{index:03d}.txt"
            result_uri = await self.blobs.put(
                self.resources.context_bucket, name, result.as_text().encode(), "text/plain"
            )
            value = None
        await self.runs.start_tool_call(run_id, seq, index, lease_seconds=0.0)
        event = ToolResultEvent(
            run_id=run_id,
            seq=seq,
            id=event_id(seq, "c", index),
            call_id=call.id,
            tool_name=call.name,
            result=value if result_uri is None else {"uri": result_uri},
            is_error=result.is_error,
        )
        finish = await self.runs.finish_tool_call(
            run_id,
            seq,
            index,
            result=value,
            is_error=result.is_error,
            result_uri=result_uri,
            events=[event],
            # Never stored or sent: the call was not pending, so no step waits to be woken.
            wake=OutboxMessage.of("steps", StepMessage(run_id=run_id, seq=seq + 1)),
        )
        attempts = finish.record.attempts if finish is not None else 1
        audit = {
            "run_id": run_id,
            "agent_id": state.agent.id,
            "seq": seq,
            "index": index,
            "tool": call.name,
            "call_id": call.id,
            "idempotency_key": f"{run_id}:{seq}:{index}",
            "is_error": result.is_error,
            "attempts": attempts,
            "source": "sdk",
        }
        await self._publish(self.resources.audit_topic, audit, kind="audit")

    async def handoff(
        self, run_id: str, agent: AgentDefinition, target: HandoffTarget, messages: list[Message]
    ) -> dict[str, Any]:
        state = self._runs[run_id]
        if state.detached:
            return await super().handoff(run_id, agent, target, messages)
        now = self.clock()
        seq = state.seq
        offer_id = f"offer-{run_id}-{seq}"
        # The broker hands the target run this snapshot: it is written before the offer exists.
        uri = await self._save_snapshot(run_id, state, messages, seq + 1)
        state.offer = HandoffOffer(
            offer_id=offer_id,
            source_run_id=run_id,
            source_agent=agent.id,
            required_capabilities=target.required_capabilities,
            message=target.message,
            preferred_agent=target.preferred_agent,
            context_uri=uri,
            chain_depth=1,
            created_at=now,
            expires_at=now + timedelta(seconds=target.ttl_seconds),
        )
        return {
            "offer_id": offer_id,
            "required_capabilities": list(target.required_capabilities),
            "expires_at": state.offer.expires_at.isoformat(),
            "handoff_target": target.model_dump(mode="json", exclude_none=True),
        }

    async def finished(self, run_id: str, result: LoopResult, messages: list[Message]) -> None:
        state = self._runs.pop(run_id)
        if state.detached:
            return
        seq = state.seq
        pending = state.pending
        events: list[RunEvent] = list(pending.events) if pending else []
        committed_from = len(events)  # the streamed chunks are phase "a"; the rest phase "b"
        offer = state.offer
        if offer is not None:
            events.append(
                HandoffEvent(
                    run_id=run_id,
                    seq=seq,
                    id=event_id(seq, "b", len(events) - committed_from),
                    offer_id=offer.offer_id,
                    required_capabilities=list(offer.required_capabilities),
                )
            )
        new_messages = messages[state.persisted :]
        if result.exit in (LoopExit.SATISFIED, LoopExit.HANDOFF):
            final = next(
                (m.content or "" for m in reversed(new_messages) if m.role == "assistant"), ""
            )
            events.append(
                Completed(
                    run_id=run_id,
                    seq=seq,
                    id=event_id(seq, "b", len(events) - committed_from),
                    exit=result.exit.value,
                    final_response=final,
                    total_tokens=result.total_tokens,
                )
            )
        else:
            events.append(
                Failed(
                    run_id=run_id,
                    seq=seq,
                    id=event_id(seq, "b", len(events) - committed_from),
                    exit=result.exit.value,
                    error=str(result.payload.get("reason", "; ".join(result.errors))),
                )
            )
        commit = StepCommit(
            run_id=run_id,
            expected_seq=seq,
            new_messages=new_messages,
            status=RunStatus.FINISHED,
            progress=RunProgress(
                iterations=result.iterations,
                total_tokens=result.total_tokens,
                tool_calls=result.tool_calls,
                cost_usd=result.cost_usd,
                errors=list(result.errors),
            ),
            result=result,
            interaction=pending.interaction if pending else None,
            events=events,
            handoff_offer=offer,
            applied_model_call=pending.model_call if pending else None,
        )
        if not await self._commit(state, commit, len(messages)):
            return
        if offer is not None and offer.context_uri is not None:
            pointer = SnapshotPointer(
                uri=offer.context_uri, seq=state.seq, message_count=len(messages)
            )
            await self.runs.set_snapshot(run_id, pointer)
            await self._publish(self.resources.handoff_topic, {"offer_id": offer.offer_id})
        else:
            await self._snapshot(run_id, state, messages)

    # -- helpers -----------------------------------------------------------------------------

    async def _commit(self, state: _RunState, commit: StepCommit, message_count: int) -> bool:
        committed: RunRecord | None = await self.runs.commit_step(commit)
        if committed is None:
            # Cancelled through the api, or another writer: stop recording, let the loop end.
            state.detached = True
            log.warning(
                "run %s moved on without this process (cancelled?); no longer recording it",
                commit.run_id,
            )
            return False
        state.seq = committed.seq
        state.persisted = message_count
        return True

    async def _save_snapshot(
        self, run_id: str, state: _RunState, messages: list[Message], seq: int
    ) -> str:
        snapshot = ContextSnapshot(
            run_id=run_id,
            agent_id=state.agent.id,
            seq=seq,
            message_count=len(messages),
            messages=list(messages[-self.snapshot_messages :]),
        )
        return await save_snapshot(self.blobs, self.resources.context_bucket, snapshot)

    async def _snapshot(self, run_id: str, state: _RunState, messages: list[Message]) -> None:
        uri = await self._save_snapshot(run_id, state, messages, state.seq)
        pointer = SnapshotPointer(uri=uri, seq=state.seq, message_count=len(messages))
        await self.runs.set_snapshot(run_id, pointer)

    async def _publish(self, topic: str, data: dict[str, Any], **attributes: str) -> None:
        traceparent = current_traceparent()
        if traceparent:
            attributes.setdefault("traceparent", traceparent)
        body = json.dumps(data, separators=(",", ":")).encode()
        await self.bus.publish(topic, body, attributes)


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
    """The GCP clients and adapters of one event loop (the Firestore client is loop-bound)."""

    loop: asyncio.AbstractEventLoop
    firestore: Any
    observer: GcpRunObserver
    cost_ledger: Any
    rate_limiter: Any
    resources_ok: bool = False
    checking: asyncio.Task[None] | None = None


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
        audit_topic: str | None = None,
    ) -> None:
        if not project_id:
            raise ValueError("project_id is required")
        if not workspace_topic:
            raise ValueError("workspace_topic is required")
        if snapshot_messages < 1:
            raise ValueError("snapshot_messages must be at least 1")
        self.agent_id = agent_id
        self.project_id = project_id
        self.workspace_topic = workspace_topic
        self.snapshot_messages = snapshot_messages
        self.resources = WorkspaceResources.for_workspace(
            project_id, workspace_topic, audit_topic=audit_topic
        )
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry.from_mapping(tools)
        self._model_name = model if isinstance(model, str) else None
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
        self.agent = Agent(self.definition, tools=self.tools)
        self._inferred: Agent | None = None
        self._backend: _Backend | None = None
        self._resources_checked = False
        self._publisher: Any = None
        self._storage: Any = None

    @property
    def budget(self) -> Budget:
        return self.definition.budget

    def _runner(self, llm_client: LLMCallable | None) -> Agent:
        if llm_client is not None or self._model_name is None:
            return self.agent
        if self._inferred is None:
            model = ModelConfig(provider=infer_provider(self._model_name), name=self._model_name)
            definition = self.definition.model_copy(update={"model": model})
            self._inferred = Agent(definition, tools=self.tools)
        return self._inferred

    async def run(
        self,
        message: str,
        context: Mapping[str, Any] | None = None,
        *,
        guardrails: GuardrailConfig | Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> LoopResult:
        """Run to an exit and return the ``LoopResult``; everything is recorded on GCP as it goes.

        ``context["llm_client"]`` is the model; other JSON-able context entries are template
        variables, stored on the run. ``guardrails`` overrides the agent's for this run.
        """
        context = dict(context or {})
        runner = self._runner(context.get("llm_client"))
        backend = await self._ready()
        runner.observer = backend.observer
        runner.cost_ledger = backend.cost_ledger
        runner.rate_limiter = backend.rate_limiter
        run_id = run_id or f"run-{uuid.uuid4().hex[:16]}"
        backend.observer.prepare(run_id, _json_variables(context))
        with tracer.start_as_current_span(
            f"invoke_agent {self.agent_id}",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.id": self.agent_id,
                "cloudagents.run_id": run_id,
            },
        ):
            try:
                return await runner.run(message, context, guardrails=guardrails, run_id=run_id)
            finally:
                backend.observer.discard(run_id)

    async def _ready(self) -> _Backend:
        """The clients of this event loop (built on first use); the resources checked once."""
        loop = asyncio.get_running_loop()
        backend = self._backend
        if backend is None or backend.loop is not loop:
            # No await between the check and the assignment: concurrent first runs share one.
            backend = self._backend = self._build_backend(loop)
        if not backend.resources_ok:
            if backend.checking is None:
                backend.checking = loop.create_task(asyncio.to_thread(self._ensure_resources))
            try:
                await asyncio.shield(backend.checking)
            except BaseException:
                backend.checking = None  # the next run checks again
                raise
            backend.resources_ok = self._resources_checked = True
        return backend

    def _build_backend(self, loop: asyncio.AbstractEventLoop) -> _Backend:
        from cloudagents import bootstrap
        from cloudagents.adapters.firestore.budgets import (
            FirestoreCostLedger,
            FirestoreRateLimiter,
        )
        from cloudagents.adapters.firestore.stores import FirestoreRunStore
        from cloudagents.adapters.gcs import GcsBlobStore
        from cloudagents.adapters.pubsub import PubSubEventBus

        if self._publisher is None:
            self._publisher = bootstrap.publisher_client()
            self._storage = bootstrap.storage_client(self.project_id)
        # The Firestore client is built inside the running loop: its gRPC channel is bound to it.
        db = bootstrap.firestore_client(self.project_id)
        observer = GcpRunObserver(
            FirestoreRunStore(db),
            PubSubEventBus(self._publisher, self.project_id),
            GcsBlobStore(self._storage),
            self.resources,
            snapshot_messages=self.snapshot_messages,
        )
        return _Backend(
            loop=loop,
            firestore=db,
            observer=observer,
            cost_ledger=FirestoreCostLedger(db),
            rate_limiter=FirestoreRateLimiter(db),
            resources_ok=self._resources_checked,
        )

    def _ensure_resources(self) -> None:
        """Topics and bucket exist: created on the emulators, a clear error in production."""
        from cloudagents.adapters.provisioning import ensure_resources

        ensure_resources(
            self.project_id,
            self.resources.topics,
            self.resources.context_bucket,
            publisher=self._publisher,
            storage=self._storage,
            create_topics=bool(os.environ.get("PUBSUB_EMULATOR_HOST")),
            create_bucket=bool(os.environ.get("STORAGE_EMULATOR_HOST")),
            hint=TERRAFORM_HINT,
        )

    async def aclose(self) -> None:
        """Flush pending Pub/Sub messages and release the clients (optional)."""
        backend, self._backend = self._backend, None
        publisher, self._publisher = self._publisher, None
        storage, self._storage = self._storage, None
        self._resources_checked = False
        if publisher is not None:
            await asyncio.to_thread(publisher.stop)
        if storage is not None:
            with contextlib.suppress(Exception):
                storage.close()
        if backend is not None and backend.loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                closing = backend.firestore._firestore_api.transport.close()
                if inspect.isawaitable(closing):
                    await closing

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
