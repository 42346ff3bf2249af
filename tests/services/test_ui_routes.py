"""The run viewer's files and its cookie, in process: ``/ui`` needs no token, its data does; the
``cloudagents_token`` cookie authenticates the stream routes only, and a WebSocket only from the
api's own origin."""

from __future__ import annotations

import httpx
import pytest

from cloudagents.runtime.app import ASGIApp
from cloudagents.runtime.ui import viewer_link
from tests.services.conftest import TOKEN
from tests.services.test_hub_graphql import GraphQLSession
from tests.services.test_streaming_services import (  # fixtures, used by name
    Stack,
    WebSocketSession,
    anonymous_api,
    finished_run,
    sse_events,
    stored_events,
    ws_app,
)

__all__ = ["anonymous_api", "ws_app"]
COOKIE = f"cloudagents_token={TOKEN}"


async def test_the_viewer_is_served_without_a_token_with_a_strict_policy(
    stack: Stack, anonymous_api: httpx.AsyncClient
) -> None:
    for path, kind in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/index.html", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ]:
        response = await anonymous_api.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    for path in ("/ui/../auth.py", "/ui/app.py", "/ui/nope.js", "/uix"):
        assert (await anonymous_api.get(path)).status_code in (401, 404), path
    assert (await anonymous_api.post("/ui")).status_code == 401  # only GET is public
    assert (await anonymous_api.get("/agents")).status_code == 401


async def test_the_cookie_opens_the_stream_routes_and_nothing_else(
    stack: Stack, anonymous_api: httpx.AsyncClient
) -> None:
    run_id = await finished_run(stack)
    stored = await stored_events(stack[0]["api"], run_id)
    headers = {"Cookie": COOKIE}
    for path in (f"/agent-stream/{run_id}", f"/runs/{run_id}/events/stream"):
        async with anonymous_api.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200, path
            received = [data async for _, _, data in sse_events(response)]
        assert [e["id"] for e in received] == [e["id"] for e in stored]
    wrong = {"Cookie": "cloudagents_token=wrong-token-0123456789abcdef"}
    assert (await anonymous_api.get(f"/agent-stream/{run_id}", headers=wrong)).status_code == 401
    for method, path in [
        ("GET", "/runs"),
        ("GET", f"/runs/{run_id}"),
        ("GET", f"/runs/{run_id}/events"),
        ("POST", f"/runs/{run_id}/cancel"),
        ("POST", "/runs"),
    ]:
        response = await anonymous_api.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path)
    assert (await stack[0]["api"].get(f"/runs/{run_id}")).json()["status"] == "finished"


async def test_a_websocket_takes_the_cookie_only_from_the_apis_own_origin(
    stack: Stack, ws_app: ASGIApp
) -> None:
    run_id = await finished_run(stack)
    stored = await stored_events(stack[0]["api"], run_id)
    path = f"/agent-stream/{run_id}"
    cookie = (b"cookie", COOKIE.encode())
    async with WebSocketSession(ws_app, path, headers=[cookie, (b"origin", b"http://svc")]) as ws:
        received = [event async for event in ws.events()]
    assert [e["id"] for e in received] == [e["id"] for e in stored]
    for origin in [(b"origin", b"https://evil.example"), (b"origin", b"http://svc.evil.example")]:
        async with WebSocketSession(ws_app, path, headers=[cookie, origin]) as ws:
            closed = await ws.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 4401, origin
    async with WebSocketSession(ws_app, path, headers=[cookie]) as ws:  # no Origin at all
        closed = await ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == 4401


async def test_a_graphql_websocket_takes_the_cookie_only_from_the_apis_own_origin(
    stack: Stack, ws_app: ASGIApp
) -> None:
    cookie = (b"cookie", COOKIE.encode())
    async with GraphQLSession(ws_app, headers=[cookie, (b"origin", b"http://svc")]) as session:
        assert (await session.init({}))["type"] == "websocket.send"  # connection_ack
        await session.send(
            {"id": "1", "type": "subscribe", "payload": {"query": "{ agents { id } }"}}
        )
        answer = await session.receive_json()
    assert answer["type"] == "next" and "errors" not in answer["payload"], answer
    async with GraphQLSession(ws_app, headers=[cookie]) as session:  # no Origin: no cookie
        closed = await session.init({})
    assert (closed["type"], closed["code"]) == ("websocket.close", 4403)
    # Another origin: strawberry itself refuses the handshake (its allowed_origins check).
    with pytest.raises(AssertionError, match=r"websocket\.close"):
        async with GraphQLSession(ws_app, headers=[cookie, (b"origin", b"https://evil.example")]):
            pass


def test_the_sign_in_link_carries_the_token_in_the_fragment_quoted() -> None:
    assert viewer_link("http://127.0.0.1:8080/", "a b+/&c") == (
        "http://127.0.0.1:8080/ui#token=a%20b%2B%2F%26c"
    )
    assert viewer_link("http://127.0.0.1:8080", None) == "http://127.0.0.1:8080/ui"
