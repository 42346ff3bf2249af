"""Authentication and authorisation on the api and the push endpoints."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from cloudagents.adapters.memory.stores import InMemoryAuditStore, InMemoryRunStore
from cloudagents.bootstrap import get_deps
from cloudagents.runtime.auth import parse_tokens, push_auth_disabled
from cloudagents.settings import Settings
from tests.services.conftest import OUTSIDER_TOKEN, Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]


async def test_unauthenticated_requests_get_401_and_leave_only_an_audit_record(
    stack: Stack,
) -> None:
    clients, pump = stack
    anonymous = httpx.AsyncClient(transport=clients["api"]._transport, base_url="http://svc")
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": "Basic x"},
    ):
        response = await anonymous.post(
            "/runs", json={"agent_id": "calc", "message": "hi"}, headers=headers
        )
        assert response.status_code == 401
    assert (await anonymous.get("/runs")).status_code == 401
    assert (await anonymous.get("/healthz")).status_code == 200
    runs, audit = pump.deps.runs, pump.deps.audit
    assert isinstance(runs, InMemoryRunStore) and isinstance(audit, InMemoryAuditStore)
    assert runs.runs == {} and pump.bus.published == []
    assert [r.outcome for r in audit.records] == ["unauthenticated"] * 4
    assert audit.records[0].action == "POST /runs" and audit.records[0].principal is None


async def test_callers_outside_allowed_callers_get_403(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await api.post("/agents", json=scripted_agent("private", allowed_callers=["tester"]))
    outsider = {"Authorization": f"Bearer {OUTSIDER_TOKEN}"}
    refused = await api.post(
        "/runs", json={"agent_id": "private", "message": "hi"}, headers=outsider
    )
    assert refused.status_code == 403
    assert refused.json()["error"] == "outsider may not start runs of agent 'private'"
    allowed = await api.post("/runs", json={"agent_id": "private", "message": "hi"})
    assert allowed.status_code == 202
    audit = pump.deps.audit
    assert isinstance(audit, InMemoryAuditStore)
    assert [(r.outcome, r.principal) for r in audit.records][-2:] == [
        ("denied", "outsider"),
        ("allowed", "tester"),
    ]
    run = (await api.get(f"/runs/{allowed.json()['run_id']}")).json()
    assert run["principal"] == "tester"


async def test_push_without_oidc_token_is_refused_when_verification_is_on(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients, pump = stack
    monkeypatch.setattr(
        pump.deps, "settings", dataclasses.replace(pump.deps.settings, push_auth="oidc")
    )
    response = await clients["run_executor"].post("/pubsub/steps", json={"message": {"data": ""}})
    assert response.status_code == 401
    assert response.json()["error"] == "push request without an OIDC token"


def test_push_auth_switch_is_honoured_only_on_emulators_or_memory() -> None:
    production = Settings.from_env(
        {"GOOGLE_CLOUD_PROJECT": "prod-project", "CLOUDAGENTS_PUSH_AUTH": "off"}
    )
    assert not push_auth_disabled(production)
    emulated = Settings.from_env(
        {
            "GOOGLE_CLOUD_PROJECT": "prod-project",
            "CLOUDAGENTS_PUSH_AUTH": "off",
            "PUBSUB_EMULATOR_HOST": "127.0.0.1:1",
        }
    )
    assert push_auth_disabled(emulated)
    memory = Settings.from_env({"CLOUDAGENTS_BACKEND": "memory", "CLOUDAGENTS_PUSH_AUTH": "off"})
    assert push_auth_disabled(memory)


def test_token_parsing() -> None:
    assert parse_tokens(("alice=0123456789abcdef0", "fedcba98765432100")) == {
        "0123456789abcdef0": "alice",
        "fedcba98765432100": "token-2",
    }
    with pytest.raises(ValueError, match="shorter than 16"):
        parse_tokens(("bob=short",))


async def test_openapi_document_is_public_and_lists_the_routes(stack: Stack) -> None:
    clients, _ = stack
    anonymous = httpx.AsyncClient(transport=clients["api"]._transport, base_url="http://svc")
    document = (await anonymous.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    assert {"/runs", "/runs/{run_id}", "/agents", "/handoffs/{offer_id}"} <= set(document["paths"])


async def test_ids_firestore_cannot_store_are_404_not_500(stack: Stack) -> None:
    clients, _ = stack
    for bad in ("..", "__reserved__", "a" * 400):
        assert (await clients["api"].get(f"/runs/{bad}")).status_code == 404
    await get_deps()
