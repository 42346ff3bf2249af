"""The superstep planner, as pure functions over plain data.

A run is a sequence of supersteps. Superstep ``n`` is a set of node tasks (``pending``) that
all read the same committed state. When every task has a ``TaskResult``, ``advance`` folds the
results into the next ``Superstep``: reducers applied in a fixed order, routing decisions
applied, join arrivals recorded, skipped branches propagated, the next tasks planned, END and
the step limit detected. A ``Superstep`` is the checkpoint: commit it in one transaction
(conditioned on ``step``) and the run can continue anywhere from it.

Routers run with their node's task (``router_view`` is what they see), so a task result
carries its own ``RouteDecision`` and the advance only applies it: a distributed worker
records the decision first-write-wins with the update, and a retried advance cannot route
differently.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from cloudagents.domain.base import Model, Persisted
from cloudagents.graphs.errors import GraphError
from cloudagents.graphs.reducers import BUILTIN_REDUCERS, ReducerFunction
from cloudagents.graphs.spec import END, CompiledGraph

DEFAULT_MAX_STEPS = 50
RunStatus = Literal["running", "completed", "failed", "cancelled", "step_limit"]
Arrival = Literal["done", "skipped"]


class NodeTask(Model):
    """One node to run in one superstep; ``task_id`` is deterministic, so re-planning a
    superstep yields the same ids (a distributed store keys task documents by it)."""

    task_id: str
    step: int
    node: str
    node_type: str


class RouteDecision(Model):
    """What a node's router chose: the key it returned and the target that key maps to."""

    key: str
    target: str


class TaskResult(Model):
    """The outcome of one node task, recorded first-write-wins by whoever ran it."""

    task_id: str
    node: str
    status: Literal["done", "failed"]
    update: dict[str, Any] = {}
    route: RouteDecision | None = None
    """Set for nodes with a conditional edge: the decision the advance applies."""
    error: str | None = None
    attempts: int = 1


class Superstep(Persisted):
    """The checkpoint after a barrier: committed state plus what runs next.

    ``step`` numbers the superstep whose tasks are ``pending`` (equally: how many supersteps
    have run). ``joins`` holds arrivals at nodes still waiting for predecessors.
    ``completed``, ``routes`` and ``skipped`` describe the superstep just folded in.
    """

    workflow_id: str
    graph_hash: str
    step: int
    step_limit: int
    status: RunStatus
    state: dict[str, Any]
    pending: list[NodeTask]
    joins: dict[str, dict[str, Arrival]] = {}
    completed: list[str] = []
    routes: dict[str, RouteDecision] = {}
    skipped: list[str] = []
    error: str | None = None


class UpdateRejected(Exception):
    """An update that cannot be folded in: a parallel ``last_value`` write or a reducer error."""


def task_id(step: int, node: str) -> str:
    """The id of ``node``'s task in superstep ``step``."""
    return f"{step:04d}-{node}"


def plan_task(graph: CompiledGraph, step: int, node: str) -> NodeTask:
    """The task that runs ``node`` in superstep ``step``."""
    spec = graph.nodes[node]
    return NodeTask(task_id=task_id(step, node), step=step, node=node, node_type=spec.node_type)


def start(
    graph: CompiledGraph,
    state: Mapping[str, Any],
    *,
    workflow_id: str,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Superstep:
    """Superstep 0 of a new run: the entry node on the initial state."""
    if max_steps < 1:
        raise ValueError("max_steps must be at least 1")
    return Superstep(
        workflow_id=workflow_id,
        graph_hash=graph.hash,
        step=0,
        step_limit=max_steps,
        status="running",
        state=copy.deepcopy(dict(state)),
        pending=[plan_task(graph, 0, graph.entry_point)],
    )


RESUMABLE: tuple[RunStatus, ...] = ("cancelled", "failed", "step_limit")


def resume(
    checkpoint: Superstep,
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    step_limit: int | None = None,
) -> Superstep:
    """Continue a stopped run (cancelled, failed, or at its step limit) from its checkpoint:
    its pending tasks run again. The new limit is ``step_limit`` (the run's total, greater
    than its step) if given, else ``max_steps`` more than its step."""
    if checkpoint.status not in RESUMABLE or not checkpoint.pending:
        raise ValueError(f"a {checkpoint.status} run with nothing pending cannot resume")
    limit = checkpoint.step + max_steps if step_limit is None else step_limit
    if limit <= checkpoint.step:
        raise ValueError(
            f"workflow {checkpoint.workflow_id} is at step {checkpoint.step}: a step limit of "
            f"{limit} leaves nothing to run; raise max_steps above {checkpoint.step}"
        )
    return checkpoint.model_copy(update={"status": "running", "error": None, "step_limit": limit})


def fork(
    checkpoint: Superstep,
    *,
    workflow_id: str,
    updates: Mapping[str, Any] | None = None,
    step_limit: int | None = None,
) -> Superstep:
    """A new run ``workflow_id`` from ``checkpoint`` (a barrier commit of another run): its
    state with ``updates`` written over (keys replaced, no reducers), the same pending tasks
    and joins, the same graph. ``step_limit`` defaults to the checkpoint's, raised to leave
    at least one superstep to run."""
    if not checkpoint.pending:
        raise ValueError(
            f"step {checkpoint.step} of {checkpoint.workflow_id} has nothing pending "
            f"(the run {checkpoint.status} there): nothing to fork"
        )
    limit = (
        step_limit if step_limit is not None else max(checkpoint.step_limit, checkpoint.step + 1)
    )
    if limit <= checkpoint.step:
        raise ValueError(
            f"a step limit of {limit} leaves nothing to run after step {checkpoint.step}"
        )
    state = copy.deepcopy(dict(checkpoint.state))
    state.update(copy.deepcopy(dict(updates or {})))
    return checkpoint.model_copy(
        update={
            "workflow_id": workflow_id,
            "status": "running",
            "error": None,
            "step_limit": limit,
            "state": state,
        },
        deep=True,
    )


def stop(checkpoint: Superstep, status: RunStatus, error: str | None = None) -> Superstep:
    """The same checkpoint, ended with ``status`` (pending tasks kept for a resume)."""
    return checkpoint.model_copy(update={"status": status, "error": error})


def _reducer(
    graph: CompiledGraph, key: str, custom: Mapping[str, ReducerFunction] | None
) -> ReducerFunction:
    name = graph.reducer_for(key)
    found = BUILTIN_REDUCERS.get(name) or (custom or {}).get(name)
    if found is None:
        raise GraphError(f"state key {key!r} uses reducer {name!r}, which is not registered")
    return found


def apply_updates(
    graph: CompiledGraph,
    state: Mapping[str, Any],
    updates: Iterable[tuple[str, Mapping[str, Any]]],
    reducers: Mapping[str, ReducerFunction] | None = None,
) -> dict[str, Any]:
    """Fold ``(node, update)`` pairs into a copy of ``state`` in the order given.

    Raises ``UpdateRejected`` when two nodes write one ``last_value`` key: which value would
    win depends on nothing the author controls, so it is an error, never last-writer-wins.
    """
    result = copy.deepcopy(dict(state))
    writers: dict[str, str] = {}
    for node, update in updates:
        for key, value in update.items():
            reducer_name = graph.reducer_for(key)
            if reducer_name == "last_value":
                if key in writers:
                    raise UpdateRejected(
                        f"nodes {writers[key]!r} and {node!r} both wrote {key!r} in one "
                        f"superstep; give {key!r} a reducer (graph.add_reducer) or let one "
                        "node write it"
                    )
                writers[key] = node
            try:
                result[key] = _reducer(graph, key, reducers)(result.get(key), copy.deepcopy(value))
            except (TypeError, ValueError) as error:
                raise UpdateRejected(
                    f"reducer {reducer_name!r} of key {key!r} rejected node {node!r}'s update: "
                    f"{error}"
                ) from error
    return result


def router_view(
    graph: CompiledGraph,
    state: Mapping[str, Any],
    node: str,
    update: Mapping[str, Any],
    reducers: Mapping[str, ReducerFunction] | None = None,
) -> dict[str, Any]:
    """What ``node``'s router sees: the committed state with only that node's update applied."""
    return apply_updates(graph, state, [(node, update)], reducers)


def route_decision(graph: CompiledGraph, node: str, key: object) -> RouteDecision:
    """Check a router's return value against the node's targets."""
    branch = graph.branches[node]
    if not isinstance(key, str) or key not in branch.targets:
        raise GraphError(
            f"router {branch.router!r} of node {node!r} returned {key!r}; "
            f"expected one of {sorted(branch.targets)}"
        )
    return RouteDecision(key=key, target=branch.targets[key])


class Frontier(Model):
    """The structural part of an advance: who runs next, who waits, who was skipped."""

    activated: list[str]
    joins: dict[str, dict[str, Arrival]]
    skipped: list[str]


def propagate(
    graph: CompiledGraph,
    finished: Mapping[str, RouteDecision | None],
    joins: Mapping[str, Mapping[str, Arrival]],
) -> Frontier:
    """Deliver the finished nodes' arrivals and resolve every join that can be resolved.

    Along forward edges (the DAG left when loops' back edges are removed) each finished
    node sends ``done`` to the targets it takes and ``skipped`` to the conditional targets it
    does not. A node fires once every forward predecessor has arrived and at least one is
    ``done``; if all were skipped it is skipped too and passes ``skipped`` on, so nothing
    downstream waits for it. A predecessor that nothing live (a node about to run, or a
    join holding a ``done``) can still reach is counted as skipped: joins never hang.
    A back edge (a loop) fires its target directly.
    """
    topology = graph.topology
    tokens: dict[str, dict[str, Arrival]] = {k: dict(v) for k, v in joins.items()}
    activated: set[str] = set()
    skipped: set[str] = set()

    def deliver(source: str, target: str, kind: Arrival) -> None:
        if target == END:
            return
        if graph.is_back_edge(source, target):
            if kind == "done":
                activated.add(target)
            return
        arrivals = tokens.setdefault(target, {})
        if arrivals.get(source) != "done":  # a second arrival never downgrades a done
            arrivals[source] = kind

    def emit(node: str, decision: RouteDecision | None, *, skip: bool) -> None:
        taken = set() if skip else graph.static_targets(node)
        every = set(graph.static_targets(node))
        branch = graph.branches.get(node)
        if branch is not None:
            every.update(branch.targets.values())
        if decision is not None and not skip:
            taken.add(decision.target)
        for target in sorted(every):
            deliver(node, target, "done" if target in taken else "skipped")

    for node in sorted(finished):
        emit(node, finished[node], skip=False)

    changed = True
    while changed:
        changed = False
        for join in topology.order:
            arrivals = tokens.get(join)
            if arrivals is None:
                continue
            live = activated | {k for k, v in tokens.items() if k != join and "done" in v.values()}
            for pred in topology.forward_predecessors[join]:
                if pred in arrivals or pred in live:
                    continue
                if not any(pred in topology.forward_descendants[s] for s in live):
                    arrivals[pred] = "skipped"
            if len(arrivals) < len(topology.forward_predecessors[join]):
                continue
            del tokens[join]
            changed = True
            if "done" in arrivals.values():
                activated.add(join)
            else:
                skipped.add(join)
                emit(join, None, skip=True)
    return Frontier(activated=sorted(activated), joins=tokens, skipped=sorted(skipped))


def advance(
    graph: CompiledGraph,
    checkpoint: Superstep,
    results: Sequence[TaskResult],
    reducers: Mapping[str, ReducerFunction] | None = None,
) -> Superstep:
    """Fold the results of every pending task into the next superstep (pure)."""
    if checkpoint.status != "running":
        raise ValueError(f"workflow {checkpoint.workflow_id} is {checkpoint.status}")
    expected = sorted(t.task_id for t in checkpoint.pending)
    got = sorted(r.task_id for r in results)
    if got != expected:
        raise ValueError(f"superstep {checkpoint.step} needs results for {expected}, got {got}")
    ordered = sorted(results, key=lambda r: (r.node, r.task_id))
    failed = [r for r in ordered if r.status == "failed"]
    if failed:
        causes = "; ".join(
            f"node {r.node!r} failed after {r.attempts} attempt(s): {r.error}" for r in failed
        )
        return stop(checkpoint, "failed", causes)
    for r in ordered:
        branch = graph.branches.get(r.node)
        if branch is None:
            continue
        if r.route is None or branch.targets.get(r.route.key) != r.route.target:
            return stop(checkpoint, "failed", f"node {r.node!r} has no valid route decision")
    try:
        state = apply_updates(
            graph, checkpoint.state, [(r.node, r.update) for r in ordered], reducers
        )
    except UpdateRejected as rejected:
        return stop(checkpoint, "failed", f"superstep {checkpoint.step}: {rejected}")
    frontier = propagate(graph, {r.node: r.route for r in ordered}, checkpoint.joins)
    step = checkpoint.step + 1
    status: RunStatus = "running"
    error: str | None = None
    if not frontier.activated:
        status = "completed"
        if frontier.joins:  # propagate() resolves every join once nothing is live
            raise AssertionError(f"joins left waiting with nothing to run: {frontier.joins}")
    elif step >= checkpoint.step_limit:
        status, error = "step_limit", f"step limit reached after {step} supersteps"
    return Superstep(
        workflow_id=checkpoint.workflow_id,
        graph_hash=checkpoint.graph_hash,
        step=step,
        step_limit=checkpoint.step_limit,
        status=status,
        state=state,
        pending=[plan_task(graph, step, n) for n in frontier.activated],
        joins=frontier.joins,
        completed=[r.node for r in ordered],
        routes={r.node: r.route for r in ordered if r.route is not None},
        skipped=frontier.skipped,
        error=error,
    )
