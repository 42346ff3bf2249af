"""The composition root, and the only place SDK clients are built (ruff's TID251 keeps
``google.cloud``, ``google.api_core``, ``openai`` and ``anthropic`` out of every other module but
the adapters).

``get_deps()`` builds, once per process and inside the running event loop, the adapters the
settings ask for (the Google Cloud clients for ``gcp``, in-memory fakes for ``memory``) and the
tool registry from ``CLOUDAGENTS_TOOL_MODULES``. ``build_local_deps`` and ``build_sdk_deps``
build the ``Deps`` of in-process runs (``Agent.run``: memory adapters; ``DistributedAgent.run``:
Firestore and GCS), whose bus and task queue are an ``InProcessDispatcher``. On the emulators
the clients find ``FIRESTORE_EMULATOR_HOST``, ``PUBSUB_EMULATOR_HOST`` and
``STORAGE_EMULATOR_HOST`` themselves; Cloud Tasks has no such variable in its client, so
``CLOUD_TASKS_EMULATOR_HOST`` selects an insecure gRPC channel here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudagents.adapters.llm.factory import build_model_client
from cloudagents.adapters.llm.limited import LimitedModel
from cloudagents.adapters.memory.budgets import (
    InMemoryConcurrencyLimiter,
    InMemoryCostLedger,
    InMemoryRateLimiter,
)
from cloudagents.adapters.memory.graphs import InMemoryWorkflowStore
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
from cloudagents.adapters.memory.transitions import InMemoryTransitionStore
from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.errors import ConfigurationError
from cloudagents.engine.step import reservation_hold_seconds
from cloudagents.functions import FunctionRepository, FunctionStore, InMemoryFunctionRepository
from cloudagents.ports.budgets import ConcurrencyLimiter, CostLedger, RateLimiter
from cloudagents.ports.bus import EventBus
from cloudagents.ports.graphs import WorkflowStore
from cloudagents.ports.model import ModelClient
from cloudagents.ports.transitions import TransitionStore
from cloudagents.runtime.deps import Deps, ModelFactory, ModelLimiter
from cloudagents.runtime.dispatcher import InProcessDispatcher
from cloudagents.settings import Settings
from cloudagents.telemetry import configure
from cloudagents.tools import Tool, ToolRegistry
from cloudagents.topology import Topology, build_topology

log = logging.getLogger(__name__)
_deps: Deps | None = None
_lock = asyncio.Lock()
# The services that execute stored functions (the tool path, and the api's execute-for-testing)
# run the sandbox's canary when they build their dependencies, so its verdict is logged early.
SANDBOX_SERVICES = frozenset({"tool_invoker", "api"})


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


TERRAFORM_HINT = (
    "Topics and the bucket are created by Terraform (terraform/environments/*, generated from "
    "cloudagents.topology); apply it for this project and workspace, or set "
    "PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST to run against the local emulators, where "
    "they are created on first use."
)


def default_model_factory(agent: AgentDefinition, run_id: str) -> ModelClient:
    """The provider client an agent's ``model`` names (``adapters/llm``)."""
    return build_model_client(agent.model)


# Google Cloud clients -----------------------------------------------------------------------


def firestore_client(project: str) -> Any:
    from google.cloud import firestore

    return firestore.AsyncClient(project=project)


def publisher_client(*, low_latency: bool = True) -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    if not low_latency:
        return pubsub_v1.PublisherClient()
    # Flush quickly: a step's messages are few and latency matters more than batching.
    batch = pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.005)
    return pubsub_v1.PublisherClient(batch_settings=batch)


def subscriber_client() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    return pubsub_v1.SubscriberClient()


def storage_client(project: str) -> Any:
    from google.cloud import storage  # type: ignore[attr-defined]

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client(project=project)


def tasks_client() -> Any:
    from google.cloud import tasks_v2

    emulator = os.environ.get("CLOUD_TASKS_EMULATOR_HOST")
    if emulator:
        import grpc
        from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

        channel = grpc.insecure_channel(emulator)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    return tasks_v2.CloudTasksClient()


class _OnFirstUse:
    """An adapter built the first time it is used, so a service imports and builds only the
    client libraries it touches (cold start: the context snapshotter never loads Pub/Sub or
    Cloud Tasks, the handoff broker never loads Cloud Storage). Built inside the event loop of
    that first use, which is the serving loop: where an async client must be built."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._built: Any = None

    def _target(self) -> Any:
        if self._built is None:
            self._built = self._build()
        return self._built

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


def _once(build: Callable[[], Any]) -> Callable[[], Any]:
    """``build``, called at most once (one SDK client shared by the adapters that use it)."""
    built: list[Any] = []

    def get() -> Any:
        if not built:
            built.append(build())
        return built[0]

    return get


def build_gcp_deps(settings: Settings, topology: Topology, tools: ToolRegistry) -> Deps:
    """The Firestore, Pub/Sub, Cloud Storage and Cloud Tasks adapters, each built (with its
    client) on first use (``_OnFirstUse``)."""

    def firestore_adapters() -> Any:
        from cloudagents.adapters.firestore import budgets, stores

        return stores, budgets

    db = _once(lambda: firestore_client(settings.project))

    def gcs() -> Any:
        from cloudagents.adapters.gcs import GcsBlobStore

        return GcsBlobStore(storage_client(settings.project))

    def bus() -> Any:
        from cloudagents.adapters.pubsub import PubSubEventBus

        return PubSubEventBus(publisher_client(), settings.project)

    def tasks() -> Any:
        from cloudagents.adapters.cloud_tasks import CloudTasksQueue

        return CloudTasksQueue(
            tasks_client(), settings.project, settings.location, settings.tasks_service_account
        )

    def store(name: str) -> Any:
        return _OnFirstUse(lambda: getattr(firestore_adapters()[0], name)(db()))

    def ledger(name: str) -> Any:
        return _OnFirstUse(lambda: getattr(firestore_adapters()[1], name)(db()))

    rate_limiter = ledger("FirestoreRateLimiter")

    blobs: Any = _OnFirstUse(gcs)
    functions: Any = _OnFirstUse(lambda: _firestore_functions(db(), blobs, topology.context_bucket))
    return Deps(
        settings=settings,
        topology=topology,
        runs=store("FirestoreRunStore"),
        agents=store("FirestoreAgentStore"),
        dead_letters=store("FirestoreDeadLetterStore"),
        handoffs=store("FirestoreHandoffStore"),
        audit=store("FirestoreAuditStore"),
        bus=_OnFirstUse(bus),
        blobs=blobs,
        tasks=_OnFirstUse(tasks),
        cost_ledger=ledger("FirestoreCostLedger"),
        rate_limiter=rate_limiter,
        tools=tools,
        functions=FunctionStore(functions),
        transitions=_OnFirstUse(lambda: _firestore_transitions(db())),
        model_factory=default_model_factory,
        limit_model=shared_llm_limits(
            settings, rate_limiter, ledger("FirestoreConcurrencyLimiter")
        ),
        workflows=_OnFirstUse(lambda: _firestore_workflows(db())),
    )


def _firestore_workflows(db: Any) -> WorkflowStore:
    from cloudagents.adapters.firestore.graphs import FirestoreGraphStore

    return FirestoreGraphStore(db)


def _firestore_functions(db: Any, blobs: Any, bucket: str) -> FunctionRepository:
    from cloudagents.adapters.firestore.functions import FirestoreFunctionRepository

    return FirestoreFunctionRepository(db, blobs, bucket)


def shared_llm_limits(
    settings: Settings, rate_limiter: RateLimiter, concurrency: ConcurrencyLimiter
) -> ModelLimiter | None:
    """Seed 004's ``RATE_LIMIT_PER_MINUTE`` and ``MAX_CONCURRENT_EXECUTIONS`` around each step's
    model call (``LimitedModel``, outside the retries; the slot is leased for the whole call);
    None when neither is set."""
    if settings.rate_limit_per_minute is None and settings.max_concurrent_executions is None:
        return None

    def limit(
        model: ModelClient, agent: AgentDefinition, clock: Callable[[], datetime]
    ) -> ModelClient:
        return LimitedModel(
            model,
            rate_limiter=rate_limiter,
            calls_per_minute=settings.rate_limit_per_minute,
            concurrency=concurrency,
            max_concurrent=settings.max_concurrent_executions,
            lease_seconds=reservation_hold_seconds(agent),
            clock=clock,
        )

    return limit


def _firestore_transitions(db: Any) -> TransitionStore:
    from cloudagents.adapters.firestore.transitions import FirestoreTransitionStore

    return FirestoreTransitionStore(db)


def function_repository(project: str, bucket: str | None = None) -> FunctionRepository:
    """Seed 002's ``session`` for ``FunctionStore(session)``: stored functions in Firestore
    (large code in ``bucket``, by default the project's context bucket) of ``project``, over
    clients built here, in the running event loop."""
    from cloudagents.adapters.gcs import GcsBlobStore

    blobs = GcsBlobStore(storage_client(project))
    if bucket is None:
        bucket = build_topology(project, "functions", check_names=False).context_bucket
    return _firestore_functions(firestore_client(project), blobs, bucket)


def provision_emulators(topology: Topology, service_urls: Mapping[str, str]) -> None:
    """Create the topology's topics, subscriptions and buckets on the emulators the environment
    points at (the local stack; idempotent)."""
    from cloudagents.adapters.provisioning import create_topology

    create_topology(
        topology,
        service_urls,
        publisher=publisher_client(low_latency=False),
        subscriber=subscriber_client(),
        storage=storage_client(topology.project),
    )


def publish_message(project: str, topic: str, data: bytes, *, timeout: float = 30.0) -> str:
    """Publish one message and wait for its id (the CLI's ``run --via pubsub``)."""
    publisher = publisher_client(low_latency=False)
    future = publisher.publish(publisher.topic_path(project, topic), data)
    return str(future.result(timeout=timeout))


async def close_firestore(db: Any) -> None:
    """Close an async Firestore client's channel (in the event loop it was built in)."""
    with contextlib.suppress(Exception):
        closing = db._firestore_api.transport.close()
        if inspect.isawaitable(closing):
            await closing


# Dependencies ---------------------------------------------------------------------------------


def build_deps(settings: Settings) -> Deps:
    """Adapters for ``settings.backend``; call inside the event loop that will use them."""
    topology = build_topology(
        settings.project,
        settings.workspace,
        settings.location,
        graph_push_node_types=settings.graph_push_node_types,
    )
    tools = load_tools(settings.tool_modules)
    if settings.backend == "memory":
        runs = InMemoryRunStore()
        rate_limiter = InMemoryRateLimiter()
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
            rate_limiter=rate_limiter,
            tools=tools,
            functions=FunctionStore(InMemoryFunctionRepository()),
            transitions=InMemoryTransitionStore(),
            model_factory=default_model_factory,
            limit_model=shared_llm_limits(settings, rate_limiter, InMemoryConcurrencyLimiter()),
            workflows=InMemoryWorkflowStore(),
        )
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
    functions: FunctionStore | None = None,
) -> Deps:
    """In-memory adapters for ``Agent.run``; messages and wake-ups go through ``dispatcher``.
    ``functions``: the stored functions its agents may name (by default an empty, in-memory
    store)."""
    runs = InMemoryRunStore()
    rate_limiter = rate_limiter or InMemoryRateLimiter()
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
        rate_limiter=rate_limiter,
        tools=tools,
        functions=functions or FunctionStore(InMemoryFunctionRepository()),
        transitions=InMemoryTransitionStore(),
        model_factory=model_factory,
        clock=clock,
        # The same rule as the services' (each step's model call, in the executor); the
        # limiters are this process's (pass a shared ``rate_limiter`` to share the minute).
        limit_model=shared_llm_limits(settings, rate_limiter, InMemoryConcurrencyLimiter()),
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
        from cloudagents.adapters.provisioning import ensure_resources

        ensure_resources(
            self.project,
            topics,
            bucket,
            publisher=self.publisher,
            storage=self.storage,
            create_topics=bool(os.environ.get("PUBSUB_EMULATOR_HOST")),
            create_bucket=bool(os.environ.get("STORAGE_EMULATOR_HOST")),
            hint=TERRAFORM_HINT,
        )

    async def aclose(self) -> None:
        """Flush what the publisher holds and release both clients."""
        await asyncio.to_thread(self.publisher.stop)
        with contextlib.suppress(Exception):
            self.storage.close()


def sdk_clients(project: str) -> SdkClients:
    """Build the clients of a ``DistributedAgent`` for ``project``."""
    from cloudagents.adapters.pubsub import PubSubEventBus

    publisher = publisher_client()
    storage = storage_client(project)
    return SdkClients(project, publisher, storage, PubSubEventBus(publisher, project))


async def close_sdk_deps(deps: Deps) -> None:
    """Close the Firestore client ``build_sdk_deps`` built (in the loop it was built in)."""
    await close_firestore(getattr(deps.runs, "client", None))


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
    from cloudagents.adapters.firestore.budgets import (
        FirestoreConcurrencyLimiter,
        FirestoreCostLedger,
        FirestoreRateLimiter,
    )
    from cloudagents.adapters.firestore.stores import (
        FirestoreAuditStore,
        FirestoreDeadLetterStore,
        FirestoreHandoffStore,
        FirestoreRunStore,
    )
    from cloudagents.adapters.gcs import GcsBlobStore

    db = firestore_client(settings.project)
    topology = build_topology(
        settings.project, settings.workspace, settings.location, check_names=False
    )
    blobs = GcsBlobStore(clients.storage)
    rate_limiter = FirestoreRateLimiter(db)
    return Deps(
        settings=settings,
        topology=topology,
        runs=FirestoreRunStore(db),
        agents=InMemoryAgentStore(),
        dead_letters=FirestoreDeadLetterStore(db),
        handoffs=FirestoreHandoffStore(db),
        audit=FirestoreAuditStore(db),
        bus=dispatcher,
        blobs=blobs,
        tasks=dispatcher,
        cost_ledger=FirestoreCostLedger(db),
        rate_limiter=rate_limiter,
        tools=tools,
        functions=FunctionStore(_firestore_functions(db, blobs, topology.context_bucket)),
        transitions=_firestore_transitions(db),
        model_factory=model_factory,
        # Shared with the services of the project: the same Firestore limiter documents.
        limit_model=shared_llm_limits(settings, rate_limiter, FirestoreConcurrencyLimiter(db)),
    )


async def get_deps(service_name: str = "cloudagents") -> Deps:
    """The process's dependencies, built on first use."""
    global _deps
    if _deps is None:
        async with _lock:
            if _deps is None:
                settings = Settings.from_env(service_name=service_name)
                configure(settings.service_name, settings.trace_exporter, settings.project)
                deps = build_deps(settings)
                if service_name in SANDBOX_SERVICES:
                    status = await deps.functions.sandbox.check()
                    log.log(
                        logging.INFO if status.available else logging.WARNING,
                        "function sandbox %s",
                        "available" if status.available else f"unavailable: {status.reason}",
                        extra={"fields": {"sandbox": status.model_dump(mode="json")}},
                    )
                _deps = deps
    return _deps


def reset_deps() -> None:
    """Forget the built dependencies (tests that change the environment)."""
    global _deps
    _deps = None
