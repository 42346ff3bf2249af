"""The durable run: the documents that carry a run through the services.

``agent_runs/{run_id}`` holds a ``RunRecord`` with a monotonically increasing ``seq``. Every
message that moves a run carries ``(run_id, seq)``; a handler applies it only when the run is at
that ``seq``. The transcript, tool calls, model calls and events live in sub-collections, so the
run document stays small however long the run gets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from cloudagents.domain.base import Model, Persisted
from cloudagents.domain.messages import GenerationParams, ToolCall, Usage
from cloudagents.domain.policy import GuardrailConfig
from cloudagents.domain.results import LoopResult, RunProgress

OutboxTopic = Literal[
    "intents", "steps", "tools", "tools_audit", "handoff", "snapshots", "wakeups", "transitions"
]
"""``wakeups`` is not a Pub/Sub topic: it schedules a Cloud Task (``WakeUp``) at ``data["at"]``.
``transitions``: a finished run of a workflow token's firing (``domain/transitions.py``)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunStatus(StrEnum):
    """Where a run is. ``finished`` runs carry a ``LoopResult``."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING_TOOLS = "waiting_tools"
    WAITING_APPROVAL = "waiting_approval"  # waiting, and at least one call awaits a person
    FINISHED = "finished"


class OutboxMessage(Model):
    """A message a committed step must publish; re-published when the step is redelivered."""

    topic: OutboxTopic
    data: dict[str, JsonValue]
    attributes: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, topic: OutboxTopic, record: Persisted) -> OutboxMessage:
        """``record`` as the body of a message on ``topic``, with its ``schema_version``."""
        return cls(topic=topic, data=record.model_dump(mode="json", exclude_none=True))


class SnapshotPointer(Model):
    """Where the latest context snapshot of a run is (``GET /runs/{id}``: found in the bucket;
    on the run document only for runs written before version 6)."""

    uri: str
    seq: int
    message_count: int


PendingKind = Literal["tool_call", "child_run", "approval", "timer", "graph_task"]


class PendingItem(Model):
    """One thing a waiting run waits for. Each is resolved once: its result is saved on its own
    document (a tool call's ``tool_calls/{id}``) before the run is touched, and the resolution
    that leaves nothing pending wakes the run (``engine/waits.py``)."""

    kind: PendingKind
    id: str = Field(min_length=1, max_length=300, description="tool_call: {seq:06d}-{index:03d}")
    deadline: datetime | None = Field(
        default=None, description="when a wake-up must look at it (a lease, the run's timeout)"
    )


class ParentCall(Model):
    """The tool call of another run that started this one (an agent-to-agent call): its
    finishing commit puts its result on that call (``engine/calls.py``)."""

    run_id: str = Field(min_length=1, max_length=128)
    seq: int = Field(ge=0)
    index: int = Field(ge=0)


class TokenLink(Model):
    """The workflow token firing a run executes (seed 004): its finishing commit tells the
    firing (``engine/transitions.py``), which maps the output back and moves the token."""

    token_id: str = Field(min_length=1, max_length=64)
    execution_id: str = Field(min_length=1, max_length=200)


class GraphTaskLink(Model):
    """The graph workflow node task a run answers (an agent node, ``graphs/agents.py``): the
    run's id is derived from these, and the task's result is the run's final output."""

    workflow_id: str = Field(min_length=1, max_length=128)
    task_id: str = Field(min_length=1, max_length=300)
    node: str = Field(min_length=1, max_length=300)
    attempt: int = Field(default=1, ge=1, description="the node's attempt (its retry policy)")


class RunRecord(Persisted):
    """``agent_runs/{run_id}``. Version 2: ``pending`` items replace ``pending_tool_calls``.
    Version 3: run trees (``parent_call``, ``root_run_id``, ``call_path``, ``call_depth``).
    Version 4: ``agent_versions``, the definitions pinned when the run started (a version 3
    run has none: its steps read the latest definition, as they did).
    Version 5: the run's steps are stored as step documents (a step's messages, committed
    events and interaction record in one ``steps/{seq}`` document; ``adapters/firestore/
    steps.py``). A version 4 run's earlier steps stay in the previous layout, which is still
    read; its next steps write step documents, and the run becomes version 5 at its next
    commit, so a release that knows only version 4 retries it rather than misread it.
    Version 6: the run document no longer holds its context snapshot's pointer (``snapshot``:
    the snapshot objects are named by step, ``snapshot_object_name``, and the newest one is
    found in the bucket, ``context.latest_snapshot``), and a tool call's result event is the
    saved tool-call document itself rather than an ``events`` document of its own. A version
    5 run keeps the pointer and the result events it has; its next commit makes it version 6,
    so a release that knows only version 5 (whose event readers would miss the results)
    retries it."""

    CURRENT_SCHEMA_VERSION: ClassVar[int] = 6
    schema_version: int = 6

    run_id: str
    agent_id: str
    status: RunStatus = RunStatus.QUEUED
    seq: int = Field(default=0, ge=0, description="the step the run waits to apply next")
    progress: RunProgress = Field(default_factory=RunProgress)
    message_count: int = Field(default=0, ge=0)
    pending: list[PendingItem] = Field(
        default_factory=list, description="what the run waits for (empty unless it is waiting)"
    )
    outbox: list[OutboxMessage] = Field(default_factory=list)
    result: LoopResult | None = None
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    opening_error: str | None = Field(
        default=None,
        description="why the first message could not be built (a template variable the run "
        "lacks): the run ends ERROR with it at its first step",
    )
    source: str = Field(default="api", description="who started it: api, pubsub, handoff, sdk")
    token_link: TokenLink | None = Field(
        default=None, description="the workflow token firing this run executes, if any"
    )
    generation: GenerationParams | None = Field(
        default=None,
        description="generation parameters replacing the agent's for this run (a place "
        "agent's llm_config, seed 004)",
    )
    graph_task: GraphTaskLink | None = Field(
        default=None, description="the graph workflow node task this run is, if any"
    )
    principal: str | None = None
    parent_run_id: str | None = None
    parent_call: ParentCall | None = Field(
        default=None, description="the agent-to-agent call this run answers, if any"
    )
    root_run_id: str | None = Field(default=None, description="the run at the top of the tree")
    call_path: list[str] = Field(
        default_factory=list, description="the agents that called down to this run, root first"
    )
    call_depth: int = Field(default=0, ge=0, description="agent-to-agent calls above this run")
    root_agent_id: str | None = Field(
        default=None, description="the agent at the top of the tree: its daily cost cap counts"
    )
    token_budget: int | None = Field(
        default=None,
        ge=0,
        description="a call's share of the tree's token budget: what its caller had left",
    )
    conversation_id: str | None = Field(
        default=None, description="the conversation this run continues and appends to"
    )
    child_run_ids: list[str] = Field(default_factory=list)
    handoff_offer_id: str | None = None
    handoff_status: str | None = Field(
        default=None, description="what became of this run's offer: open, claimed, expired"
    )
    chain_depth: int = Field(default=0, ge=0)
    guardrails: GuardrailConfig | None = Field(
        default=None, description="this run's guardrails, replacing the agent's (seed 000)"
    )
    functions: dict[str, str] = Field(
        default_factory=dict,
        description="the stored functions among the agent's tools, pinned when the run started: "
        "tool name -> version hash (the versions every step offers and every call executes)",
    )
    agent_versions: dict[str, int] = Field(
        default_factory=dict,
        description="the agent's and its peers' definitions pinned when the run started: agent "
        "id -> version (every step uses these; an id not here is read at its latest)",
    )
    snapshot: SnapshotPointer | None = None
    traceparent: str | None = None
    deadline_at: datetime | None = Field(
        default=None, description="created_at + the agent's timeout_seconds: ERROR past it"
    )
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="before")
    @classmethod
    def _pending_tool_calls_are_pending_items(cls, data: Any) -> Any:
        """Version 1 documents (before typed waits) list ``pending_tool_calls`` (tool-call ids);
        read, they are version 2 (a release that knows only version 1 retries a version 2
        document rather than misread it)."""
        if isinstance(data, dict) and (
            "pending_tool_calls" in data or data.get("schema_version", 1) < 2
        ):
            data = dict(data)
            legacy = data.pop("pending_tool_calls", None) or []
            data.setdefault("pending", [{"kind": "tool_call", "id": i} for i in legacy])
            data["schema_version"] = 2
        if isinstance(data, dict) and data.get("schema_version", 1) == 2:
            data = {**data, "schema_version": 3}  # version 2 has no tree fields: their defaults
        if isinstance(data, dict) and data.get("schema_version", 1) == 3:
            data = {**data, "schema_version": 4}  # version 3 pinned nothing: no agent_versions
        if isinstance(data, dict) and data.get("schema_version", 1) == 4:
            data = {**data, "schema_version": 5}  # the layout of its stored steps: both read
        if isinstance(data, dict) and data.get("schema_version", 1) == 5:
            data = {**data, "schema_version": 6}  # its pointer and result events: both read
        return data

    @model_serializer(mode="wrap")
    def _omit_no_functions(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A run without stored functions is written exactly as before the field existed, so a
        # release that predates it (extra fields forbidden) still reads it during a rollout.
        data = handler(self)
        if not self.functions and isinstance(data, dict):
            data.pop("functions", None)
        if self.opening_error is None and isinstance(data, dict):
            data.pop("opening_error", None)
        if self.token_link is None and isinstance(data, dict):
            data.pop("token_link", None)
        if self.generation is None and isinstance(data, dict):
            data.pop("generation", None)
        if self.graph_task is None and isinstance(data, dict):
            data.pop("graph_task", None)
        return data

    @property
    def pending_tool_calls(self) -> list[str]:
        """The ids of the tool calls the run waits for."""
        return [p.id for p in self.pending if p.kind == "tool_call"]

    @property
    def finished(self) -> bool:
        return self.status is RunStatus.FINISHED


ToolCallStatus = Literal["pending", "running", "done"]


class ToolCallRecord(Persisted):
    """``agent_runs/{run_id}/tool_calls/{seq:06d}-{index:03d}``: one tool call of one step."""

    run_id: str
    seq: int
    index: int
    call: ToolCall
    status: ToolCallStatus = "pending"
    idempotency_key: str
    attempts: int = 0
    result: JsonValue = None
    result_uri: str | None = None
    is_error: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # While ``running``: until when the delivery that started it holds it. A later delivery
    # waits for the lease to pass before treating the call as interrupted.
    lease_until: datetime | None = None
    # A call refused by the tools-per-minute limit holds a slot in the window starting at
    # ``deferred_until`` and is delivered again then (``ToolInvoker``); ``rate_window`` numbers
    # that window.
    deferred_until: datetime | None = None
    rate_window: int | None = None
    # A gated call (``domain/approvals.py``): ``required`` until decided; the invoker runs a
    # call only when this is ``None`` or ``approved``.
    approval: Literal["required", "approved", "rejected", "expired"] | None = None
    # An agent-to-agent call: the child run that answers it (created once, id from the call).
    child_run_id: str | None = None
    child_agent_id: str | None = None

    @property
    def doc_id(self) -> str:
        return tool_call_doc_id(self.seq, self.index)

    @property
    def created_by_claim(self) -> bool:
        """A call as its step commits it, that nothing but its first claim will write: not
        gated, not a call to another agent, not refused, not deferred. Its document is created
        by that claim (run version 6: one write less per call); until then the step lists it
        (``adapters/firestore/steps.py``) and its dispatch message carries it."""
        return (
            self.status == "pending"
            and self.attempts == 0
            and self.approval is None
            and self.child_run_id is None
            and self.deferred_until is None
            and self.rate_window is None
        )

    def finished_with(
        self, result: JsonValue, is_error: bool, result_uri: str | None
    ) -> ToolCallRecord:
        """This call ``done`` with a result (the stores apply it only to a call not yet done)."""
        return self.model_copy(
            update={
                "status": "done",
                "result": result,
                "is_error": is_error,
                "result_uri": result_uri,
                "finished_at": utcnow(),
            }
        )


def snapshot_object_name(run_id: str, seq: int) -> str:
    """The Cloud Storage object of a run's context snapshot as of step ``seq``."""
    return f"runs/{run_id}/snapshots/{seq:06d}.json"


def tool_call_doc_id(seq: int, index: int) -> str:
    return f"{seq:06d}-{index:03d}"


class Interaction(Persisted):
    """``interactions/{run_id}-{seq:06d}``: one lightweight record per step (seed 000).
    Version 2: ``applied_model_call``, which a step commit used to write as a separate
    ``{"applied": true}`` on the call's own document (still read for runs written so)."""

    CURRENT_SCHEMA_VERSION: ClassVar[int] = 2
    schema_version: int = 2

    run_id: str
    agent_id: str
    seq: int
    decision: str
    total_tokens: int
    tool_calls: list[str] = Field(default_factory=list)
    applied_model_call: str | None = Field(
        default=None, description="the model call (attempt id) whose reply this step applied"
    )
    created_at: datetime = Field(default_factory=utcnow)


class ModelCallRecord(Persisted):
    """``agent_runs/{run_id}/model_calls/{id}``: every model call made, even if discarded."""

    run_id: str
    seq: int
    attempt_id: str
    model: str
    usage: Usage
    cost_usd: float
    applied: bool = False
    duration_ms: float | None = Field(
        default=None, description="the call's wall-clock time, retries included (seed 002)"
    )
    created_at: datetime = Field(default_factory=utcnow)


class DeadLetter(Persisted):
    """``dead_letters/{id}``: a message that can never be applied, kept with the reason."""

    id: str
    source: str = Field(description="subscription or route that received it")
    reason: str
    message_id: str | None = None
    run_id: str | None = Field(default=None, description="the run the message belonged to")
    data: str = Field(description="the original message body (base64 for Pub/Sub data)")
    attributes: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    expire_at: datetime = Field(
        default_factory=lambda: utcnow() + timedelta(days=30),
        description="Firestore TTL deletes the record after this",
    )
    replayed_at: datetime | None = None


class StepMessage(Persisted):
    """The body of a ``{ws}-steps`` message: apply step ``seq`` of ``run_id``."""

    run_id: str = Field(min_length=1, max_length=128)
    seq: int = Field(ge=0)


class ToolMessage(Persisted):
    """The body of a ``{ws}-tools`` message: execute one tool call of step ``seq``. ``call``:
    the call as its step committed it, for a call its first claim creates (``created_by_claim``)
    when it is small (``CARRIED_CALL_BYTES``): the invoker then reads no call before claiming."""

    run_id: str = Field(min_length=1, max_length=128)
    seq: int = Field(ge=0)
    index: int = Field(ge=0)
    call: ToolCallRecord | None = None

    @classmethod
    def of(cls, record: ToolCallRecord) -> ToolMessage:
        carried = record.created_by_claim and (len(record.model_dump_json()) <= CARRIED_CALL_BYTES)
        return cls(
            run_id=record.run_id,
            seq=record.seq,
            index=record.index,
            call=record if carried else None,
        )


# A dispatch message carries its call up to this size (the run document holds its outbox).
CARRIED_CALL_BYTES = 8_000


WakeClaim = Literal["claimed", "done", "held"]
"""What claiming a wake-up found: ``claimed`` (this delivery does the work), ``done`` (a
duplicate of one already handled), ``held`` (another delivery is handling it: retry later)."""
WAKE_HOLD_SECONDS = 60.0
"""A wake-up claimed and not finished for this long is taken over: its handler died between
the claim and scheduling the next wake-up, and the chain must not end with it."""


class WakeUp(Persisted):
    """The body of a wake-up task (``{ws}-wakeups`` queue, ``runtime/wakeups.py``).

    ``seq``: the step the run waited at when the wake-up was scheduled (``None``: the run's
    deadline, whatever step it is at). ``item``: a tool call (``{seq:06d}-{index:03d}``) deferred
    by the tools-per-minute limit, to be dispatched again. ``approval``: the expiry of an
    approval (``{seq:06d}-{index:03d}``). ``gen`` numbers the wake-ups of one
    wait: each is handled once (``RunStore.claim_wake``) and schedules the next, later one."""

    run_id: str = Field(min_length=1, max_length=128)
    seq: int | None = Field(default=None, ge=0)
    item: str | None = Field(default=None, max_length=64)
    at: datetime | None = None
    gen: int = Field(
        default=0, ge=0, le=1000, description="how many wake-ups of this wait came before"
    )
    approval: str | None = Field(
        default=None, max_length=64, description="an approval to expire at ``at`` if undecided"
    )
    step: Literal[True] | None = Field(
        default=None,
        description="step ``seq``, deferred by the shared LLM limits (LimitReached): apply it",
    )


class ToolAuditMessage(Persisted):
    """The body of a ``{ws}-tools-audit`` message: one tool call and how it ended."""

    run_id: str
    agent_id: str
    seq: int = Field(ge=0)
    index: int = Field(ge=0)
    tool: str
    idempotency_key: str | None = None
    is_error: bool
    attempts: int = Field(ge=0)


class SnapshotMessage(Persisted):
    """The body of a ``{ws}-snapshots`` message: snapshot ``run_id`` as of ``seq``, when it had
    ``message_count`` messages (the snapshotter then reads no run document; a message sent by a
    release before names neither, and the snapshotter reads the run)."""

    run_id: str = Field(min_length=1, max_length=128)
    seq: int = Field(ge=0)
    agent_id: str | None = None
    message_count: int | None = Field(default=None, ge=0)


class AuditRecord(Persisted):
    """``audit_log/{id}``: who did (or was refused) what, when."""

    id: str
    action: str = Field(description="e.g. 'POST /runs', 'push /pubsub/steps'")
    outcome: Literal["allowed", "denied", "unauthenticated"]
    status: int
    principal: str | None = None
    target: str | None = Field(default=None, description="the agent or run acted on")
    reason: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    expire_at: datetime = Field(default_factory=lambda: utcnow() + timedelta(days=90))
