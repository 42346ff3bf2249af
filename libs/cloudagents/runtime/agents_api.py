"""The api's routes for agents as data (seed 002): delete a definition, read its history, and
the execution history with its performance figures.

``DELETE /agents/{id}`` removes the definition (its history stays, ending with the deletion;
a run of it ends ``ERROR`` at its next step, "agent ... no longer exists"). ``GET
/agents/{id}/versions`` lists every version, oldest first, with the agent's ``created_at`` (its
first version) and ``updated_at`` (its last). ``GET /agents/{id}/executions`` lists the agent's
runs, newest first, each with its exit, wall-clock duration, iterations, tokens, cost and tool
calls, and its stored functions' executions; ``GET /runs/{id}/calls`` gives one run's every
model call (duration, tokens, cost, applied or discarded) and tool call (duration, error,
attempts), and its stored functions' executions. Authenticated and audited as the other routes.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudagents.runtime.audit import action_of, audit
from cloudagents.runtime.auth import Principal
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.routing import Param, Route


async def delete_agent_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    agent_id = params["agent_id"]
    if not await deps.agents.delete_agent(agent_id):
        return error(404, f"unknown agent {agent_id!r}")
    await audit(deps, action_of(request), principal, "allowed", 200, agent_id, "agent deleted")
    return JSONResponse({"deleted": agent_id})


async def agent_versions_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    agent_id = params["agent_id"]
    history = await deps.agents.agent_history(agent_id)
    if not history:
        return error(404, f"unknown agent {agent_id!r}")
    versions: list[dict[str, Any]] = [
        {**v.model_dump(mode="json"), "deleted": v.deleted} for v in history
    ]
    return JSONResponse(
        {
            "agent_id": agent_id,
            "created_at": history[0].created_at.isoformat(),
            "updated_at": history[-1].created_at.isoformat(),
            "deleted": history[-1].deleted,
            "versions": versions,
        }
    )


def _limit(request: Request, default: int) -> int | None:
    try:
        return min(max(int(request.query_params.get("limit", str(default))), 1), 500)
    except ValueError:
        return None


async def agent_executions_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    agent_id = params["agent_id"]
    limit = _limit(request, 50)
    if limit is None:
        return error(400, "limit must be an integer")
    runs = await deps.runs.list_runs(agent_id=agent_id, limit=limit)
    executions = await deps.functions.history(agent=agent_id, limit=limit)
    return JSONResponse(
        {
            "agent_id": agent_id,
            "runs": [
                {
                    "run_id": run.run_id,
                    "status": run.status.value,
                    "exit": run.result.exit.value if run.result else None,
                    "created_at": run.created_at.isoformat(),
                    "updated_at": run.updated_at.isoformat(),
                    "duration_s": (run.updated_at - run.created_at).total_seconds(),
                    **run.progress.model_dump(
                        mode="json",
                        include={
                            "iterations",
                            "total_tokens",
                            "prompt_tokens",
                            "completion_tokens",
                            "cost_usd",
                            "tool_calls",
                        },
                    ),
                    "functions": run.functions,
                }
                for run in runs
            ],
            "function_executions": [e.model_dump(mode="json") for e in executions],
        }
    )


async def agent_conversations_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    limit = _limit(request, 100)
    if limit is None:
        return error(400, "limit must be an integer")
    found = await deps.runs.list_conversations_for_agent(params["agent_id"], limit=limit)
    return JSONResponse(
        {
            "agent_id": params["agent_id"],
            "conversations": [c.model_dump(mode="json") for c in found],
        }
    )


async def run_calls_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    run = await deps.runs.get_run(params["run_id"])
    if run is None:
        return error(404, f"unknown run {params['run_id']!r}")
    model_calls = [
        {
            "seq": c.seq,
            "model": c.model,
            "duration_ms": c.duration_ms,
            "total_tokens": c.usage.total_tokens,
            "prompt_tokens": c.usage.prompt_tokens,
            "completion_tokens": c.usage.completion_tokens,
            "cost_usd": c.cost_usd,
            "applied": c.applied,
        }
        for c in await deps.runs.model_calls(run.run_id)
    ]
    tool_calls: list[dict[str, Any]] = []
    for step in await deps.runs.interactions(run.run_id):
        if not step.tool_calls:
            continue
        for call in await deps.runs.tool_calls(run.run_id, step.seq):
            took = None
            if call.started_at is not None and call.finished_at is not None:
                took = (call.finished_at - call.started_at).total_seconds() * 1000
            tool_calls.append(
                {
                    "seq": call.seq,
                    "index": call.index,
                    "tool": call.call.name,
                    "status": call.status,
                    "duration_ms": took,
                    "is_error": call.is_error,
                    "attempts": call.attempts,
                }
            )
    executions = [
        e.model_dump(mode="json")
        for e in await deps.functions.history(agent=run.agent_id, limit=500)
        if e.run_id == run.run_id
    ]
    return JSONResponse(
        {
            "run_id": run.run_id,
            "model_calls": model_calls,
            "tool_calls": tool_calls,
            "function_executions": executions,
        }
    )


# fmt: off
AGENT_HISTORY_ROUTES: list[Route] = [
    Route("DELETE", "/agents/{agent_id}", delete_agent_route,
          "Delete an agent (its history stays, ending with the deletion)", (200, 401, 404)),
    Route("GET", "/agents/{agent_id}/versions", agent_versions_route,
          "Every version of an agent's definition, with created_at and updated_at",
          (200, 401, 404)),
    Route("GET", "/agents/{agent_id}/executions", agent_executions_route,
          "The agent's runs with their figures, and its stored functions' executions",
          (200, 400, 401), params=(Param("limit", {"type": "integer", "minimum": 1,
                                                    "maximum": 500}),)),
    Route("GET", "/agents/{agent_id}/conversations", agent_conversations_route,
          "The agent's conversations, most recently updated first (seed 004)",
          (200, 400, 401), params=(Param("limit", {"type": "integer", "minimum": 1,
                                                    "maximum": 500}),)),
    Route("GET", "/runs/{run_id}/calls", run_calls_route,
          "Every model and tool call of a run, with durations, tokens and cost", (200, 401, 404)),
]
# fmt: on
