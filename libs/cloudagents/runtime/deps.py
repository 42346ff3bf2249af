"""The dependencies every use case receives: ports, settings, topology, tools, model factory."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.approvals import ApprovalRecord
from cloudagents.domain.runs import OutboxMessage, WakeUp
from cloudagents.functions import FunctionStore
from cloudagents.ports.budgets import CostLedger, RateLimiter
from cloudagents.ports.bus import BlobStore, EventBus, TaskQueue
from cloudagents.ports.graphs import WorkflowStore
from cloudagents.ports.model import ModelClient
from cloudagents.ports.stores import (
    AgentStore,
    AuditStore,
    DeadLetterStore,
    HandoffStore,
    RunStore,
)
from cloudagents.ports.transitions import TransitionStore
from cloudagents.settings import Settings
from cloudagents.telemetry import current_traceparent
from cloudagents.tools import ToolRegistry
from cloudagents.topology import Topology

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
ModelFactory = Callable[[AgentDefinition, str], ModelClient]
"""The model client for a step of ``agent`` in the run named by the second argument."""
ModelLimiter = Callable[[ModelClient, AgentDefinition, Clock], ModelClient]
"""Wraps a step's model call (retries included) in the shared LLM limits (``LimitedModel``)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    """What the services' use cases need; built once per process by ``bootstrap``."""

    settings: Settings
    topology: Topology
    runs: RunStore
    agents: AgentStore
    dead_letters: DeadLetterStore
    handoffs: HandoffStore
    audit: AuditStore
    bus: EventBus
    blobs: BlobStore
    tasks: TaskQueue
    cost_ledger: CostLedger
    rate_limiter: RateLimiter
    tools: ToolRegistry
    functions: FunctionStore
    """Stored functions (seed 002): agents name them among their tools (``runtime/toolbox.py``)."""
    transitions: TransitionStore
    """Seed 004's workflows, tokens and agent executions (``runtime/transitions.py``)."""
    model_factory: ModelFactory
    clock: Clock = field(default=_utcnow)
    limit_model: ModelLimiter | None = None
    """Seed 004's shared LLM limits around each step's model call, when configured: a refused
    call (``LimitReached``) defers the step by its ``retry_after`` (``runtime/executor.py``)."""
    on_approval: Callable[[ApprovalRecord], Awaitable[None]] | None = None
    """Told of each approval a committed step requested (the in-process approval callback);
    the services leave it unset: people decide through the api and the CLI."""
    workflows: WorkflowStore | None = None
    """Graph workflows (seed 001) for the api's ``/workflows`` routes; None where unused."""

    async def publish(self, messages: list[OutboxMessage]) -> None:
        """Publish an outbox, in order, carrying the current trace context. A ``wakeups``
        message is not published: it schedules a wake-up task (``schedule_wake``)."""
        traceparent = current_traceparent()
        for message in messages:
            if message.topic == "wakeups":
                await self.schedule_wake(WakeUp.model_validate(message.data))
                continue
            attributes = dict(message.attributes)
            if traceparent:
                attributes.setdefault("traceparent", traceparent)
            data = json.dumps(message.data, separators=(",", ":")).encode()
            await self.bus.publish(self.topology.topic(message.topic), data, attributes)

    async def schedule_wake(self, wake: WakeUp) -> None:
        """A Cloud Task that POSTs ``wake`` to the run executor's ``/tasks/wake`` at ``wake.at``.

        The task is named after its content, so production Cloud Tasks drops a duplicate (an
        outbox re-published by a redelivery); the emulator does not, and a duplicate wake-up is
        harmless by construction (see ``runtime/wakeups.py``)."""
        if not self.settings.wake_url:
            log.warning("CLOUDAGENTS_WAKE_URL is not set: no wake-up for run %s", wake.run_id)
            return
        at = wake.at or self.clock()
        body = wake.model_dump_json(exclude_none=True).encode()
        name = "wake-" + hashlib.sha256(body).hexdigest()[:40]
        queue = self.topology.wake_queue
        url = self.settings.wake_url.rstrip("/") + queue.path
        await self.tasks.schedule(queue.name, url, body, at, name=name)
