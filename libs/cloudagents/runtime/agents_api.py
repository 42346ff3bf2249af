"""The api's routes for agents as data (seed 002): delete a definition, read its history.

``DELETE /agents/{id}`` removes the definition (its history stays, ending with the deletion;
a run of it ends ``ERROR`` at its next step, "agent ... no longer exists"). ``GET
/agents/{id}/versions`` lists every version, oldest first, with the agent's ``created_at`` (its
first version) and ``updated_at`` (its last). Authenticated and audited as the other routes.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudagents.runtime.auth import Principal
from cloudagents.runtime.deps import Deps


async def delete_agent_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import audit, error

    agent_id = params["agent_id"]
    if not await deps.agents.delete_agent(agent_id):
        return error(404, f"unknown agent {agent_id!r}")
    await audit(deps, request, principal, "allowed", 200, agent_id, "agent deleted")
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


AGENT_HISTORY_ROUTES = [
    ("DELETE", re.compile(r"^/agents/(?P<agent_id>[^/]+)$"), delete_agent_route),
    ("GET", re.compile(r"^/agents/(?P<agent_id>[^/]+)/versions$"), agent_versions_route),
]


def agent_history_paths(responses: Any, path_param: Any) -> dict[str, Any]:
    """The OpenAPI operations of these routes (``openapi.py`` merges them)."""
    agent = [path_param("agent_id")]
    return {
        "/agents/{agent_id}": {
            "delete": {"parameters": agent, "responses": responses(200, 401, 404)}
        },
        "/agents/{agent_id}/versions": {
            "get": {"parameters": agent, "responses": responses(200, 401, 404)}
        },
    }
