"""What every participant of a distributed graph run shares: the documents, the dispatch of
node tasks, the advance of a superstep, liveness, and the execution of one node task.

``run_node_task`` is the one code path of a node task's delivery, whoever received it: a pull
worker (``DistributedWorker``, Pub/Sub streaming pull) or the graph worker service (a Cloud
Task, ``graphs/push.py``). It claims the task's lease on its document, runs the node function
and its router (``execution.run_task``) on the committed state, saves the result
first-write-wins, and tries the barrier (``Coordination.advance``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cloudagents.adapters.firestore.graphs import FirestoreGraphStore
from cloudagents.adapters.provisioning import ensure_pull_subscriptions
from cloudagents.adapters.pubsub import PubSubEventBus
from cloudagents.bootstrap import (
    close_firestore,
    firestore_client,
    publisher_client,
    subscriber_client,
    tasks_client,
)
from cloudagents.domain.errors import TransientError
from cloudagents.graphs.agents import IntentChildRuns, agent_node_function
from cloudagents.graphs.dispatch import NodeDispatch, node_dispatch
from cloudagents.graphs.documents import Priority, TaskMessage, WorkflowRunDocument
from cloudagents.graphs.errors import GraphError
from cloudagents.graphs.execution import run_task
from cloudagents.graphs.reducers import BUILTIN_REDUCERS, ReducerFunction
from cloudagents.graphs.registry import NodeRegistry
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.superstep import NodeTask, Superstep, TaskResult, advance, stop
from cloudagents.settings import Settings
from cloudagents.topology import (
    GRAPH_NODE_ACK_DEADLINE_SECONDS,
    graph_node_subscription,
    graph_node_topic,
)

log = logging.getLogger(__name__)

PROVISION_HINT = (
    "Node-type topics and their worker subscriptions are created on first use on the emulators; "
    "in a project, create them (gcloud pubsub topics create / subscriptions create, or Terraform "
    "with scripts/gen_terraform_topology.py --graph-pull-node-types) or pass provision=True to "
    "let this identity create them."
)


class Coordination:
    """The store, the node dispatch, the advance and the liveness pass of graph runs in one
    workspace, on this process's own clients (built by ``connect`` in the serving loop)."""

    def __init__(
        self,
        settings: Settings,
        *,
        provision: bool | None,
        dispatch_seconds: float,
        copies: int,
        registry: NodeRegistry | None,
        ensure_topics: bool = True,
    ) -> None:
        self.settings = settings
        self.project = settings.project
        self.workspace = settings.workspace
        self.provision = (
            bool(os.environ.get("PUBSUB_EMULATOR_HOST")) if provision is None else provision
        )
        self.dispatch_seconds = dispatch_seconds
        self.copies = copies
        self.registry = registry
        self.ensure_topics = ensure_topics
        """Check (or on the emulators create) a pull node type's topic and subscription before
        publishing on it; the graph worker service leaves it to Terraform in a project."""
        self.store: FirestoreGraphStore | None = None
        self.nodes: NodeDispatch | None = None
        self.publisher: Any = None
        self.subscriber: Any = None
        self.bus: PubSubEventBus | None = None
        self._db: Any = None
        self._ensured: set[tuple[str, str]] = set()
        self._children: IntentChildRuns | None = None

    async def connect(self) -> None:
        if self.store is not None:
            return
        self._db = firestore_client(self.project)
        self.store = FirestoreGraphStore(self._db)
        self.publisher = publisher_client()
        self.subscriber = subscriber_client()
        self.bus = PubSubEventBus(self.publisher, self.project)
        schedule = None
        if self.settings.graph_push_node_types:
            from cloudagents.adapters.cloud_tasks import CloudTasksQueue

            queue = CloudTasksQueue(
                tasks_client(),
                self.project,
                self.settings.location,
                self.settings.tasks_service_account,
            )
            schedule = queue.schedule
        self.nodes = node_dispatch(
            self.settings,
            self.bus.publish,
            schedule,
            wake_after=self.dispatch_seconds,
            copies=self.copies,
        )

    async def close(self) -> None:
        if self.store is None:
            return
        publisher, subscriber, db = self.publisher, self.subscriber, self._db
        self.store = self.bus = self.publisher = self.subscriber = self._db = None
        self.nodes = None
        self._children = None
        await asyncio.to_thread(publisher.stop)
        with contextlib.suppress(Exception):
            subscriber.close()
        await close_firestore(db)

    def need(self) -> FirestoreGraphStore:
        if self.store is None:
            raise RuntimeError("not connected: await connect() (or start()) first")
        return self.store

    def _nodes(self) -> NodeDispatch:
        if self.nodes is None:
            raise RuntimeError("not connected: await connect() (or start()) first")
        return self.nodes

    async def ensure(self, node_types: Iterable[str], bands: Iterable[str] = ("normal",)) -> None:
        """Each pull node type's topic and worker subscription exist in each band (before
        anything is published: a message on a topic without a subscription is lost).
        Push-dispatched node types travel on Cloud Tasks queues instead."""
        nodes = self._nodes()
        wanted = {(t, b) for t in node_types if not nodes.pushed(t) for b in bands}
        missing = sorted(wanted - self._ensured)
        if not missing or not self.ensure_topics:
            return
        pairs = [
            (
                graph_node_subscription(self.workspace, t, b),
                graph_node_topic(self.workspace, t, b),
            )
            for t, b in missing
        ]
        await asyncio.to_thread(
            ensure_pull_subscriptions,
            self.project,
            pairs,
            publisher=self.publisher,
            subscriber=self.subscriber,
            create=self.provision,
            hint=PROVISION_HINT,
            ack_deadline_seconds=GRAPH_NODE_ACK_DEADLINE_SECONDS,
        )
        self._ensured.update(missing)

    async def dispatch(
        self, workflow_id: str, priority: Priority, tasks: Iterable[NodeTask]
    ) -> None:
        """Send the tasks of a superstep being opened, in the run's band (``runs.Dispatch``):
        ``NodeDispatch`` chooses Pub/Sub or Cloud Tasks per node type."""
        tasks = list(tasks)
        await self.ensure((t.node_type for t in tasks), (priority,))
        await self._nodes()(workflow_id, priority, tasks)

    async def redispatch(self, workflow_id: str, priority: Priority, task: NodeTask) -> None:
        """Send one task again (its lease lapsed); the superstep's wake-ups are running."""
        await self.ensure([task.node_type], (priority,))
        await self._nodes().send(workflow_id, priority, [task])

    async def advance(
        self, workflow_id: str, step: int, run: WorkflowRunDocument | None = None
    ) -> Superstep | None:
        """Advance superstep ``step`` if all its results are saved; dispatch what comes next.
        ``run`` (as the caller read it, for its graph hash and priority) saves a read."""
        store = self.need()
        if run is None:
            run = await store.get_run(workflow_id)
            if run is None or run.status != "running" or run.step != step:
                return None
        graph = await store.get_graph(run.graph_hash)

        def plan(current: WorkflowRunDocument, results: list[TaskResult]) -> Superstep:
            try:
                return advance(
                    graph, current.checkpoint, results, custom_reducers(graph, self.registry)
                )
            except GraphError as error:  # e.g. a custom reducer this process does not have
                return stop(current.checkpoint, "failed", str(error))

        nxt = await store.advance(workflow_id, step, plan, dispatch_seconds=self.dispatch_seconds)
        if nxt is not None and nxt.status == "running":
            await self.dispatch(workflow_id, run.priority, nxt.pending)
        return nxt

    async def tend(self, run: WorkflowRunDocument) -> None:
        """One liveness pass over a running run's open superstep (the wake-up)."""
        store = self.need()
        pending = run.checkpoint.pending
        found = await store.tasks(run.workflow_id, [t.task_id for t in pending])
        if pending and all(found.get(t.task_id) and found[t.task_id].result for t in pending):
            await self.advance(run.workflow_id, run.step, run)
            return
        now = time.time()
        # The run's own dispatch timeout, not this tender's: a worker sweeping with its default
        # of 30 s must not push the next re-dispatch of a run started with 1 s out by 30 s.
        dispatch_seconds = (
            self.dispatch_seconds if run.dispatch_seconds is None else run.dispatch_seconds
        )
        for task in pending:
            doc = found.get(task.task_id)
            if doc is None or doc.result is not None or doc.lease_expires_at > now:
                continue
            if await store.redispatch(run.workflow_id, task.task_id, dispatch_seconds):
                log.info("re-dispatching %s/%s (lease expired)", run.workflow_id, task.task_id)
                await self.redispatch(run.workflow_id, run.priority, task)

    async def sweep(self) -> int:
        """``tend`` every running run of the workspace; returns how many were looked at."""
        runs = await self.need().list_runs(self.workspace, "running")
        for run in runs:
            try:
                await self.tend(run)
            except TransientError as error:  # one contended run does not stop the sweep
                log.warning("tending %s: %s", run.workflow_id, error)
        return len(runs)

    def child_runs(self) -> IntentChildRuns:
        """The run machinery agent nodes start their runs on: this process's Firestore client
        (runs and agents) and its publisher, to the workspace topic (intents)."""
        if self._children is None:
            from cloudagents.adapters.firestore.stores import (
                FirestoreAgentStore,
                FirestoreRunStore,
            )

            db, bus = self._db, self.bus
            assert db is not None and bus is not None

            async def publish(data: bytes) -> None:
                await bus.publish(self.workspace, data, {})

            self._children = IntentChildRuns(
                FirestoreRunStore(db), publish, agents=FirestoreAgentStore(db)
            )
        return self._children


def custom_reducers(
    graph: CompiledGraph, registry: NodeRegistry | None
) -> dict[str, ReducerFunction]:
    """The registered reducers a graph names (a missing one fails the run when it is needed)."""
    found: dict[str, ReducerFunction] = {}
    for name in set(graph.reducers.values()) - set(BUILTIN_REDUCERS):
        reducer = registry.get_reducer(name) if registry is not None else None
        if reducer is not None:
            found[name] = reducer
    return found


@dataclass
class NodeCallables:
    """What a node task runs with: node functions by node type and routers by name (given to
    the worker, else from ``registry``), agent nodes through ``child_runs``."""

    owner: str
    """Who runs tasks (a worker id, or the push delivery): named in errors and in leases."""
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    routers: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    registry: NodeRegistry | None = None

    def serves(self, node_type: str) -> bool:
        return node_type in self.functions or (
            self.registry is not None and node_type in self.registry
        )

    async def execute(
        self,
        graph: CompiledGraph,
        checkpoint: Superstep,
        task: NodeTask,
        child_runs: Callable[[], IntentChildRuns],
    ) -> TaskResult:
        """Run ``task``'s node function and router under its retry policy (``run_task``)."""
        func: Callable[..., Any] | None = None
        spec = graph.nodes[task.node]
        if spec.agent is not None:  # --- agent nodes (graphs/agents.py) ---
            func = agent_node_function(child_runs(), spec)
        func = func or self.functions.get(task.node_type)
        if func is None and self.registry is not None and task.node_type in self.registry:
            func = self.registry.get(task.node_type)
        if func is None:
            return self._failed(
                task, f"{self.owner} has no function for node type {task.node_type!r}"
            )
        router = None
        branch = graph.branches.get(task.node)
        if branch is not None:
            router = self.routers.get(branch.router)
            if router is None and self.registry is not None:
                router = self.registry.get_router(branch.router)
            if router is None:
                return self._failed(
                    task,
                    f"worker {self.owner} has no router {branch.router!r} for node "
                    f"{task.node!r}; register it with @worker.register_router",
                )
        return await run_task(
            graph,
            task,
            checkpoint.state,
            func,
            router,
            workflow_id=checkpoint.workflow_id,
            reducers=custom_reducers(graph, self.registry),
        )

    @staticmethod
    def _failed(task: NodeTask, error: str) -> TaskResult:
        return TaskResult(task_id=task.task_id, node=task.node, status="failed", error=error)


TaskOutcome = Literal["saved", "lost", "done", "held", "stale"]
"""What a delivery of a node task did: ran it and saved the result (``saved``), ran it but
another saved first (``lost``), found it finished (``done``; the advance is retried), held by
a live lease elsewhere (``held``), or no longer open (``stale``)."""


async def run_node_task(
    c: Coordination,
    message: TaskMessage,
    callables: NodeCallables,
    *,
    lease_seconds: float,
    owner: str | None = None,
    renew_every: float | None = None,
) -> TaskOutcome:
    """One delivery of a node task, for every kind of worker: claim the lease, run, save the
    result first-write-wins, try the barrier. ``renew_every`` renews the lease while the node
    runs (a pull worker's heartbeat renews the tasks it holds itself)."""
    store = c.need()
    who = owner or callables.owner
    wid, task = message.workflow_id, message.task
    claim = await store.claim(wid, task.task_id, who, lease_seconds)
    log.debug("%s: %s/%s %s", who, wid, task.task_id, claim.outcome)
    if claim.outcome == "done":
        # Harmless if already advanced; recovers an advance whose saver died.
        await c.advance(wid, task.step, claim.run)
        return "done"
    if claim.outcome != "claimed" or claim.run is None:
        return "held" if claim.outcome == "held" else "stale"
    graph = await store.get_graph(claim.run.graph_hash)
    async with _renewing(store, wid, task.task_id, who, lease_seconds, renew_every):
        result = await callables.execute(graph, claim.run.checkpoint, task, c.child_runs)
    saved = await store.save_result(wid, result, who)
    await c.advance(wid, task.step, claim.run)
    return "saved" if saved else "lost"


@contextlib.asynccontextmanager
async def _renewing(
    store: FirestoreGraphStore,
    workflow_id: str,
    task_id: str,
    owner: str,
    lease_seconds: float,
    every: float | None,
) -> AsyncIterator[None]:
    if every is None:
        yield
        return

    async def renew() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await store.renew(workflow_id, task_id, owner, lease_seconds)
            except Exception as error:  # a missed renewal is survivable; the lease says so
                log.warning("renewing %s/%s failed: %r", workflow_id, task_id, error)

    renewer = asyncio.create_task(renew(), name=f"renew-{workflow_id}-{task_id}")
    try:
        yield
    finally:
        renewer.cancel()
        await asyncio.gather(renewer, return_exceptions=True)
