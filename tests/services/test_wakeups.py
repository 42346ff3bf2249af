"""Wake-ups, deferred rate limits and run timeouts through the services' apps (memory backend).

Tasks land in the in-memory task queue; a test fires one by POSTing its body where Cloud Tasks
would, at the time the test chooses (the services' clock is the test's).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cloudagents.adapters.memory.messaging import InMemoryTaskQueue, ScheduledTask
from cloudagents.adapters.memory.stores import InMemoryRunStore
from tests.services.conftest import Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at

    def __call__(self) -> datetime:
        return self.now


def tasks(pump: Pump) -> InMemoryTaskQueue:
    queue = pump.deps.tasks
    assert isinstance(queue, InMemoryTaskQueue)
    return queue


def wake_tasks(pump: Pump) -> list[ScheduledTask]:
    return [t for t in tasks(pump).tasks if t.url.endswith("/tasks/wake")]


async def fire(clients: dict[str, httpx.AsyncClient], task: ScheduledTask) -> dict[str, Any]:
    response = await clients["run_executor"].post("/tasks/wake", content=task.body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def start(clients: dict[str, httpx.AsyncClient], agent: dict[str, Any]) -> str:
    assert (await clients["api"].post("/agents", json=agent)).status_code == 201
    started = await clients["api"].post("/runs", json={"agent_id": agent["id"], "message": "go"})
    run_id: str = started.json()["run_id"]
    return run_id


def store(pump: Pump) -> InMemoryRunStore:
    runs = pump.deps.runs
    assert isinstance(runs, InMemoryRunStore)
    return runs


async def test_a_rate_limited_call_is_deferred_to_its_window_and_acknowledged(stack: Stack) -> None:
    clients, pump = stack
    clock = Clock(datetime(2030, 1, 1, 12, 0, 50, tzinfo=UTC))
    pump.deps.clock = clock
    agent = scripted_agent("limited", budget={"max_tools_per_minute": 1})
    first, second = await start(clients, agent), await start(clients, agent)
    await pump.run()
    tool_answers = [body for sub, _, body in pump.responses if sub.endswith("tool-invoker")]
    assert sorted(a["status"] for a in tool_answers) == ["deferred", "done-woke-run"]
    assert all(status == 200 for _, status, _ in pump.responses), "a refusal burnt a delivery"
    runs = store(pump)
    finished = {r for r in (first, second) if (await runs.get_run(r)).finished}  # type: ignore[union-attr]
    (waiting,) = {first, second} - finished
    (call,) = await runs.tool_calls(waiting, 0)
    next_window = int(datetime(2030, 1, 1, 12, 1, tzinfo=UTC).timestamp() // 60)
    assert call.status == "pending" and call.rate_window == next_window
    assert call.deferred_until is not None
    assert datetime(2030, 1, 1, 12, 1, tzinfo=UTC) <= call.deferred_until
    (deferred,) = [t for t in wake_tasks(pump) if json.loads(t.body).get("item")]
    assert deferred.at == call.deferred_until

    clock.now = call.deferred_until
    assert (await fire(clients, deferred))["status"] == "dispatched-deferred"
    await pump.run()
    run = await runs.get_run(waiting)
    assert run is not None and run.result is not None and run.result.exit.value == "SATISFIED"
    # A duplicate of the deferral task (the emulator does not de-duplicate) does nothing.
    assert (await fire(clients, deferred))["status"] == "finished"


async def test_the_wait_wake_up_dispatches_a_lost_tool_message_again(stack: Stack) -> None:
    clients, pump = stack
    clock = Clock(datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC))
    pump.deps.clock = clock
    run_id = await start(clients, scripted_agent("lossy"))
    # Deliver everything but the tool message: it is "lost".
    while pump.cursor < len(pump.bus.published):
        message = pump.bus.published[pump.cursor]
        pump.cursor += 1
        if message.topic != "agents-tools":
            await pump.deliver(message)
    run = await store(pump).get_run(run_id)
    assert run is not None and run.status.value == "waiting_tools"
    (wake,) = [t for t in wake_tasks(pump) if json.loads(t.body).get("seq") == 1]
    assert wake.at == clock.now + timedelta(seconds=60)

    clock.now = wake.at
    assert (await fire(clients, wake))["status"] == "redispatched:1"
    # A duplicate of that task (the emulator does not de-duplicate) starts no second chain.
    assert (await fire(clients, wake))["status"] == "duplicate"
    (after,) = [t for t in wake_tasks(pump) if json.loads(t.body).get("gen") == 1]
    assert after.at == clock.now + timedelta(seconds=120)  # backing off: 2 x WAKE_SECONDS
    await pump.run()
    run = await store(pump).get_run(run_id)
    assert run is not None and run.result is not None and run.result.exit.value == "SATISFIED"
    (call,) = await store(pump).tool_calls(run_id, 0)
    assert call.attempts == 1
    # The next wake-up it scheduled finds the run finished.
    assert (await fire(clients, after))["status"] == "finished"


async def test_a_run_past_its_timeout_ends_with_what_it_waited_for(stack: Stack) -> None:
    clients, pump = stack
    clock = Clock(datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC))
    pump.deps.clock = clock
    run_id = await start(clients, scripted_agent("slowpoke", timeout_seconds=30))
    while pump.cursor < len(pump.bus.published):
        message = pump.bus.published[pump.cursor]
        pump.cursor += 1
        if message.topic != "agents-tools":  # the tool never answers
            await pump.deliver(message)
    deadline = [t for t in wake_tasks(pump) if "seq" not in json.loads(t.body)]
    assert deadline and deadline[0].at == datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
    (wait,) = [t for t in wake_tasks(pump) if json.loads(t.body).get("seq") == 1]
    assert wait.at == deadline[0].at  # the deadline comes before wake_seconds

    early = await fire(clients, deadline[0])
    assert early["status"] == "waiting"  # the wait's own wake-ups carry it to the deadline
    clock.now = deadline[0].at
    assert (await fire(clients, wait))["status"] == "finished:ERROR"
    assert (await fire(clients, deadline[0]))["status"] == "finished"
    run = (await clients["api"].get(f"/runs/{run_id}")).json()
    reason = "timed out after 30 s waiting for tool calls: calculator#0"
    assert run["result"]["exit"] == "ERROR"
    assert run["result"]["payload"]["reason"] == reason
    assert run["result"]["errors"] == [reason]


async def test_a_runs_dead_letters_are_on_the_run(stack: Stack) -> None:
    clients, pump = stack
    run_id = await start(clients, scripted_agent("doomed"))
    await pump.run()
    bad = json.dumps({"run_id": run_id, "seq": "x", "index": 0}).encode()
    from cloudagents.adapters.memory.messaging import PublishedMessage

    await pump.deliver(PublishedMessage("agents-tools", bad, {}, "m-bad"))
    run = (await clients["api"].get(f"/runs/{run_id}")).json()
    (letter,) = run["dead_letters"]
    assert letter["id"] == "agents-tool-invoker-m-bad"
    assert "invalid ToolMessage" in letter["reason"]


async def test_replaying_a_live_runs_dead_letter_resumes_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients, pump = stack
    runs = store(pump)
    real = runs.start_tool_call
    failures = []

    async def vanish_once(run_id: str, seq: int, index: int, **kwargs: Any) -> Any:
        if not failures:
            failures.append(run_id)
            return None  # the claim finds no such call: a permanent error, dead-lettered
        return await real(run_id, seq, index, **kwargs)

    monkeypatch.setattr(runs, "start_tool_call", vanish_once)
    run_id = await start(clients, scripted_agent("unlucky"))
    await pump.run()
    run = (await clients["api"].get(f"/runs/{run_id}")).json()
    assert run["status"] == "waiting_tools"
    (letter,) = run["dead_letters"]
    assert "tool call 000000-000 of" in letter["reason"] and "vanished" in letter["reason"]
    assert not letter["replayed"]

    replay = await clients["api"].post(f"/dead-letters/{letter['id']}/replay")
    assert replay.status_code == 202
    await pump.run()
    run = (await clients["api"].get(f"/runs/{run_id}")).json()
    assert run["result"]["exit"] == "SATISFIED"
    assert run["dead_letters"][0]["replayed"]
