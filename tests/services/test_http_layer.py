"""The HTTP layer in one place: the OpenAPI document is the route table (every route documented,
nothing documented that is not routed), validates as OpenAPI 3.1, and every operation it lists
answers, through the api's ASGI app, with a status it documents; Swagger UI at ``/docs`` is
served by the api itself, no outside URL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from cloudagents.bootstrap import get_deps
from cloudagents.runtime.api import ROUTES
from cloudagents.runtime.app import build_api_app
from tests.services.conftest import TOKEN, Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]
API_SOURCE = Path(__file__).resolve().parents[2] / "services" / "api" / "main.py"
# The paths the hand-kept document listed before it was generated, plus the files now routed
# there: none may go missing from the table.
DOCUMENTED_BEFORE = {
    ("/healthz", "get"),
    ("/runs", "post"),
    ("/runs", "get"),
    ("/runs/{run_id}", "get"),
    ("/runs/{run_id}/cancel", "post"),
    ("/runs/{run_id}/tree", "get"),
    ("/runs/{run_id}/messages", "get"),
    ("/runs/{run_id}/events", "get"),
    ("/runs/{run_id}/events/stream", "get"),
    ("/runs/{run_id}/events/ws", "get"),
    ("/agent-stream/{run_id}", "get"),
    ("/graphql", "post"),
    ("/agents", "post"),
    ("/agents", "get"),
    ("/agents/{agent_id}", "get"),
    ("/handoffs/{offer_id}", "get"),
    ("/runs/{run_id}/approvals", "get"),
    ("/runs/{run_id}/approvals/{approval_id}", "get"),
    ("/runs/{run_id}/approvals/{approval_id}", "post"),
    ("/approvals", "get"),
    ("/dead-letters", "get"),
    ("/dead-letters/{letter_id}", "get"),
    ("/dead-letters/{letter_id}/replay", "post"),
}
NEW = {("/openapi.json", "get"), ("/docs", "get"), ("/docs/{file}", "get"), ("/ui", "get")}
BODIES: dict[tuple[str, str], Any] = {
    ("/runs", "post"): {"agent_id": "no-such-agent", "message": "hi"},
    ("/agents", "post"): scripted_agent("documented"),
    ("/runs/{run_id}/approvals/{approval_id}", "post"): {"decision": "approve"},
    ("/graphql", "post"): {"query": "{ __typename }"},
}


@pytest.fixture
def api() -> httpx.AsyncClient:
    """The api as ``services/api/main.py:asgi_app`` serves it (GraphQL and WebSockets too)."""
    app = build_api_app(API_SOURCE, lambda: get_deps("api"))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://svc",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=20.0,
    )


def without_token(api: httpx.AsyncClient) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=api._transport, base_url="http://svc")


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item}


def example_path(path: str, operation: dict[str, Any]) -> str:
    """The template with each parameter filled: the first value of an enum, else an id."""
    for param in operation.get("parameters", []):
        if param["in"] == "path":
            value = param["schema"].get("enum", ["no-such-id"])[0]
            path = path.replace("{" + param["name"] + "}", value)
    assert "{" not in path, path
    return path


async def test_the_document_is_the_route_table_and_valid_openapi_3_1(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    response = await without_token(api).get("/openapi.json")
    assert response.status_code == 200  # public
    document = response.json()
    validate(document)  # openapi-spec-validator: raises on an invalid OpenAPI 3.1 document
    assert document["openapi"] == "3.1.0"
    routed = {(r.path, r.method.lower()) for r in ROUTES}
    assert operations(document) == routed
    assert sum(len(item) for item in document["paths"].values()) == len(ROUTES)
    assert routed >= DOCUMENTED_BEFORE | NEW
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for path, item in document["paths"].items():
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{([a-z_]+)\}", path)), (method, path)
            public = operation.get("security") == []
            assert public or "401" in operation["responses"], (method, path)
    schemas = document["components"]["schemas"]
    for name in ("StartRunRequest", "AgentDefinition", "DecideApprovalRequest", "Error"):
        assert name in schemas
    start = document["paths"]["/runs"]["post"]["requestBody"]["content"]["application/json"]
    assert start["schema"] == {"$ref": "#/components/schemas/StartRunRequest"}
    assert set(schemas["StartRunRequest"]["required"]) == {"agent_id", "message"}


async def test_every_documented_operation_answers_a_status_it_documents(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    document = (await api.get("/openapi.json")).json()
    anonymous = without_token(api)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            url = example_path(path, operation)
            documented = {int(code) for code in operation["responses"]}
            body = BODIES.get((path, method))
            sent = await api.request(method, url, json=body)
            assert sent.status_code in documented, (method, url, sent.status_code, sent.text)
            if sent.status_code == 404 and "json" in sent.headers.get("content-type", ""):
                assert not sent.json()["error"].startswith("no route"), (method, url)
            bare = await anonymous.request(method, url, json=body)
            expected = sent.status_code if operation.get("security") == [] else 401
            assert bare.status_code == expected, (method, url, bare.status_code)
    assert (await api.delete("/runs")).json()["error"] == "method DELETE not allowed; use POST, GET"
    assert (await api.get("/runs/..")).status_code == 404  # not a usable id: refused by the router
    assert (await api.head("/ui")).status_code == 200  # public files answer HEAD
    assert (await api.head("/runs")).status_code == 405  # the rest do not


async def test_swagger_ui_at_docs_is_served_by_the_api_with_no_outside_url(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    anonymous = without_token(api)
    for path in ("/docs", "/docs/"):
        page = await anonymous.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"(https?:)?//[a-z0-9]", page.text, re.I)  # no CDN, no other origin
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "<script>" not in page.text  # no inline script
    assets = re.findall(r'(?:src|href)="(/docs/[^"]+)"', page.text)
    assert {"/docs/swagger-ui-bundle.js", "/docs/docs.js", "/docs/swagger-ui.css"} <= set(assets)
    for asset in assets:
        response = await anonymous.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 100, asset
    bundle = await anonymous.get("/docs/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content
    start = (await anonymous.get("/docs/docs.js")).text
    assert '"/openapi.json"' in start and "validatorUrl: null" in start
    for missing in ("/docs/index.j2", "/docs/swagger-editor.js", "/docs/..", "/docs/a/b"):
        assert (await anonymous.get(missing)).status_code in (401, 404), missing
    assert (await anonymous.post("/docs")).status_code == 401  # only GET is public
