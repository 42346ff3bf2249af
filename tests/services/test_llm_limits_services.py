"""Seed 004's ``RATE_LIMIT_PER_MINUTE`` wired into the run executor: a step over the shared
limit is deferred (nothing committed, no provider call, a wake-up after ``retry_after``), not
failed, and finishes once the window has passed."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from cloudagents.adapters.memory.messaging import InMemoryTaskQueue
from tests.services.conftest import Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]


@pytest.fixture
def one_call_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "1")


async def test_a_step_over_the_rate_limit_is_deferred_then_finishes(
    one_call_per_minute: None, stack: Stack
) -> None:
    clients, pump = stack
    api = clients["api"]
    agent = scripted_agent(
        "limited",
        tools=[],
        model={"provider": "scripted", "name": "scripted-demo", "script": [{"content": "done"}]},
    )
    assert (await api.post("/agents", json=agent)).status_code == 201
    first = (await api.post("/runs", json={"agent_id": "limited", "message": "a"})).json()
    await pump.run()
    assert (await api.get(f"/runs/{first['run_id']}")).json()["result"]["exit"] == "SATISFIED"
    second = (await api.post("/runs", json={"agent_id": "limited", "message": "b"})).json()
    await pump.run()
    run = (await api.get(f"/runs/{second['run_id']}")).json()
    assert run["status"] != "finished" and run["seq"] == 0
    assert ("agents-run-executor-intents", 200, {"status": "deferred"}) in pump.responses
    tasks = pump.deps.tasks
    assert isinstance(tasks, InMemoryTaskQueue)
    [wake] = [t for t in tasks.tasks if json.loads(t.body).get("step") is True]
    assert json.loads(wake.body)["run_id"] == second["run_id"]
    assert wake.at > pump.deps.clock()
    assert await pump.deps.runs.model_calls(second["run_id"]) == []
    # The wake-up, once the minute has passed, applies the step.
    later = wake.at + timedelta(seconds=1)
    pump.deps.clock = lambda: later
    response = await clients["run_executor"].post("/tasks/wake", content=wake.body)
    assert response.status_code == 200, response.text
    await pump.run()
    run = (await api.get(f"/runs/{second['run_id']}")).json()
    assert run["result"]["exit"] == "SATISFIED"
    assert len(await pump.deps.runs.model_calls(second["run_id"])) == 1
    # A duplicate of the wake-up does nothing.
    again = await clients["run_executor"].post("/tasks/wake", content=wake.body)
    assert again.json()["status"] == "finished"
