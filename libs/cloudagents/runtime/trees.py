"""Run trees: the runs a run started (agent-to-agent calls and handoffs), read and cancelled as a
whole. A child names its caller in ``parent_run_id`` (and, for a call, ``parent_call``), so a
tree is read top down by one query per run."""

from __future__ import annotations

from typing import Any

from cloudagents.domain.events import RunEvent
from cloudagents.domain.runs import RunRecord
from cloudagents.engine import calls as agent_calls
from cloudagents.engine import transitions
from cloudagents.runtime.deps import Deps

MAX_TREE_RUNS = 500


def node(run: RunRecord) -> dict[str, Any]:
    how = "call" if run.parent_call is not None else "handoff" if run.parent_run_id else None
    return {
        "run_id": run.run_id,
        "agent_id": run.agent_id,
        "status": run.status.value,
        "exit": run.result.exit.value if run.result else None,
        "how": how,
        "call_depth": run.call_depth,
        "total_tokens": run.progress.total_tokens,
        "cost_usd": run.progress.cost_usd,
        "children": [],
    }


async def run_tree(deps: Deps, run_id: str) -> dict[str, Any] | None:
    """The run and every run below it (at most ``MAX_TREE_RUNS``), children oldest first."""
    run = await deps.runs.get_run(run_id)
    if run is None:
        return None
    top = node(run)
    queue, seen = [top], {run.run_id}
    while queue and len(seen) < MAX_TREE_RUNS:
        current = queue.pop(0)
        children = await deps.runs.list_runs(parent_run_id=current["run_id"], limit=MAX_TREE_RUNS)
        for child in sorted(children, key=lambda r: (r.created_at, r.run_id)):
            if child.run_id in seen:
                continue
            seen.add(child.run_id)
            entry = node(child)
            current["children"].append(entry)
            queue.append(entry)
    top["runs"] = len(seen)
    return top


async def cancel_tree(deps: Deps, run_id: str, reason: str) -> RunRecord | None:
    """Cancel the run and the unfinished calls below it; a cancelled child's caller is told at
    once (its call gets the child's ``CANCELLED`` as an error result)."""
    run = await deps.runs.cancel_run(run_id, reason)
    if run is None:
        return None
    await deps.publish([*agent_calls.answer_parent(run), *transitions.answer_token(run)])
    for child in await deps.runs.list_runs(parent_run_id=run_id, limit=MAX_TREE_RUNS):
        if child.parent_call is not None and not child.finished:
            await cancel_tree(deps, child.run_id, f"{reason} (its caller {run_id} was cancelled)")
    return run


def tree_run_ids(tree: dict[str, Any]) -> list[str]:
    """The run ids of a ``run_tree``, top down."""
    return [tree["run_id"], *(i for child in tree["children"] for i in tree_run_ids(child))]


async def tree_events(deps: Deps, run_id: str) -> list[RunEvent]:
    """The events of the run and of every run below it, in time order (each names its run)."""
    tree = await run_tree(deps, run_id)
    if tree is None:
        return []
    events = [e for r in tree_run_ids(tree) for e in await deps.runs.events(r)]
    return sorted(events, key=lambda e: (e.timestamp, e.run_id, e.id))
