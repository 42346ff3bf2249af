"""``services/graph_worker/main.py`` through functions-framework's app: its routes, and bodies
that can never be applied answered 4xx (Cloud Tasks does not retry them). Running node tasks
and wake-ups needs Firestore: ``tests/integration/test_graphs_push.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from functions_framework.aio import create_asgi_app

from cloudagents.bootstrap import reset_deps
from cloudagents.topology import GRAPH_TASK_PATH, GRAPH_WAKE_PATH
from tests.services.conftest import ROOT


@pytest.fixture
async def worker(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("CLOUDAGENTS_BACKEND", "memory")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    monkeypatch.setenv("CLOUDAGENTS_PUSH_AUTH", "off")
    monkeypatch.setenv("CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES", "summarize")
    monkeypatch.setenv("CLOUDAGENTS_GRAPH_WORKER_URL", "http://svc")
    reset_deps()
    app = create_asgi_app("graph_worker", str(ROOT / "services" / "graph_worker" / "main.py"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://svc"
    ) as client:
        yield client
    reset_deps()


async def test_health_and_unknown_routes(worker: httpx.AsyncClient) -> None:
    assert (await worker.get("/healthz")).json() == {"status": "ok"}
    assert (await worker.post("/tasks/elsewhere", content=b"{}")).status_code == 404


@pytest.mark.parametrize("path", [GRAPH_TASK_PATH, GRAPH_WAKE_PATH])
async def test_a_body_that_is_no_task_is_rejected_and_not_retried(
    worker: httpx.AsyncClient, path: str
) -> None:
    response = await worker.post(path, content=b'{"workflow_id": 3}')
    assert response.status_code == 400
    assert response.json()["status"] == "rejected"
