"""Graph workflows across machines (seed 001's ``distributed_agents.distributed``), on GCP.

``DistributedOrchestrator(project_id=..., workspace=...)`` takes the place of the seed's
``redis_url``; ``DistributedWorker(worker_id, node_types, capacity, heartbeat_interval)`` serves
node types from any machine. Coordination is Firestore and Pub/Sub
(``adapters/firestore/graphs.py`` names the documents):

1. ``execute`` stores the compiled graph under its SHA-256 (immutable) and creates the
   workflow run pinned to that hash, with the checkpoint of superstep 0 and one task document
   per pending node task, in one batch; then publishes each task on its node type's topic.
2. A worker pulls (streaming pull, flow control = capacity), takes the task's lease on its
   document (renewed every ``heartbeat_interval``), runs the node function and its router
   (``execution.run_task``, as in process) on the committed state, and saves the
   ``TaskResult`` on the task document, first write wins. A duplicate delivery finds the
   result (or a live lease) and only acknowledges.
3. Whoever saves a superstep's last result advances the run: the pure planner
   (``superstep.advance``) folds the results, and the next checkpoint, its copy under
   ``checkpoints/`` and the next task documents are written in one batch conditioned on the run
   document as read (so on ``step``): of concurrent advancers exactly one commits. Then the new
   tasks are published.
4. The orchestrator's wait loop is the wake-up: a task without a result whose lease (or
   first dispatch) expired is dispatched again, and a superstep whose results are all saved
   but not advanced (its last saver died) is advanced. A node function can therefore run more
   than once after a crash; its result is applied exactly once.

``cancel_workflow`` ends the run at its last barrier commit (the superstep in flight is
discarded; its pending tasks stay in the checkpoint). ``resume_workflow`` continues a stopped
run from there and ``fork_workflow`` starts a new run from any step's checkpoint
(``graphs/runs.py``, shared with the api). Tasks travel in the run's priority band.

Node types listed in ``CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES`` go as Cloud Tasks to the graph worker
service instead (``graphs/dispatch.py`` chooses, ``graphs/push.py`` serves them, with a wake-up
at lease expiry per superstep); a delivery runs ``coordination.run_node_task`` either way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

from cloudagents.adapters.firestore.graphs import FirestoreGraphStore
from cloudagents.adapters.pubsub.pull import StreamingPull
from cloudagents.domain.errors import ConfigurationError, TransientError
from cloudagents.graphs.coordination import (
    Coordination,
    NodeCallables,
    custom_reducers,
    run_node_task,
)
from cloudagents.graphs.documents import (
    PRIORITY_BANDS,
    NodeWorkerDocument,
    Priority,
    TaskMessage,
    WorkflowRunDocument,
)
from cloudagents.graphs.errors import (
    GraphError,
    StepLimitReached,
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
)
from cloudagents.graphs.graph import Graph
from cloudagents.graphs.orchestrator import WorkflowStatus
from cloudagents.graphs.registry import NodeRegistry
from cloudagents.graphs.runs import (
    fork_workflow_run,
    resume_workflow_run,
    start_workflow_run,
)
from cloudagents.graphs.spec import AGENT_NODE_TYPE, CompiledGraph
from cloudagents.graphs.state import State
from cloudagents.graphs.superstep import DEFAULT_MAX_STEPS, RunStatus, Superstep, stop
from cloudagents.graphs.worker import NodeFunctions
from cloudagents.settings import Settings
from cloudagents.topology import graph_node_subscription

__all__ = [
    "Coordination",
    "DistributedOrchestrator",
    "DistributedWorker",
    "NodeWorkerDocument",
    "WorkflowStatus",
    "custom_reducers",
]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

_ERRORS: dict[str, type[WorkflowError]] = {
    "failed": WorkflowFailed,
    "cancelled": WorkflowCancelled,
    "step_limit": StepLimitReached,
}


def _settings(project_id: str | None, workspace: str | None) -> Settings:
    """The settings of the environment (``CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES`` among them),
    with the project and workspace given as arguments over theirs."""
    if project_id is None and not (
        os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
    ):
        raise ConfigurationError(
            "pass project_id=... or set GOOGLE_CLOUD_PROJECT to the project to coordinate in"
        )
    env = dict(os.environ)
    if project_id is not None:
        env["GOOGLE_CLOUD_PROJECT"] = project_id
    settings = Settings.from_env(env)
    return dataclasses.replace(settings, workspace=workspace or settings.workspace)


def _no_redis(redis_url: str | None) -> None:
    if redis_url is not None:
        raise TypeError(
            "cloudagents coordinates on Firestore and Pub/Sub, not Redis: pass project_id=... "
            "and workspace=... instead of redis_url"
        )


def _status(run: WorkflowRunDocument, done: Iterable[str] = ()) -> WorkflowStatus:
    finished = set(done)
    pending = [t.node for t in run.checkpoint.pending]
    return WorkflowStatus(
        workflow_id=run.workflow_id,
        graph_name=run.graph_name,
        graph_hash=run.graph_hash,
        status=run.checkpoint.status,
        step=run.step,
        nodes_done=sorted(n for n in pending if n in finished) if run.status == "running" else [],
        nodes_pending=[n for n in pending if n not in finished],
        error=run.checkpoint.error,
    )


class DistributedOrchestrator:
    """Seed 001's distributed orchestrator: runs graphs whose nodes run on ``DistributedWorker``s.

    ``project_id`` / ``workspace`` default to ``GOOGLE_CLOUD_PROJECT`` / ``CLOUDAGENTS_WORKSPACE``
    (as every cloudagents process); on the emulators (``FIRESTORE_EMULATOR_HOST``,
    ``PUBSUB_EMULATOR_HOST``) the node-type topics are created on first use. ``registry``
    supplies custom reducers; node functions live on the workers. ``copies`` publishes every
    task that many times (fault testing: every delivery duplicated).
    """

    def __init__(
        self,
        project_id: str | None = None,
        workspace: str | None = None,
        *,
        registry: NodeRegistry | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        poll_interval: float = 0.2,
        tend_interval: float = 1.0,
        dispatch_timeout: float = 30.0,
        provision: bool | None = None,
        copies: int = 1,
        redis_url: str | None = None,
    ) -> None:
        _no_redis(redis_url)
        if copies < 1:
            raise ValueError("copies must be at least 1")
        settings = _settings(project_id, workspace)
        self.project_id = settings.project
        self.workspace = settings.workspace
        self.max_steps = max_steps
        self.poll_interval = poll_interval
        self.tend_interval = tend_interval
        """``wait`` tends a run (re-dispatch, recover an advance) once it made no progress for
        this long; while supersteps keep committing it only reads the run document."""
        self._c = Coordination(
            settings,
            provision=provision,
            dispatch_seconds=dispatch_timeout,
            copies=copies,
            registry=registry,
        )

    @property
    def store(self) -> FirestoreGraphStore:
        """The Firestore documents (after ``connect``)."""
        return self._c.need()

    async def connect(self) -> None:
        """Build the Firestore and Pub/Sub clients (in this event loop)."""
        await self._c.connect()

    async def close(self) -> None:
        await self._c.close()

    async def __aenter__(self) -> DistributedOrchestrator:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def register_graph(self, graph: Graph | CompiledGraph) -> CompiledGraph:
        """Compile (structure only: node functions are the workers') and store by hash."""
        compiled = graph.compile() if isinstance(graph, Graph) else graph
        await self.store.put_graph(compiled)
        return compiled

    async def start(
        self,
        graph: Graph | CompiledGraph,
        initial_state: Mapping[str, Any] | State | None = None,
        workflow_id: str | None = None,
        *,
        priority: Priority = "normal",
    ) -> str:
        """Create the run and dispatch superstep 0 (``graphs/runs.py``, as the api and intents
        do); returns the workflow id (see ``wait``). ``priority``: the band of its tasks."""
        compiled = await self.register_graph(graph)
        if isinstance(initial_state, State):
            workflow_id = workflow_id or initial_state.workflow_id
        # A missing topic fails the start before the run exists (dispatch ensures it too).
        await self._c.ensure([compiled.nodes[compiled.entry_point].node_type], (priority,))
        run, _ = await start_workflow_run(
            self.store,
            self._c.dispatch,
            workspace=self.workspace,
            graph=compiled.hash,
            initial_state=dict(initial_state or {}),
            workflow_id=workflow_id,
            max_steps=self.max_steps,
            priority=priority,
            dispatch_seconds=self._c.dispatch_seconds,
        )
        return run.workflow_id

    async def fork_workflow(
        self,
        workflow_id: str,
        step: int,
        updates: Mapping[str, Any] | None = None,
        *,
        new_workflow_id: str | None = None,
        max_steps: int | None = None,
        priority: Priority | None = None,
    ) -> str:
        """Start a new run from the checkpoint that opened ``step`` of ``workflow_id`` (same
        graph, its state with ``updates`` over it); returns the new id (see ``wait``).
        ``UnknownWorkflow`` (a KeyError) for a run or step that does not exist."""
        run = await fork_workflow_run(
            self.store,
            self._c.dispatch,
            workspace=self.workspace,
            workflow_id=workflow_id,
            step=step,
            updates=updates,
            new_workflow_id=new_workflow_id,
            max_steps=max_steps,
            priority=priority,
            dispatch_seconds=self._c.dispatch_seconds,
        )
        return run.workflow_id

    async def resume_workflow(self, workflow_id: str, max_steps: int | None = None) -> str:
        """Continue a cancelled, failed or step-limited run from its last checkpoint
        (``max_steps``: its new total step limit); returns its id (see ``wait``).
        ``WorkflowConflict`` if it is running or completed."""
        run = await resume_workflow_run(
            self.store,
            self._c.dispatch,
            workspace=self.workspace,
            workflow_id=workflow_id,
            max_steps=max_steps,
            dispatch_seconds=self._c.dispatch_seconds,
        )
        await self._c.tend(run)  # a superstep whose every result was saved is advanced now
        return workflow_id

    async def execute(
        self,
        graph: Graph | CompiledGraph,
        initial_state: Mapping[str, Any] | State | None = None,
        workflow_id: str | None = None,
    ) -> State:
        """Run ``graph`` to END on the workers and return the final state; raises
        ``WorkflowFailed`` / ``WorkflowCancelled`` / ``StepLimitReached`` otherwise."""
        wid = await self.start(graph, initial_state, workflow_id)
        return await self.wait(wid)

    async def wait(self, workflow_id: str) -> State:
        """Wait for a run to end, re-dispatching tasks whose lease expired and advancing a
        superstep whose last saver died (bound it with ``asyncio.timeout``)."""
        loop = asyncio.get_running_loop()
        seen_step, since = -1, loop.time()
        while True:
            run = await self.store.get_run(workflow_id)
            if run is None:
                raise KeyError(f"unknown workflow {workflow_id!r}")
            if run.status != "running":
                break
            if run.step != seen_step:  # progress: nothing to tend yet
                seen_step, since = run.step, loop.time()
            elif loop.time() - since >= self.tend_interval:
                since = loop.time()
                try:
                    await self.tend(run)
                except TransientError as error:  # contention; the next pass tries again
                    log.warning("tending %s: %s", workflow_id, error)
            await asyncio.sleep(self.poll_interval)
        checkpoint = run.checkpoint
        if checkpoint.status == "completed":
            return State(workflow_id, checkpoint.state, step=checkpoint.step)
        raise _ERRORS[checkpoint.status](
            f"workflow {workflow_id} {checkpoint.status}: {checkpoint.error}",
            workflow_id=workflow_id,
            checkpoint=checkpoint,
        )

    async def tend(self, run: WorkflowRunDocument) -> None:
        """One liveness pass over a running run's open superstep (the wake-up)."""
        await self._c.tend(run)

    async def get_workflow_status(self, workflow_id: str) -> WorkflowStatus:
        """Status, step, nodes done and pending of the open superstep; KeyError if unknown."""
        run = await self.store.get_run(workflow_id)
        if run is None:
            raise KeyError(f"unknown workflow {workflow_id!r}")
        found = await self.store.tasks(workflow_id, [t.task_id for t in run.checkpoint.pending])
        done = [d.task.node for d in found.values() if d.result is not None]
        return _status(run, done)

    async def cancel_workflow(self, workflow_id: str) -> bool:
        """End a running workflow at its last barrier commit; False if it is not running."""
        ended = await self.store.stop_run(
            workflow_id, lambda cp: stop(cp, "cancelled", "cancelled by cancel_workflow")
        )
        return ended is not None

    async def list_workflows(self, status: RunStatus | None = None) -> list[WorkflowStatus]:
        """Runs of this workspace (optionally of one status), newest first."""
        return [_status(r) for r in await self.store.list_runs(self.workspace, status)]

    async def get_checkpoints(self, workflow_id: str) -> list[Superstep]:
        """Every barrier commit of a run, oldest first."""
        return await self.store.checkpoints(workflow_id)

    async def list_workers(self) -> list[NodeWorkerDocument]:
        """The ``node_workers`` documents of this workspace (types, capacity, last seen)."""
        return await self.store.list_workers(self.workspace)


class DistributedWorker(NodeFunctions):
    """Seed 001's distributed worker: serves ``node_types`` from any machine.

    ``@worker.register("researcher")`` serves a node type; routers of conditional edges out of
    the nodes it serves come from ``@worker.register_router(name)`` or ``registry``. ``start()``
    opens a streaming pull per node type and priority band (``bands``, all three by default;
    each holds up to ``capacity + prefetch`` tasks, ``prefetch`` 0 by default) and returns;
    ``capacity`` tasks run at once across all of them, and a freed slot goes to the highest
    band waiting (``BandGate``). ``serve()`` also waits until ``stop()``. The lease of a
    running task is renewed every ``heartbeat_interval`` seconds and lasts ``lease_seconds``
    (3 heartbeats).
    With ``sweep`` (the default) each heartbeat also tends the workspace's running runs, so a
    run started through the api, with no orchestrator waiting on it, survives a dead worker.

    Agent nodes (``Graph.add_agent_node``) need no function: a worker serving their node type
    (``agent_node_types``, default ``"agent"``) starts the agent's run with an intent on the
    workspace topic and saves the run's final output when it ends (``graphs/agents.py``); the
    run executor runs it. ``copies`` publishes every task this worker dispatches that many
    times (fault testing, as the orchestrator's).
    """

    def __init__(
        self,
        worker_id: str | None = None,
        node_types: Iterable[str] = (),
        capacity: int = 4,
        heartbeat_interval: float = 10.0,
        *,
        project_id: str | None = None,
        workspace: str | None = None,
        registry: NodeRegistry | None = None,
        lease_seconds: float | None = None,
        dispatch_timeout: float = 30.0,
        provision: bool | None = None,
        sweep: bool = True,
        prefetch: int | None = None,
        bands: Iterable[Priority] = PRIORITY_BANDS,
        agent_node_types: Iterable[str] = (AGENT_NODE_TYPE,),
        copies: int = 1,
        redis_url: str | None = None,
    ) -> None:
        _no_redis(redis_url)
        if copies < 1:
            raise ValueError("copies must be at least 1")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if prefetch is not None and prefetch < 0:
            raise ValueError("prefetch must be 0 or more")
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        self.node_types = frozenset(node_types)
        if not self.node_types:
            raise ValueError("node_types must name at least one node type")
        self.capacity = capacity
        self.heartbeat_interval = heartbeat_interval
        self.lease_seconds = lease_seconds or 3 * heartbeat_interval
        if self.lease_seconds <= heartbeat_interval:
            raise ValueError("lease_seconds must be longer than heartbeat_interval")
        settings = _settings(project_id, workspace)
        self.project_id = settings.project
        self.workspace = settings.workspace
        self.registry = registry
        self.sweep = sweep
        """Each heartbeat, also tend every running run of the workspace (re-dispatch expired
        leases, advance a superstep whose last saver died): liveness without an orchestrator."""
        self._c = Coordination(
            settings,
            provision=provision,
            dispatch_seconds=dispatch_timeout,
            copies=copies,
            registry=registry,
        )
        self.agent_node_types = frozenset(agent_node_types) & self.node_types
        self._functions: dict[str, Callable[..., Any]] = {}
        self._routers: dict[str, Callable[..., Any]] = {}
        self._pulls: list[StreamingPull] = []
        self._held: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self.bands = tuple(b for b in PRIORITY_BANDS if b in set(bands))
        """The priority bands served (their subscriptions must exist), highest first."""
        if not self.bands:
            raise ValueError(f"bands must name at least one of {', '.join(PRIORITY_BANDS)}")
        self.prefetch = 0 if prefetch is None else prefetch
        """Tasks each band's stream of a node type may hold beyond ``capacity``, waiting for a
        slot. 0 (the default) holds no more per stream than before bands existed, so other
        workers get their share of a fan-out; more makes the order strict under a backlog (a
        high task is already waiting when a slot frees) at the cost of holding tasks another
        worker could run."""
        self._slots = BandGate(capacity)
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.completed = 0
        """Tasks whose result this worker saved."""

    def register_router(self, name: str) -> Callable[[F], F]:
        """Decorator: the router named ``name`` (for conditional edges out of served nodes)."""

        def decorate(func: F) -> F:
            self._routers[name] = func
            return func

        return decorate

    def register_graph(self, graph: Graph | CompiledGraph) -> None:
        """Take the routers a graph was built with (inline functions of
        ``add_conditional_edge``), for a worker in the process that defines the graph."""
        compiled = graph.compiled or graph.compile() if isinstance(graph, Graph) else graph
        for name, router in compiled._routers.items():
            self._routers.setdefault(name, router)

    @property
    def active(self) -> int:
        """Tasks running right now (never above ``capacity``)."""
        return len(self._held)

    @property
    def waiting(self) -> int:
        """Tasks held, waiting for a slot (served high band first)."""
        return self._slots.waiting

    @property
    def running(self) -> bool:
        return bool(self._pulls)

    async def start(self) -> None:
        """Connect, register in ``node_workers`` and start pulling (idempotent)."""
        if self._pulls:
            return
        for node_type in sorted(self.node_types - self.agent_node_types):
            if node_type not in self._functions and not (
                self.registry is not None and node_type in self.registry
            ):  # see NodeCallables.serves
                raise GraphError(
                    f"worker {self.worker_id}: no function registered for node type {node_type!r}"
                )
        await self._c.connect()
        await self._c.ensure(self.node_types, self.bands)
        self._stopped.clear()
        await self._beat("running")
        subscriber = self._c.subscriber
        for band, node_type in itertools.product(self.bands, sorted(self.node_types)):
            path = subscriber.subscription_path(
                self.project_id, graph_node_subscription(self.workspace, node_type, band)
            )
            pull = StreamingPull(
                subscriber,
                path,
                functools.partial(self._handle, band=PRIORITY_BANDS.index(band)),
                max_messages=self.capacity + self.prefetch,
            )
            pull.start()
            self._pulls.append(pull)
        self._heartbeat = asyncio.create_task(self._beating(), name=f"{self.worker_id}-heartbeat")

    async def serve(self) -> None:
        """``start()``, then wait until ``stop()`` (a worker machine's main loop)."""
        await self.start()
        await self._stopped.wait()

    async def stop(self, *, graceful: bool = True) -> None:
        """Stop pulling. ``graceful``: let running tasks finish and save their results;
        otherwise abandon them as a crash would (their leases lapse and they are re-dispatched)."""
        pulls, self._pulls = self._pulls, []
        for pull in pulls:
            await pull.stop()
        held = list(self._held.values())
        if graceful:
            await asyncio.gather(*held, return_exceptions=True)
        else:
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._c.store is not None:
            if graceful:
                with contextlib.suppress(Exception):
                    await self._beat("stopped")
            await self._c.close()
        self._stopped.set()

    async def _beat(self, status: Literal["running", "stopped"]) -> None:
        await self._c.need().put_worker(
            NodeWorkerDocument(
                worker_id=self.worker_id,
                workspace=self.workspace,
                node_types=sorted(self.node_types),
                capacity=self.capacity,
                active=self.active,
                status=status,
            )
        )

    async def _beating(self) -> None:
        store = self._c.need()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                # All at once: one after the other, the renewal of the last of `capacity`
                # held tasks waits for every earlier one, and on a slow store can come after
                # its lease passed (another worker then claims it and runs it again).
                await asyncio.gather(
                    *(
                        store.renew(workflow_id, task_id, self.worker_id, self.lease_seconds)
                        for workflow_id, task_id in list(self._held)
                    )
                )
                await self._beat("running")
            except Exception as error:  # a missed heartbeat is survivable; the lease says so
                log.warning("worker %s heartbeat failed: %r", self.worker_id, error)
            if self.sweep:
                try:
                    await self._c.sweep()
                except Exception as error:
                    log.warning("worker %s sweep failed: %r", self.worker_id, error)

    async def _handle(self, data: bytes, attributes: Mapping[str, str], *, band: int = 1) -> bool:
        """One delivery of a node task (``band``: index in ``PRIORITY_BANDS``); True
        acknowledges it."""
        try:
            message = TaskMessage.model_validate_json(data)
        except ValueError:
            log.error("dropping a malformed node task message: %r", data[:200])
            return True
        async with self._slots.slot(band):
            key = (message.workflow_id, message.task.task_id)
            if key in self._held:  # a duplicate of a task running here
                return True
            job = asyncio.current_task()
            assert job is not None
            self._held[key] = job
            try:
                return await self._run(message)
            finally:
                self._held.pop(key, None)

    async def _run(self, message: TaskMessage) -> bool:
        """Run one delivery (``coordination.run_node_task``, as the graph worker service does);
        every outcome acknowledges it: the task document, not the message, keeps the task."""
        callables = NodeCallables(
            owner=self.worker_id,
            functions=self._functions,
            routers=self._routers,
            registry=self.registry,
        )
        outcome = await run_node_task(self._c, message, callables, lease_seconds=self.lease_seconds)
        if outcome == "saved":
            self.completed += 1
        return True


class BandGate:
    """``capacity`` slots shared by every band: a freed slot goes to the waiter of the highest
    band (lowest index), first come first served within a band."""

    def __init__(self, capacity: int, bands: int = len(PRIORITY_BANDS)) -> None:
        self.free = capacity
        self._waiters: list[collections.deque[asyncio.Future[None]]] = [
            collections.deque() for _ in range(bands)
        ]

    @property
    def waiting(self) -> int:
        return sum(1 for q in self._waiters for f in q if not f.done())

    @contextlib.asynccontextmanager
    async def slot(self, band: int) -> AsyncIterator[None]:
        await self.acquire(band)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, band: int) -> None:
        if self.free > 0:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[band].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters[band].remove(waiter)
            raise

    def release(self) -> None:
        for queue in self._waiters:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot passes straight on
                    return
        self.free += 1


def task_message(data: bytes) -> dict[str, Any]:
    """Decode a node task message (for tools and tests)."""
    return dict(json.loads(data))
