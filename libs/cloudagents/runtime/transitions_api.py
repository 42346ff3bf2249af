"""The api's routes for seed 004's workflows of places and tokens (``runtime/transitions.py``).

``POST /transition-workflows`` registers a ``WorkflowDefinition`` (422 lists each problem's
``loc`` and ``msg``: a bad definition, an unknown agent, a mapping its schemas refuse) and
schedules a place agent that is new or changed for the tokens already in its place; ``POST
/tokens`` creates a token in a place; ``POST /tokens/{id}/fire`` fires a transition (202: the
token moved, or its agent runs); ``GET /tokens/{id}`` shows it with its history; ``GET
/tokens/{id}/executions`` lists its agent executions (seed 004's ``list_executions_for_token``).
Authenticated and audited as the other routes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudagents.domain.transitions import WorkflowDefinition
from cloudagents.runtime.audit import action_of, audit
from cloudagents.runtime.auth import Principal
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.routing import Route
from cloudagents.runtime.transition_definitions import (
    CreateTokenRequest,
    FireRequest,
    register_workflow,
)
from cloudagents.runtime.transitions import Transitions, create_token


async def _body(request: Request) -> object:
    from cloudagents.runtime.api import _json_body

    return await _json_body(request)


async def put_workflow_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    workflow = WorkflowDefinition.model_validate(await _body(request))
    previous = await register_workflow(deps, principal, workflow, action=action_of(request))
    # Seed 004's "enters or exists in": a place agent new to a place runs on its tokens too.
    await Transitions(deps).redefined(previous, workflow)
    return JSONResponse(workflow.model_dump(mode="json"), status_code=201)


async def list_workflows_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    found = await deps.transitions.list_workflows()
    return JSONResponse({"workflows": [w.model_dump(mode="json") for w in found]})


async def get_workflow_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import one

    workflow_id = params["workflow_id"]
    return one(await deps.transitions.get_workflow(workflow_id), "workflow", workflow_id)


async def create_token_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    body = CreateTokenRequest.model_validate(await _body(request))
    token, created = await create_token(deps, body)
    status = 201 if created else 200
    what = "token created" if created else "token found (the same request again)"
    await audit(deps, action_of(request), principal, "allowed", status, token.token_id, what)
    return JSONResponse(token.model_dump(mode="json"), status_code=status)


async def get_token_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    token = await deps.transitions.get_token(params["token_id"])
    if token is None:
        return error(404, f"unknown token {params['token_id']!r}")
    history = await deps.transitions.history(token.token_id)
    return JSONResponse(
        {**token.model_dump(mode="json"), "history": [h.model_dump(mode="json") for h in history]}
    )


async def fire_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    body = FireRequest.model_validate(await _body(request))
    fired = await Transitions(deps).fire(params["token_id"], body.transition_id, body.version)
    await audit(
        deps,
        action_of(request),
        principal,
        "allowed",
        202,
        params["token_id"],
        f"fire {body.transition_id}: {fired.status}",
    )
    return JSONResponse(
        {
            "status": fired.status,
            "execution_id": fired.execution_id,
            "token": fired.token.model_dump(mode="json"),
        },
        status_code=202,
    )


async def token_executions_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    token_id = params["token_id"]
    if await deps.transitions.get_token(token_id) is None:
        return error(404, f"unknown token {token_id!r}")
    found = await deps.transitions.list_executions_for_token(token_id)
    return JSONResponse(
        {"token_id": token_id, "executions": [e.model_dump(mode="json") for e in found]}
    )


# fmt: off
TRANSITION_ROUTES: list[Route] = [
    Route("POST", "/transition-workflows", put_workflow_route,
          "Register a workflow of places, transitions and place agents (seed 004)",
          (201, 400, 401, 422), body=WorkflowDefinition),
    Route("GET", "/transition-workflows", list_workflows_route,
          "List the workflows of places and transitions", (200, 401)),
    Route("GET", "/transition-workflows/{workflow_id}", get_workflow_route,
          "One workflow of places and transitions", (200, 401, 404)),
    Route("POST", "/tokens", create_token_route,
          "Create a token in a place of a workflow (200: the same request again)",
          (200, 201, 400, 401, 404, 409, 422), body=CreateTokenRequest),
    Route("GET", "/tokens/{token_id}", get_token_route,
          "A token: its place, data, metadata, firing and history", (200, 401, 404)),
    Route("POST", "/tokens/{token_id}/fire", fire_route,
          "Fire a transition on a token (its agent runs, then the token moves)",
          (202, 400, 401, 404, 409, 422), body=FireRequest),
    Route("GET", "/tokens/{token_id}/executions", token_executions_route,
          "The token's agent executions (list_executions_for_token)", (200, 401, 404)),
]
# fmt: on
