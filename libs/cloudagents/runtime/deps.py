"""The dependencies every use case receives: ports, settings, topology, tools, model factory."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cloudagents.adapters.llm.factory import build_model_client
from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.runs import OutboxMessage
from cloudagents.ports.budgets import CostLedger, RateLimiter
from cloudagents.ports.bus import BlobStore, EventBus, TaskQueue
from cloudagents.ports.model import ModelClient
from cloudagents.ports.stores import (
    AgentStore,
    AuditStore,
    DeadLetterStore,
    HandoffStore,
    RunStore,
)
from cloudagents.settings import Settings
from cloudagents.telemetry import current_traceparent
from cloudagents.tools import ToolRegistry
from cloudagents.topology import Topology

Clock = Callable[[], datetime]
ModelFactory = Callable[[AgentDefinition], ModelClient]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def default_model_factory(agent: AgentDefinition) -> ModelClient:
    return build_model_client(agent.model)


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
    model_factory: ModelFactory = default_model_factory
    clock: Clock = field(default=_utcnow)

    async def publish(self, messages: list[OutboxMessage]) -> None:
        """Publish an outbox, in order, carrying the current trace context."""
        traceparent = current_traceparent()
        for message in messages:
            attributes = dict(message.attributes)
            if traceparent:
                attributes.setdefault("traceparent", traceparent)
            data = json.dumps(message.data, separators=(",", ":")).encode()
            await self.bus.publish(self.topology.topic(message.topic), data, attributes)
