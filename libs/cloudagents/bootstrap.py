"""The only place SDK clients are built: once per process, inside the running event loop.

``get_deps()`` builds the adapters the settings ask for (the Google Cloud clients for ``gcp``,
in-memory fakes for ``memory``) and the tool registry from ``CLOUDAGENTS_TOOL_MODULES``.
``build_local_deps`` and ``build_sdk_deps`` build the ``Deps`` of in-process runs
(``Agent.run``: memory adapters; ``DistributedAgent.run``: Firestore and GCS), whose bus and
task queue are an ``InProcessDispatcher``.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudagents.adapters.memory.budgets import InMemoryCostLedger, InMemoryRateLimiter
from cloudagents.adapters.memory.messaging import (
    InMemoryBlobStore,
    InMemoryEventBus,
    InMemoryTaskQueue,
)
from cloudagents.adapters.memory.stores import (
    InMemoryAgentStore,
    InMemoryAuditStore,
    InMemoryDeadLetterStore,
    InMemoryHandoffStore,
    InMemoryRunStore,
)
from cloudagents.domain.errors import ConfigurationError
from cloudagents.ports.budgets import CostLedger, RateLimiter
from cloudagents.ports.bus import EventBus
from cloudagents.runtime.deps import Deps, ModelFactory
from cloudagents.runtime.dispatcher import InProcessDispatcher
from cloudagents.settings import Settings
from cloudagents.telemetry import configure
from cloudagents.tools import Tool, ToolRegistry
from cloudagents.topology import build_topology

_deps: Deps | None = None
_lock = asyncio.Lock()


def load_tools(modules: tuple[str, ...]) -> ToolRegistry:
    """Every module-level ``Tool`` (and tuple/list of tools) in the named modules."""
    registry = ToolRegistry()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"tool module {name!r} cannot be imported: {exc}") from exc
        for value in vars(module).values():
            items = value if isinstance(value, tuple | list) else (value,)
            for item in items:
                if isinstance(item, Tool):
                    registry.register(item)
    return registry


def build_deps(settings: Settings) -> Deps:
    """Adapters for ``settings.backend``; call inside the event loop that will use them."""
    topology = build_topology(settings.project, settings.workspace, settings.location)
    tools = load_tools(settings.tool_modules)
    if settings.backend == "memory":
        runs = InMemoryRunStore()
        return Deps(
            settings=settings,
            topology=topology,
            runs=runs,
            handoffs=InMemoryHandoffStore(runs),
            audit=InMemoryAuditStore(),
            agents=InMemoryAgentStore(),
            dead_letters=InMemoryDeadLetterStore(),
            bus=InMemoryEventBus(),
            blobs=InMemoryBlobStore(),
            tasks=InMemoryTaskQueue(),
            cost_ledger=InMemoryCostLedger(),
            rate_limiter=InMemoryRateLimiter(),
            tools=tools,
        )
    from cloudagents.adapters.gcp_clients import build_gcp_deps

    return build_gcp_deps(settings, topology, tools)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def build_local_deps(
    settings: Settings,
    dispatcher: InProcessDispatcher,
    *,
    tools: ToolRegistry,
    model_factory: ModelFactory,
    cost_ledger: CostLedger | None = None,
    rate_limiter: RateLimiter | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> Deps:
    """In-memory adapters for ``Agent.run``; messages and wake-ups go through ``dispatcher``."""
    runs = InMemoryRunStore()
    return Deps(
        settings=settings,
        topology=build_topology(settings.project, settings.workspace, settings.location),
        runs=runs,
        handoffs=InMemoryHandoffStore(runs),
        audit=InMemoryAuditStore(),
        agents=InMemoryAgentStore(),
        dead_letters=InMemoryDeadLetterStore(),
        bus=dispatcher,
        blobs=InMemoryBlobStore(),
        tasks=dispatcher,
        cost_ledger=cost_ledger or InMemoryCostLedger(clock=clock),
        rate_limiter=rate_limiter or InMemoryRateLimiter(),
        tools=tools,
        model_factory=model_factory,
        clock=clock,
    )


@dataclass
class SdkClients:
    """The Pub/Sub and Cloud Storage clients of one ``DistributedAgent`` (not bound to an event
    loop, unlike the Firestore client ``build_sdk_deps`` builds), and the Pub/Sub bus over the
    publisher: where a run's handoff offers and tool audit records leave the process."""

    project: str
    publisher: Any
    storage: Any
    outward: EventBus

    def ensure_resources(self, topics: tuple[str, ...], bucket: str) -> None:
        """The topics and the bucket exist: created on the emulators, else a clear error."""
        from cloudagents.adapters import gcp_clients

        gcp_clients.ensure_resources(self.publisher, self.storage, self.project, topics, bucket)

    async def aclose(self) -> None:
        """Flush what the publisher holds and release both clients."""
        from cloudagents.adapters import gcp_clients

        await gcp_clients.close_clients(self.publisher, self.storage)


def sdk_clients(project: str) -> SdkClients:
    """Build the clients of a ``DistributedAgent`` for ``project``."""
    from cloudagents.adapters import gcp_clients
    from cloudagents.adapters.pubsub import PubSubEventBus

    publisher = gcp_clients.publisher_client()
    storage = gcp_clients.storage_client(project)
    return SdkClients(project, publisher, storage, PubSubEventBus(publisher, project))


async def close_sdk_deps(deps: Deps) -> None:
    """Close the Firestore client ``build_sdk_deps`` built (in the loop it was built in)."""
    from cloudagents.adapters import gcp_clients

    await gcp_clients.close_firestore(getattr(deps.runs, "client", None))


def build_sdk_deps(
    settings: Settings,
    dispatcher: InProcessDispatcher,
    *,
    clients: SdkClients,
    tools: ToolRegistry,
    model_factory: ModelFactory,
) -> Deps:
    """Firestore and GCS adapters for ``DistributedAgent.run``, on a Firestore client built here,
    in the running loop, which its gRPC channel is bound to (``close_sdk_deps`` closes it).
    Agent definitions stay in process: the services' broker offers SDK agents no handoffs."""
    from cloudagents.adapters import gcp_clients
    from cloudagents.adapters.firestore.budgets import FirestoreCostLedger, FirestoreRateLimiter
    from cloudagents.adapters.firestore.stores import (
        FirestoreAuditStore,
        FirestoreDeadLetterStore,
        FirestoreHandoffStore,
        FirestoreRunStore,
    )
    from cloudagents.adapters.gcs import GcsBlobStore

    db = gcp_clients.firestore_client(settings.project)
    return Deps(
        settings=settings,
        topology=build_topology(
            settings.project, settings.workspace, settings.location, check_names=False
        ),
        runs=FirestoreRunStore(db),
        agents=InMemoryAgentStore(),
        dead_letters=FirestoreDeadLetterStore(db),
        handoffs=FirestoreHandoffStore(db),
        audit=FirestoreAuditStore(db),
        bus=dispatcher,
        blobs=GcsBlobStore(clients.storage),
        tasks=dispatcher,
        cost_ledger=FirestoreCostLedger(db),
        rate_limiter=FirestoreRateLimiter(db),
        tools=tools,
        model_factory=model_factory,
    )


async def get_deps(service_name: str = "cloudagents") -> Deps:
    """The process's dependencies, built on first use."""
    global _deps
    if _deps is None:
        async with _lock:
            if _deps is None:
                settings = Settings.from_env(service_name=service_name)
                configure(settings.service_name, settings.trace_exporter, settings.project)
                _deps = build_deps(settings)
    return _deps


def reset_deps() -> None:
    """Forget the built dependencies (tests that change the environment)."""
    global _deps
    _deps = None
