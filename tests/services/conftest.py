"""Each service's ``main.py`` through functions-framework's ASGI app, on the in-memory backend.

All four apps run in this process and share one ``Deps``, so a ``Pump`` can deliver what one
service publishes to the next as golden Pub/Sub push bodies, the way the emulator would.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from functions_framework.aio import create_asgi_app

from cloudagents.adapters.memory.messaging import InMemoryEventBus, PublishedMessage
from cloudagents.bootstrap import get_deps, reset_deps
from cloudagents.runtime.deps import Deps

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"
OUTSIDER_TOKEN = "outsider-token-0123456789abcdef"
SERVICES = ("api", "run_executor", "tool_invoker", "handoff_broker", "context_snapshotter")


def push_body(message: PublishedMessage, subscription: str) -> dict[str, Any]:
    """The JSON a Pub/Sub push subscription POSTs (as the emulator sends it)."""
    return {
        "message": {
            "data": base64.b64encode(message.data).decode(),
            "attributes": message.attributes,
            "messageId": message.message_id,
            "message_id": message.message_id,
            "publishTime": "2026-11-22T00:00:00Z",
        },
        "subscription": f"projects/test-project/subscriptions/{subscription}",
    }


class Pump:
    """Delivers published messages to the subscribed service until the bus is quiet."""

    def __init__(self, deps: Deps, clients: dict[str, httpx.AsyncClient]) -> None:
        self.deps = deps
        self.clients = clients
        self.cursor = 0
        self.responses: list[tuple[str, int, dict[str, Any]]] = []

    @property
    def bus(self) -> InMemoryEventBus:
        assert isinstance(self.deps.bus, InMemoryEventBus)
        return self.deps.bus

    async def deliver(self, message: PublishedMessage) -> bool:
        """Push to every subscription of the topic; ``False`` if any asked for redelivery."""
        acked = True
        for sub in self.deps.topology.subscriptions:
            if sub.topic == message.topic:
                response = await self.clients[sub.service].post(
                    sub.path, json=push_body(message, sub.name)
                )
                self.responses.append((sub.name, response.status_code, response.json()))
                acked = acked and response.status_code < 300
        return acked

    async def run(self, limit: int = 500) -> int:
        """Deliver until quiet; a nacked message goes to the back of the queue, as a redelivery."""
        delivered = 0
        retry: list[PublishedMessage] = []
        while self.cursor < len(self.bus.published) or retry:
            if self.cursor < len(self.bus.published):
                message = self.bus.published[self.cursor]
                self.cursor += 1
            else:
                message = retry.pop(0)
            if not await self.deliver(message):
                retry.append(message)
            delivered += 1
            assert delivered < limit, "message loop did not settle"
        return delivered


@pytest.fixture
async def stack(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[dict[str, httpx.AsyncClient], Pump]]:
    monkeypatch.setenv("CLOUDAGENTS_BACKEND", "memory")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    monkeypatch.setenv("CLOUDAGENTS_WORKSPACE", "agents")
    monkeypatch.setenv("CLOUDAGENTS_BROKER_URL", "http://svc")
    monkeypatch.setenv("CLOUDAGENTS_WAKE_URL", "http://svc")
    monkeypatch.setenv("CLOUDAGENTS_PUSH_AUTH", "off")
    monkeypatch.setenv("CLOUDAGENTS_API_TOKENS", f"tester={TOKEN},outsider={OUTSIDER_TOKEN}")
    reset_deps()
    clients = service_clients()
    deps = await get_deps()
    yield clients, Pump(deps, clients)
    for client in clients.values():
        await client.aclose()
    reset_deps()


def service_clients() -> dict[str, httpx.AsyncClient]:
    """An HTTP client on each service's functions-framework app (the api's with a token)."""
    clients = {}
    for name in SERVICES:
        app = create_asgi_app(name, str(ROOT / "services" / name / "main.py"))
        headers = {"Authorization": f"Bearer {TOKEN}"} if name == "api" else {}
        clients[name] = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://svc", headers=headers
        )
    return clients


def scripted_agent(agent_id: str = "calc", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": agent_id,
        "instructions": "You do arithmetic with the calculator.",
        "model": {
            "provider": "scripted",
            "name": "scripted-demo",
            "script": [
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                {"content": "6*7 = 42"},
            ],
        },
        "tools": ["calculator"],
    }
    data.update(overrides)
    return data


def as_json(value: Any) -> str:
    return json.dumps(value)
