"""The graph worker service (push-dispatched node types, Cloud Tasks) beside a pull worker, on
the emulators: ``LocalStack(graph_push_node_types=...)`` starts the service with a queue per
node type and band, importing ``tests/integration/graph_push_nodes.py``.

* A graph whose ``plan``, ``b`` run on the service and ``a``, ``merge`` on a
  ``DistributedWorker`` ends in the state the in-process ``Orchestrator`` gives.
* A run started through the api, of a graph of push node types only, completes with nothing
  but the services running (the api sends superstep 0 as Cloud Tasks).
* A push task whose delivery dies after claiming (the node SIGKILLs the service's worker
  process, and the emulator does not retry the failed delivery) is finished through the
  superstep wake-up at lease expiry, with no orchestrator tending the run and no pull worker
  sweeping: each node's result applied once.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest

from cloudagents.graphs import Orchestrator
from cloudagents.graphs.agents import child_run_id
from cloudagents.graphs.distributed import DistributedOrchestrator, DistributedWorker
from cloudagents.local.stack import LocalStack
from tests.integration import graph_push_nodes as nodes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 3.0
DISPATCH_SECONDS = 2.0


@pytest.fixture(scope="module")
def executions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("graph-push-executions")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, executions_dir: Path) -> Iterator[LocalStack]:
    local = LocalStack(
        project="gpush-project",
        workspace="gpush",
        log_dir=tmp_path_factory.mktemp("graph-push-logs"),
        graph_push_node_types=nodes.PUSHED,
        graph_modules=["tests.integration.graph_push_nodes"],
        extra_env={
            "PYTHONPATH": str(ROOT),
            "GRAPH_PUSH_EXECUTIONS": str(executions_dir),
            "CLOUDAGENTS_GRAPH_LEASE_SECONDS": str(LEASE_SECONDS),
        },
        service_env={"graph_worker": {"GRAPH_PUSH_CRASH": "1"}},
        # A failed delivery is dropped, not retried: only the wake-up can finish its task (a
        # retry would find the dead delivery's lease held and only acknowledge, unless it came
        # after the lease, which a slow respawn on a busy machine can make it do).
        tasks_max_retries=0,
    )
    with patch.dict(os.environ):  # the stack exports its environment to this process
        local.start()
        try:
            yield local
        finally:
            local.stop()


async def _run_until_done(orchestrator: DistributedOrchestrator, wid: str, seconds: float) -> Any:
    """Poll the run document only: nothing in this process tends the run."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = await orchestrator.store.get_run(wid)
        if run is not None and run.status != "running":
            return run
        await asyncio.sleep(0.2)
    raise AssertionError(f"workflow {wid} did not finish in {seconds}s")


async def test_push_and_pull_node_types_reach_the_in_process_state(
    stack: LocalStack, executions_dir: Path
) -> None:
    graph = nodes.mixed_graph()
    expected = await Orchestrator(registry=nodes.registry).execute(
        graph, initial_state={"topic": "tides"}
    )
    worker = DistributedWorker(
        worker_id="pull-1",
        node_types={"a", "merge"},
        registry=nodes.registry,
        heartbeat_interval=1.0,
        workspace=stack.workspace,
        sweep=False,
    )
    orchestrator = DistributedOrchestrator(
        workspace=stack.workspace, registry=nodes.registry, dispatch_timeout=DISPATCH_SECONDS
    )
    await worker.start()
    await orchestrator.connect()
    try:
        wid = f"mixed-{uuid.uuid4().hex[:6]}"
        await orchestrator.start(graph, {"topic": "tides"}, workflow_id=wid)
        run = await _run_until_done(orchestrator, wid, seconds=90)
        ids = ["0000-plan", "0001-a", "0001-b", "0002-merge"]
        tasks = await orchestrator.store.tasks(wid, ids)
    finally:
        await orchestrator.close()
        await worker.stop()
    assert run.status == "completed", run.checkpoint.error
    assert run.checkpoint.state == dict(expected)
    # Push node types ran on the service, pull node types on the pull worker.
    finished_by = {t.task.node: t.finished_by or "" for t in tasks.values()}
    assert finished_by["a"] == finished_by["merge"] == "pull-1"
    assert finished_by["plan"].startswith("push-") and finished_by["b"].startswith("push-")
    assert sorted(nodes.executions(wid)) == ["a", "b", "merge", "plan"]


async def test_a_run_started_by_the_api_runs_on_the_service_alone(stack: LocalStack) -> None:
    state = stack.state()
    headers = {"Authorization": f"Bearer {state.api_token}"}
    graph = json.loads(nodes.push_only_graph().compile().to_json())
    wid = f"api-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=state.api_url, headers=headers, timeout=30) as api:
        registered = await api.post("/workflows", json=graph)
        assert registered.status_code == 201, registered.text
        started = await api.post(
            f"/workflows/{registered.json()['hash']}/runs",
            json={"initial_state": {"topic": "reefs"}, "workflow_id": wid, "priority": "high"},
        )
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 60
        while (view := (await api.get(f"/workflow-runs/{wid}")).json())["status"] == "running":
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.2)
    assert view["status"] == "completed", view
    assert view["state"] == {"topic": "REEFS", "parts": ["b:REEFS"], "log": ["plan@0", "b@1"]}


async def test_an_agent_node_on_the_service_starts_its_child_run_once(stack: LocalStack) -> None:
    state = stack.state()
    headers = {"Authorization": f"Bearer {state.api_token}"}
    async with httpx.AsyncClient(base_url=state.api_url, headers=headers, timeout=30) as api:
        agent = await api.post("/agents", json=nodes.summariser())
        assert agent.status_code in (200, 201), agent.text
    orchestrator = DistributedOrchestrator(
        workspace=stack.workspace, registry=nodes.registry, dispatch_timeout=DISPATCH_SECONDS
    )
    await orchestrator.connect()
    try:
        wid = f"agent-{uuid.uuid4().hex[:6]}"
        await orchestrator.start(nodes.agent_graph(), {"topic": "kelp"}, workflow_id=wid)
        run = await _run_until_done(orchestrator, wid, seconds=90)
        summary = await orchestrator.store.get_task(wid, "0001-summary")
    finally:
        await orchestrator.close()
    assert run.status == "completed", run.checkpoint.error
    assert run.checkpoint.state["summary"] == "A short summary."
    assert summary is not None and (summary.finished_by or "").startswith("push-")
    async with httpx.AsyncClient(base_url=state.api_url, headers=headers, timeout=30) as api:
        child = await api.get(f"/runs/{child_run_id(wid, '0001-summary', 1)}")
        second = await api.get(f"/runs/{child_run_id(wid, '0001-summary', 2)}")
    assert child.status_code == 200 and child.json()["graph_task"]["workflow_id"] == wid
    assert second.status_code == 404


async def test_a_push_task_whose_delivery_died_is_finished_by_the_wake_up(
    stack: LocalStack,
) -> None:
    orchestrator = DistributedOrchestrator(
        workspace=stack.workspace, registry=nodes.registry, dispatch_timeout=DISPATCH_SECONDS
    )
    await orchestrator.connect()
    try:
        wid = f"crash-{uuid.uuid4().hex[:6]}"
        await orchestrator.start(nodes.crash_graph(), {}, workflow_id=wid)
        # The first execution of `crash` SIGKILLs the service's worker process (gunicorn
        # starts another, as Cloud Run would start an instance); its lease then lapses.
        run = await _run_until_done(orchestrator, wid, seconds=90)
        crash = await orchestrator.store.get_task(wid, "0000-crash")
    finally:
        await orchestrator.close()
    assert run.status == "completed", run.checkpoint.error
    assert run.checkpoint.state["log"] == ["crash@0", "after@1"]  # each result applied once
    assert nodes.executions(wid).count("crash") == 2  # killed once, run again after the lease
    assert crash is not None and crash.dispatches >= 2 and crash.claims >= 2
    log = _service_log(stack, "graph_worker")
    assert "was sent SIGKILL" in log
    # The re-dispatch came from the service's wake-up (nothing else tends the run here).
    assert f"re-dispatching {wid}/0000-crash (lease expired)" in log


def _service_log(stack: LocalStack, name: str) -> str:
    return Path(stack.services[name].log_path).read_text()
