"""The api's OpenAPI 3.1 document, built from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from cloudagents.domain.agents import AgentDefinition

_ID_PARAM = {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,300}$"}
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


_TOKEN_PARAM: dict[str, Any] = {
    "name": "token",
    "in": "query",
    "description": "the bearer token, for clients that cannot set headers (EventSource)",
    "schema": {"type": "string"},
}


def _responses(*codes: int, ok: str = "OK") -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for code in codes:
        if code < 400:
            responses[str(code)] = {
                "description": ok,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        else:
            responses[str(code)] = {
                "description": "error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
    return responses


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID_PARAM}


@cache
def openapi_document() -> dict[str, Any]:
    from cloudagents.runtime.api import DecideApprovalRequest, StartRunRequest

    start = _schema(StartRunRequest)
    agent = _schema(AgentDefinition)
    decide = _schema(DecideApprovalRequest)
    components: dict[str, Any] = {"Error": _ERROR}
    for schema in (start, agent, decide):
        components.update(schema.pop("$defs", {}))
    components["StartRunRequest"] = start
    components["AgentDefinition"] = agent
    components["DecideApprovalRequest"] = decide
    approval_params = [_path_param("run_id"), _path_param("approval_id")]
    auth: list[dict[str, list[str]]] = [{"bearer": []}]
    run_param = [_path_param("run_id")]
    return {
        "openapi": "3.1.0",
        "info": {"title": "cloudagents api", "version": "0.1.0"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": auth,
        "paths": {
            "/healthz": {"get": {"security": [], "responses": _responses(200)}},
            "/runs": {
                "post": {
                    "summary": "Start a run (202 with its id)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/StartRunRequest"}
                            }
                        },
                    },
                    "responses": _responses(202, 400, 401, 403, 404, 409, 422),
                },
                "get": {
                    "summary": "List runs",
                    "parameters": [
                        {"name": "agent", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": [
                                    "queued",
                                    "running",
                                    "waiting_tools",
                                    "waiting_approval",
                                    "finished",
                                ],
                            },
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                    ],
                    "responses": _responses(200, 400, 401),
                },
            },
            "/runs/{run_id}": {
                "get": {"parameters": run_param, "responses": _responses(200, 401, 404)}
            },
            "/runs/{run_id}/cancel": {
                "post": {"parameters": run_param, "responses": _responses(200, 401, 404)}
            },
            "/conversations/{conversation_id}": {
                "get": {
                    "summary": "A conversation: its runs, its holder and its messages",
                    "parameters": [_path_param("conversation_id")],
                    "responses": _responses(200, 401, 404),
                }
            },
            "/runs/{run_id}/tree": {
                "get": {
                    "summary": "The run and the runs below it (calls and handoffs)",
                    "parameters": run_param,
                    "responses": _responses(200, 401, 404),
                }
            },
            "/runs/{run_id}/messages": {
                "get": {"parameters": run_param, "responses": _responses(200, 401, 404)}
            },
            "/runs/{run_id}/events": {
                "get": {
                    "parameters": [
                        *run_param,
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": _responses(200, 401, 404),
                }
            },
            "/runs/{run_id}/events/stream": {
                "get": {
                    "summary": "Server-Sent Events of the run, from Last-Event-ID or ?after=",
                    "parameters": [
                        *run_param,
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                        _TOKEN_PARAM,
                    ],
                    "responses": {
                        "200": {
                            "description": "event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_responses(401, 404),
                    },
                }
            },
            "/runs/{run_id}/events/ws": {
                "get": {
                    "summary": "WebSocket of the run's stored events (JSON per message), from "
                    "?after=; auth by Authorization or ?token=; plain HTTP gets 426",
                    "parameters": [
                        *run_param,
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                        _TOKEN_PARAM,
                    ],
                    "responses": {
                        "101": {"description": "switching to the WebSocket protocol"},
                        **_responses(401, 404, 426),
                    },
                }
            },
            "/agent-stream/{run_id}": {
                "get": {
                    "summary": "Seed 004's stream: unnamed SSE events of the run's events as "
                    "AgentStreamEvent JSON (eventType, content, ...); a WebSocket on the same path",
                    "parameters": [
                        *run_param,
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                        _TOKEN_PARAM,
                    ],
                    "responses": {
                        "200": {
                            "description": "event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_responses(401, 404),
                    },
                }
            },
            "/graphql": {
                "post": {
                    "summary": "GraphQL (agents, runs, messages, events; startRun, cancelRun); "
                    "subscriptions over graphql-transport-ws on the same path",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["query"],
                                    "properties": {
                                        "query": {"type": "string"},
                                        "variables": {"type": ["object", "null"]},
                                        "operationName": {"type": ["string", "null"]},
                                    },
                                }
                            }
                        },
                    },
                    "responses": _responses(200, 400, 401),
                }
            },
            "/agents": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/AgentDefinition"}
                            }
                        },
                    },
                    "responses": _responses(201, 400, 401, 422),
                },
                "get": {"responses": _responses(200, 401)},
            },
            "/agents/{agent_id}": {
                "get": {
                    "parameters": [_path_param("agent_id")],
                    "responses": _responses(200, 401, 404),
                }
            },
            "/handoffs/{offer_id}": {
                "get": {
                    "parameters": [_path_param("offer_id")],
                    "responses": _responses(200, 401, 404),
                }
            },
            "/runs/{run_id}/approvals": {
                "get": {
                    "summary": "A run's approvals",
                    "parameters": run_param,
                    "responses": _responses(200, 401, 404),
                }
            },
            "/runs/{run_id}/approvals/{approval_id}": {
                "get": {"parameters": approval_params, "responses": _responses(200, 401, 404)},
                "post": {
                    "summary": "Approve or reject a gated tool call (409: already decided)",
                    "parameters": approval_params,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/DecideApprovalRequest"}
                            }
                        },
                    },
                    "responses": _responses(200, 400, 401, 403, 404, 409, 422),
                },
            },
            "/approvals": {
                "get": {
                    "summary": "Approvals across runs (the inbox)",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": ["pending", "approved", "rejected", "expired"],
                            },
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                    ],
                    "responses": _responses(200, 400, 401),
                }
            },
            "/dead-letters": {"get": {"responses": _responses(200, 401)}},
            "/dead-letters/{letter_id}": {
                "get": {
                    "parameters": [_path_param("letter_id")],
                    "responses": _responses(200, 401, 404),
                }
            },
            "/dead-letters/{letter_id}/replay": {
                "post": {
                    "parameters": [_path_param("letter_id")],
                    "responses": _responses(202, 401, 404, 409),
                }
            },
        },
    }
