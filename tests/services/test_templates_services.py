"""A template variable a run lacks, through the services: the run ends ERROR with the reason
(the same rule as ``Agent.run``), whether started by ``POST /runs`` or by an intent."""

from __future__ import annotations

import httpx

from cloudagents.domain.intents import IntentionMessage
from tests.services.conftest import Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]


async def test_missing_template_variable_ends_the_run_error(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    agent = scripted_agent("templated", user_template="[{priority}] {current_place}: {input}")
    assert (await api.post("/agents", json=agent)).status_code == 201
    started = await api.post(
        "/runs", json={"agent_id": "templated", "message": "hi", "variables": {"priority": "P1"}}
    )
    assert started.status_code == 202
    intent = IntentionMessage.for_run(run_id="by-intent", agent_id="templated", message="hi")
    await pump.deps.bus.publish("agents", intent.model_dump_json().encode(), {})
    await pump.run()
    for run_id in (started.json()["run_id"], "by-intent"):
        run = (await api.get(f"/runs/{run_id}")).json()
        assert run["status"] == "finished"
        assert run["result"]["exit"] == "ERROR"
        assert run["result"]["iterations"] == 0
        assert "needs variables" in run["result"]["payload"]["reason"]
        assert "current_place" in run["result"]["payload"]["reason"]
    assert all(status == 200 for _, status, _ in pump.responses)
    assert await pump.deps.dead_letters.list_dead_letters() == []


async def test_builtin_variables_given_render(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    agent = scripted_agent("templated", user_template="{token_id}@{current_place}: {input_data}")
    await api.post("/agents", json=agent)
    variables = {"token_id": "t1", "current_place": "submitted"}
    started = await api.post(
        "/runs", json={"agent_id": "templated", "message": "doc", "variables": variables}
    )
    await pump.run()
    run_id = started.json()["run_id"]
    messages = (await api.get(f"/runs/{run_id}/messages")).json()["messages"]
    assert messages[1]["content"] == "t1@submitted: doc"
