"""The graph worker service's use cases (``services/graph_worker/main.py``): node tasks pushed
by Cloud Tasks, and superstep wake-ups at lease expiry.

* **A node task** (``/tasks/graph-node``, a ``TaskMessage`` from its node type's queue in the
  run's band) runs through ``coordination.run_node_task``, the pull workers' code path: claim
  the lease (renewed every third of ``CLOUDAGENTS_GRAPH_LEASE_SECONDS`` while the node runs),
  run, save first-write-wins, advance. Each delivery claims under its own owner id, so a
  redelivery of a task whose first delivery is still running (or died holding the lease) only
  acknowledges: capacity is the queue's ``max_concurrent_dispatches`` times nothing more, and a
  task whose worker died is re-dispatched by the wake-up, not by Cloud Tasks' retries (the
  emulator retries at once, with no backoff).
* **A wake-up** (``/tasks/graph-wake``, a ``SuperstepWake``) is the chain that keeps a
  superstep moving with no orchestrator waiting: opening a superstep with a push task schedules
  its first one at the dispatch lease's expiry (``dispatch.NodeDispatch``). Each is handled once
  (``claim_wake``; a claim whose handler died before it scheduled the next is taken over by a
  later delivery after ``WAKE_HOLD_SECONDS``, and a delivery meanwhile is answered 503 so Cloud
  Tasks retries it): it tends the run (``Coordination.tend``: a task whose lease lapsed without a
  result is dispatched again, a superstep whose results are all saved is advanced) and, while
  the superstep stays open, schedules the next at the earliest lease expiry of its open tasks.
  One that finds the run moved on hands over to the open superstep (its first wake-up, which the
  opener schedules, may have been lost with the opener), then stops.

The truth is in Firestore: a wake-up that is stale, early or duplicated does nothing harmful.
Node functions come from the ``NodeRegistry`` objects of ``CLOUDAGENTS_GRAPH_MODULES``.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from cloudagents.domain.errors import TransientError
from cloudagents.graphs.coordination import Coordination, NodeCallables, run_node_task
from cloudagents.graphs.dispatch import WAKE_SLACK_SECONDS
from cloudagents.graphs.documents import SuperstepWake, TaskMessage, WorkflowRunDocument
from cloudagents.graphs.registry import NodeRegistry
from cloudagents.graphs.runs import DEFAULT_DISPATCH_SECONDS
from cloudagents.settings import Settings

log = logging.getLogger(__name__)


def load_registry(modules: Iterable[str]) -> NodeRegistry:
    """One registry holding every ``NodeRegistry`` defined at the top level of ``modules``."""
    merged = NodeRegistry()
    for name in modules:
        module = importlib.import_module(name)
        found = [v for v in vars(module).values() if isinstance(v, NodeRegistry)]
        if not found:
            log.warning("graph module %s defines no NodeRegistry", name)
        for registry in found:
            merged.include(registry)
    return merged


class GraphPushWorker:
    """Runs pushed node tasks and superstep wake-ups on this process's own clients."""

    def __init__(self, settings: Settings, registry: NodeRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or load_registry(settings.graph_modules)
        self.lease_seconds = settings.graph_lease_seconds
        self.coordination = Coordination(
            settings,
            provision=None,  # the emulators: topics on first use; a project: Terraform's
            dispatch_seconds=DEFAULT_DISPATCH_SECONDS,
            copies=1,
            registry=self.registry,
            ensure_topics=settings.on_emulators,
        )
        self._host = f"{socket.gethostname()}-{os.getpid()}"

    async def handle_node(self, message: TaskMessage) -> str:
        """One delivery of a node task; the outcome (``saved``, ``held``, ...) acknowledges it."""
        c = self.coordination
        await c.connect()
        callables = NodeCallables(owner=f"push-{self._host}", registry=self.registry)
        return await run_node_task(
            c,
            message,
            callables,
            lease_seconds=self.lease_seconds,
            owner=f"push-{self._host}-{uuid.uuid4().hex[:8]}",
            renew_every=self.lease_seconds / 3,
        )

    async def handle_wake(self, wake: SuperstepWake) -> str:
        """One superstep wake-up (see the module docstring)."""
        c = self.coordination
        await c.connect()
        store = c.need()
        run = await store.get_run(wake.workflow_id)
        if run is None:
            return "gone"
        if run.status != "running":
            return "finished"
        key = f"{wake.step:06d}-{wake.gen:04d}"
        claim = await store.claim_wake(wake.workflow_id, key)
        if claim == "done":
            return "duplicate"  # another copy did the work and scheduled the next
        if claim == "held":  # Cloud Tasks retries later: by then it is done, or taken over
            raise TransientError(f"wake-up {key} of {wake.workflow_id} is being handled")
        if run.step != wake.step:
            await self._schedule(run, SuperstepWake(workflow_id=run.workflow_id, step=run.step))
            outcome = "moved-on"
        else:
            outcome = await self._tend(wake, run)
        await store.finish_wake(wake.workflow_id, key)
        return outcome

    async def _tend(self, wake: SuperstepWake, run: WorkflowRunDocument) -> str:
        c = self.coordination
        store = c.need()
        try:
            await c.tend(run)
        except TransientError as error:  # contention: the next wake-up tries again
            log.warning("tending %s: %s", run.workflow_id, error)
        after = await store.get_run(wake.workflow_id)
        if after is None or after.status != "running" or after.step != wake.step:
            return "advanced"  # the advance that moved it scheduled the next superstep's
        await self._schedule(after, wake.model_copy(update={"gen": wake.gen + 1}))
        return "tended"

    async def _schedule(self, run: WorkflowRunDocument, wake: SuperstepWake) -> None:
        """``wake`` at the earliest lease expiry among the open superstep's unfinished tasks."""
        c = self.coordination
        pending = run.checkpoint.pending
        found = await c.need().tasks(run.workflow_id, [t.task_id for t in pending])
        leases = [d.lease_expires_at for d in found.values() if d.result is None]
        now = time.time()
        at = max(min(leases, default=now), now) + WAKE_SLACK_SECONDS
        assert c.nodes is not None
        await c.nodes.wake(wake, datetime.fromtimestamp(at, UTC))

    async def close(self) -> None:
        await self.coordination.close()


_worker: GraphPushWorker | None = None


def push_worker_for(settings: Settings) -> GraphPushWorker:
    """One worker per process (its clients and the imported registries outlive a request)."""
    global _worker
    if _worker is None or _worker.settings is not settings:
        _worker = GraphPushWorker(settings)
    return _worker
