"""Distributed graph workflows on Firestore: graphs by hash, runs, node tasks, node workers.

Documents (``graphs/distributed.py`` describes the protocol):

* ``workflow_graphs/{sha256}``: a compiled graph's canonical JSON, written once, never changed;
* ``workflow_runs/{workflow_id}``: the run, pinned to a graph hash, with ``step`` and the
  ``Superstep`` checkpoint of the open superstep (as JSON, so the state round-trips exactly);
* ``workflow_runs/{workflow_id}/checkpoints/{step:06d}``: every barrier commit, append-only;
* ``workflow_runs/{workflow_id}/tasks/{task_id}``: one per node task of a superstep
  (``task_id`` is ``{step:04d}-{node}``), holding its lease and, first-write-wins, its result;
* ``workflow_runs/{workflow_id}/events/{event_id}``: the run's events (``graphs/events.py``),
  each written in the batch of the transition it reports;
* ``workflow_runs/{workflow_id}/wakes/{step:06d}-{gen:04d}``: a superstep wake-up taken (once);
* ``node_workers/{worker_id}``: what a pull worker serves and when it was last seen (listing).

Every read-modify-write is a ``guarded`` batch (``ops.py``): the advance of a superstep is one
batch conditioned on the run document as read, so of two advancers of one step one applies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from google.cloud import firestore

from cloudagents.adapters.firestore.ops import (
    Guarded,
    claim_wake_document,
    counted_get,
    counted_stream,
    finish_wake_document,
    guarded,
    written,
)
from cloudagents.domain.runs import WAKE_HOLD_SECONDS, WakeClaim
from cloudagents.graphs.documents import (
    Claim,
    NodeWorkerDocument,
    Priority,
    Resumed,
    TaskDocument,
    WorkflowRunDocument,
    claimed_event,
    new_run_document,
    now,
    open_task_documents,
    redispatched_event,
    reopened_task,
    result_event,
    resumed_event,
    started_event,
    transition_events,
)
from cloudagents.graphs.events import WORKFLOW_EVENT_ADAPTER, WorkflowEvent
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.superstep import Superstep, TaskResult
from cloudagents.metrics import count

GRAPHS = "workflow_graphs"
RUNS = "workflow_runs"
TASKS = "tasks"
CHECKPOINTS = "checkpoints"
WORKERS = "node_workers"
EVENTS = "events"
WAKES = "wakes"


def _run_data(run: WorkflowRunDocument) -> dict[str, Any]:
    data = run.model_dump(mode="json", exclude={"checkpoint", "created_at", "updated_at"})
    data["checkpoint"] = run.checkpoint.model_dump_json()
    data["created_at"] = run.created_at
    data["updated_at"] = run.updated_at
    return data


def _run_from(data: dict[str, Any]) -> WorkflowRunDocument:
    data = dict(data)
    data["checkpoint"] = Superstep.model_validate_json(data["checkpoint"])
    return WorkflowRunDocument.model_validate(data)


def _task_data(task: TaskDocument) -> dict[str, Any]:
    data = task.model_dump(mode="json", exclude={"result"})
    data["result"] = None if task.result is None else task.result.model_dump_json()
    return data


def _task_from(data: dict[str, Any]) -> TaskDocument:
    data = dict(data)
    if data.get("result") is not None:
        data["result"] = TaskResult.model_validate_json(data["result"])
    return TaskDocument.model_validate(data)


Plan = Callable[[WorkflowRunDocument, list[TaskResult]], Superstep]
"""Given the run (its open checkpoint) and every result of that superstep, the next checkpoint."""


class FirestoreGraphStore:
    """The documents of distributed graph workflows, on an async Firestore client."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._graphs: dict[str, CompiledGraph] = {}

    # graphs -------------------------------------------------------------------------------

    async def put_graph(self, graph: CompiledGraph) -> str:
        """Store ``graph`` under its hash (once; equal JSON gives the same id); return the hash."""
        digest = graph.hash
        ref = self.client.collection(GRAPHS).document(digest)
        snap = await counted_get(ref)
        if not snap.exists:
            data = {"name": graph.name, "spec": graph.to_json(), "created_at": now()}

            async def create(writes: Guarded) -> None:
                again = await counted_get(ref)
                if not again.exists:
                    writes.create(ref, data)

            await guarded(self.client, create)
        self._graphs[digest] = graph
        return digest

    async def get_graph(self, digest: str) -> CompiledGraph:
        """The graph stored under ``digest`` (KeyError if none); cached, it never changes."""
        found = self._graphs.get(digest)
        if found is None:
            snap = await counted_get(self.client.collection(GRAPHS).document(digest))
            if not snap.exists:
                raise KeyError(f"no workflow graph {digest}")
            found = CompiledGraph.from_json(snap.to_dict()["spec"])
            if found.hash != digest:
                raise ValueError(f"workflow graph {digest} does not hash to its id")
            self._graphs[digest] = found
        return found

    async def list_graphs(self) -> list[tuple[str, str]]:
        """(hash, name) of every stored graph."""
        return [(d.id, d.to_dict()["name"]) async for d in counted_stream(self._graphs_ref())]

    async def graph_by_name(self, name: str) -> str | None:
        """The hash of the graph named ``name`` registered last (None if there is none)."""
        query = self._graphs_ref().where(filter=firestore.FieldFilter("name", "==", name))
        found = [(d.to_dict()["created_at"], d.id) async for d in counted_stream(query)]
        return max(found)[1] if found else None

    def _graphs_ref(self) -> Any:
        return self.client.collection(GRAPHS)

    # runs ---------------------------------------------------------------------------------

    def _run_ref(self, workflow_id: str) -> Any:
        return self.client.collection(RUNS).document(workflow_id)

    def _task_ref(self, workflow_id: str, task_id: str) -> Any:
        return self._run_ref(workflow_id).collection(TASKS).document(task_id)

    def _checkpoint_ref(
        self, workflow_id: str, checkpoint: Superstep, *, stopped: bool, resumes: int = 0
    ) -> Any:
        # A run stopped at a barrier (a failed node, a cancel) keeps that superstep's number:
        # its checkpoint is stored beside the open one, never over it; a resumed run's later
        # stops and resumes carry the resume count, so history stays append-only.
        name = f"{checkpoint.step:06d}"
        if stopped:
            name += f"-{checkpoint.status}"
        if resumes:
            name += f"-r{resumes}"
        return self._run_ref(workflow_id).collection(CHECKPOINTS).document(name)

    def _checkpoint(self, writes: Guarded, ref: Any, checkpoint: Superstep) -> None:
        writes.set(ref, {"checkpoint": checkpoint.model_dump_json(), "at": time.time()})

    def _open_tasks(
        self, writes: Guarded, checkpoint: Superstep, lease_seconds: float, epoch: int = 0
    ) -> None:
        for doc in open_task_documents(checkpoint, lease_seconds, epoch):
            writes.create(self._task_ref(checkpoint.workflow_id, doc.task.task_id), _task_data(doc))

    def _event(self, writes: Guarded, event: WorkflowEvent) -> None:
        ref = self._run_ref(event.workflow_id).collection(EVENTS).document(event.id)
        writes.set(ref, {"id": event.id, "event": event.model_dump_json()})

    async def create_run(
        self,
        checkpoint: Superstep,
        *,
        workspace: str,
        graph_name: str,
        dispatch_seconds: float,
        priority: Priority = "normal",
        forked_from: str | None = None,
    ) -> WorkflowRunDocument:
        """The run, its first checkpoint, its first tasks and its ``workflow_started`` event, in
        one batch; ValueError if a run with this id exists (run ids are never reused: history
        is append-only)."""
        wid = checkpoint.workflow_id
        run = new_run_document(
            checkpoint,
            workspace=workspace,
            graph_name=graph_name,
            dispatch_seconds=dispatch_seconds,
            priority=priority,
            forked_from=forked_from,
        )

        async def create(writes: Guarded) -> None:
            if (await counted_get(self._run_ref(wid))).exists:
                raise ValueError(f"workflow {wid} already exists; run ids are not reused")
            writes.create(self._run_ref(wid), _run_data(run))
            self._checkpoint(
                writes, self._checkpoint_ref(wid, checkpoint, stopped=False), checkpoint
            )
            self._open_tasks(writes, checkpoint, dispatch_seconds)
            self._event(writes, started_event(run))

        await guarded(self.client, create)
        return run

    async def get_run(self, workflow_id: str) -> WorkflowRunDocument | None:
        snap = await counted_get(self._run_ref(workflow_id))
        return _run_from(snap.to_dict()) if snap.exists else None

    async def list_runs(
        self, workspace: str, status: str | None = None, limit: int = 100
    ) -> list[WorkflowRunDocument]:
        """Runs of ``workspace`` (optionally of one status), newest first."""
        query = self.client.collection(RUNS).where(
            filter=firestore.FieldFilter("workspace", "==", workspace)
        )
        if status is not None:
            query = query.where(filter=firestore.FieldFilter("status", "==", status))
        runs = [_run_from(d.to_dict()) async for d in counted_stream(query)]
        runs.sort(key=lambda r: r.created_at, reverse=True)
        return runs[:limit]

    async def checkpoints(self, workflow_id: str) -> list[Superstep]:
        """Every barrier commit (and stop, and resume) of a run, oldest first."""
        query = self._run_ref(workflow_id).collection(CHECKPOINTS)
        docs = [d async for d in counted_stream(query)]
        docs.sort(key=lambda d: (d.id[:6], d.to_dict().get("at", 0.0), d.id))
        return [Superstep.model_validate_json(d.to_dict()["checkpoint"]) for d in docs]

    async def checkpoint(self, workflow_id: str, step: int) -> Superstep | None:
        """The barrier commit that opened superstep ``step`` (None if the run never got there)."""
        ref = self._run_ref(workflow_id).collection(CHECKPOINTS).document(f"{step:06d}")
        snap = await counted_get(ref)
        return Superstep.model_validate_json(snap.to_dict()["checkpoint"]) if snap.exists else None

    async def events(self, workflow_id: str, after: str | None = None) -> list[WorkflowEvent]:
        """The run's events with ids after ``after``, in id order."""
        query: Any = self._run_ref(workflow_id).collection(EVENTS)
        if after is not None:
            query = query.where(filter=firestore.FieldFilter("id", ">", after))
        docs = [d.to_dict() async for d in counted_stream(query.order_by("id"))]
        return [WORKFLOW_EVENT_ADAPTER.validate_json(d["event"]) for d in docs]

    async def stop_run(
        self, workflow_id: str, stop: Callable[[Superstep], Superstep]
    ) -> WorkflowRunDocument | None:
        """End a running run with ``stop(checkpoint)`` (pending kept); None if it is not running."""
        ref = self._run_ref(workflow_id)

        async def apply(writes: Guarded) -> WorkflowRunDocument | None:
            snap = await counted_get(ref)
            if not snap.exists:
                return None
            run = _run_from(snap.to_dict())
            if run.status != "running":
                return None
            ended = stop(run.checkpoint)
            after = run.model_copy(
                update={"status": ended.status, "checkpoint": ended, "updated_at": now()}
            )
            writes.update_if_unchanged(ref, _run_data(after), snap)
            self._checkpoint(
                writes,
                self._checkpoint_ref(workflow_id, ended, stopped=True, resumes=run.resumes),
                ended,
            )
            for event in transition_events(run, ended):
                self._event(writes, event)
            return after

        result: WorkflowRunDocument | None = await guarded(self.client, apply)
        return result

    async def resume_run(
        self,
        workflow_id: str,
        resume: Callable[[Superstep], Superstep],
        *,
        dispatch_seconds: float,
    ) -> Resumed | None:
        """Reopen a stopped run at its checkpoint with ``resume(checkpoint)`` (which raises
        ValueError for a run that cannot resume): its open tasks without a ``done`` result are
        cleared for a new dispatch, in one batch with the run, a checkpoint copy and the
        ``workflow_resumed`` event. None if there is no such run."""
        ref = self._run_ref(workflow_id)

        async def apply(writes: Guarded) -> Resumed | None:
            snap = await counted_get(ref)
            if not snap.exists:
                return None
            run = _run_from(snap.to_dict())
            if run.status == "running":
                raise ValueError(f"workflow {workflow_id} is running; only a stopped run resumes")
            again = resume(run.checkpoint)
            after = run.model_copy(
                update={
                    "status": again.status,
                    "checkpoint": again,
                    "resumes": run.resumes + 1,
                    "updated_at": now(),
                }
            )
            lease = dispatch_seconds if run.dispatch_seconds is None else run.dispatch_seconds
            found = await self.tasks(workflow_id, [t.task_id for t in again.pending])
            dispatch = []
            for task in again.pending:
                doc = found.get(task.task_id)
                if doc is None:
                    [fresh] = open_task_documents(
                        again.model_copy(update={"pending": [task]}), lease, after.resumes
                    )
                    writes.create(self._task_ref(workflow_id, task.task_id), _task_data(fresh))
                    dispatch.append(task)
                    continue
                reopened = reopened_task(doc, lease, after.resumes)
                if reopened is not None:
                    writes.set(self._task_ref(workflow_id, task.task_id), _task_data(reopened))
                    dispatch.append(task)
            writes.update_if_unchanged(ref, _run_data(after), snap)
            self._checkpoint(
                writes,
                self._run_ref(workflow_id)
                .collection(CHECKPOINTS)
                .document(f"{again.step:06d}-resumed-r{after.resumes}"),
                again,
            )
            self._event(writes, resumed_event(run, after))
            return Resumed(run=after, dispatch=dispatch)

        result: Resumed | None = await guarded(self.client, apply)
        return result

    # tasks --------------------------------------------------------------------------------

    async def get_task(self, workflow_id: str, task_id: str) -> TaskDocument | None:
        snap = await counted_get(self._task_ref(workflow_id, task_id))
        return _task_from(snap.to_dict()) if snap.exists else None

    async def tasks(self, workflow_id: str, task_ids: Iterable[str]) -> dict[str, TaskDocument]:
        """The task documents that exist among ``task_ids``."""
        refs = [self._task_ref(workflow_id, t) for t in task_ids]
        found: dict[str, TaskDocument] = {}
        if not refs:
            return found
        count("firestore.read", len(refs))  # get_all bills one read per document
        async for snap in self.client.get_all(refs):
            if snap.exists:
                found[snap.id] = _task_from(snap.to_dict())
        return found

    async def claim(
        self, workflow_id: str, task_id: str, owner: str, lease_seconds: float
    ) -> Claim:
        """Take the lease of a task of the open superstep, unless it is done or held."""
        ref = self._task_ref(workflow_id, task_id)

        async def apply(writes: Guarded) -> Claim:
            run = await self.get_run(workflow_id)
            snap = await counted_get(ref)
            if run is None or not snap.exists:
                return Claim(outcome="stale", run=run)
            task = _task_from(snap.to_dict())
            if task.result is not None:
                return Claim(outcome="done", run=run, task=task)
            if run.status != "running" or run.step != task.task.step:
                return Claim(outcome="stale", run=run, task=task)
            now = time.time()
            if task.lease_owner not in (None, owner) and task.lease_expires_at > now:
                return Claim(outcome="held", run=run, task=task)
            mine = task.model_copy(
                update={
                    "lease_owner": owner,
                    "lease_expires_at": now + lease_seconds,
                    "claims": task.claims + 1,
                }
            )
            writes.update_if_unchanged(ref, _task_data(mine), snap)
            self._event(writes, claimed_event(mine))
            return Claim(outcome="claimed", run=run, task=mine)

        result: Claim = await guarded(self.client, apply)
        return result

    async def renew(self, workflow_id: str, task_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease; False once the task has a result or another owner."""
        ref = self._task_ref(workflow_id, task_id)

        async def apply(writes: Guarded) -> bool:
            snap = await counted_get(ref)
            if not snap.exists:
                return False
            task = _task_from(snap.to_dict())
            if task.result is not None or task.lease_owner != owner:
                return False
            renewed = task.model_copy(update={"lease_expires_at": time.time() + lease_seconds})
            writes.update_if_unchanged(ref, _task_data(renewed), snap)
            return True

        result: bool = await guarded(self.client, apply)
        return result

    async def save_result(self, workflow_id: str, result: TaskResult, by: str) -> bool:
        """Record a task's result, first write wins; True if this call recorded it."""
        ref = self._task_ref(workflow_id, result.task_id)

        async def apply(writes: Guarded) -> bool:
            snap = await counted_get(ref)
            if not snap.exists:
                return False
            task = _task_from(snap.to_dict())
            if task.result is not None:
                return False
            done = task.model_copy(update={"result": result, "finished_by": by})
            writes.update_if_unchanged(ref, _task_data(done), snap)
            self._event(writes, result_event(done))
            return True

        saved: bool = await guarded(self.client, apply)
        return saved

    async def redispatch(self, workflow_id: str, task_id: str, dispatch_seconds: float) -> bool:
        """Take over a task whose lease expired without a result, for a new dispatch; True if
        this caller should publish it again (of concurrent callers, exactly one)."""
        ref = self._task_ref(workflow_id, task_id)

        async def apply(writes: Guarded) -> bool:
            snap = await counted_get(ref)
            if not snap.exists:
                return False
            task = _task_from(snap.to_dict())
            if task.result is not None or task.lease_expires_at > time.time():
                return False
            again = task.model_copy(
                update={
                    "lease_owner": None,
                    "lease_expires_at": time.time() + dispatch_seconds,
                    "dispatches": task.dispatches + 1,
                }
            )
            writes.update_if_unchanged(ref, _task_data(again), snap)
            self._event(writes, redispatched_event(again))
            return True

        result: bool = await guarded(self.client, apply)
        return result

    async def advance(
        self, workflow_id: str, step: int, plan: Plan, *, dispatch_seconds: float
    ) -> Superstep | None:
        """Fold superstep ``step`` into the next one: when the run is still at ``step`` and every
        pending task has a result, write ``plan(run, results)`` as the run's checkpoint, append
        it to the checkpoints and create the next tasks — one batch conditioned on the run
        document as read. The next tasks' first dispatch lasts the run's ``dispatch_seconds``
        (``dispatch_seconds`` for a run stored without it). Returns the new checkpoint if this
        call committed it, else None."""
        ref = self._run_ref(workflow_id)

        async def apply(writes: Guarded) -> Superstep | None:
            snap = await counted_get(ref)
            if not snap.exists:
                return None
            run = _run_from(snap.to_dict())
            if run.status != "running" or run.step != step:
                return None
            ids = [t.task_id for t in run.checkpoint.pending]
            found = await self.tasks(workflow_id, ids)
            results = [found[i].result for i in ids if i in found]
            if len(results) != len(ids) or any(r is None for r in results):
                return None
            nxt = plan(run, [r for r in results if r is not None])
            after = run.model_copy(
                update={
                    "status": nxt.status,
                    "step": nxt.step,
                    "checkpoint": nxt,
                    "updated_at": now(),
                }
            )
            writes.update_if_unchanged(ref, _run_data(after), snap)
            stopped = nxt.step == run.step
            self._checkpoint(
                writes,
                self._checkpoint_ref(
                    workflow_id, nxt, stopped=stopped, resumes=run.resumes if stopped else 0
                ),
                nxt,
            )
            if nxt.status == "running":
                self._open_tasks(
                    writes,
                    nxt,
                    dispatch_seconds if run.dispatch_seconds is None else run.dispatch_seconds,
                    run.resumes,
                )
            for event in transition_events(run, nxt):
                self._event(writes, event)
            return nxt

        result: Superstep | None = await guarded(self.client, apply)
        return result

    async def claim_wake(
        self, workflow_id: str, key: str, hold_seconds: float = WAKE_HOLD_SECONDS
    ) -> WakeClaim:
        """Take the wake-up ``key`` (``{step:06d}-{gen:04d}``) of a run: ``claimed``, ``done``
        or ``held`` (``ops.claim_wake_document``; the Cloud Tasks emulator does not drop tasks
        of the same name, and a claim whose handler died is taken over after the hold)."""
        ref = self._run_ref(workflow_id).collection(WAKES).document(key)
        return await claim_wake_document(self.client, ref, hold_seconds)

    async def finish_wake(self, workflow_id: str, key: str) -> None:
        """The claimed wake-up ``key`` did its work and scheduled the next."""
        await finish_wake_document(self._run_ref(workflow_id).collection(WAKES).document(key))

    # node workers -------------------------------------------------------------------------

    async def put_worker(self, worker: NodeWorkerDocument) -> None:
        ref = self.client.collection(WORKERS).document(worker.worker_id)
        await written(ref).set(worker.model_dump(mode="python"))

    async def list_workers(self, workspace: str) -> list[NodeWorkerDocument]:
        query = self.client.collection(WORKERS).where(
            filter=firestore.FieldFilter("workspace", "==", workspace)
        )
        found = [
            NodeWorkerDocument.model_validate(d.to_dict()) async for d in counted_stream(query)
        ]
        return sorted(found, key=lambda w: w.worker_id)
