"""Agents as data through the api: versions with history, DELETE /agents/{id}."""

from __future__ import annotations

import httpx

from cloudagents.adapters.memory.stores import InMemoryAuditStore, InMemoryRunStore
from cloudagents.domain.runs import RunRecord
from tests.services.conftest import OUTSIDER_TOKEN, Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]


async def test_versions_history_and_delete(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    first = scripted_agent("versioned")
    second = scripted_agent("versioned", instructions="You count.")
    for definition in (first, first, second):
        assert (await api.post("/agents", json=definition)).status_code == 201
    history = (await api.get("/agents/versioned/versions")).json()
    assert [(v["version"], v["definition"]["instructions"]) for v in history["versions"]] == [
        (1, first["instructions"]),
        (2, "You count."),
    ]
    assert history["created_at"] <= history["updated_at"] and history["deleted"] is False
    deleted = await api.delete("/agents/versioned")
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": "versioned"})
    assert (await api.get("/agents/versioned")).status_code == 404
    assert (await api.delete("/agents/versioned")).status_code == 404
    after = (await api.get("/agents/versioned/versions")).json()
    assert [(v["version"], v["deleted"]) for v in after["versions"]][-1] == (3, True)
    assert after["deleted"] is True
    refused = await api.post("/runs", json={"agent_id": "versioned", "message": "hi"})
    assert refused.status_code == 404
    assert (await api.get("/agents/nobody/versions")).status_code == 404
    audit = pump.deps.audit
    assert isinstance(audit, InMemoryAuditStore)
    assert [(r.action, r.target) for r in audit.records if r.action.startswith("DELETE")] == [
        ("DELETE /agents/versioned", "versioned")
    ]


async def test_a_run_of_an_agent_deleted_under_it_ends_with_the_reason(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await api.post("/agents", json=scripted_agent("doomed"))
    run_id = (await api.post("/runs", json={"agent_id": "doomed", "message": "6*7"})).json()[
        "run_id"
    ]
    await api.delete("/agents/doomed")
    await pump.run()
    result = (await api.get(f"/runs/{run_id}")).json()["result"]
    assert result["exit"] == "ERROR" and "no longer exists" in str(result["payload"])


async def test_delete_needs_authentication(stack: Stack) -> None:
    clients, _ = stack
    api = clients["api"]
    await api.post("/agents", json=scripted_agent("kept"))
    anonymous = httpx.AsyncClient(transport=api._transport, base_url="http://svc")
    assert (await anonymous.delete("/agents/kept")).status_code == 401
    outsider = {"Authorization": f"Bearer {OUTSIDER_TOKEN}"}
    assert (await api.get("/agents/kept", headers=outsider)).status_code == 200
    assert (await api.get("/agents/kept")).status_code == 200


async def test_execution_history_with_the_durations_of_each_call(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await api.post("/agents", json=scripted_agent("timed"))
    run_id = (await api.post("/runs", json={"agent_id": "timed", "message": "6*7"})).json()[
        "run_id"
    ]
    await pump.run()
    calls = (await api.get(f"/runs/{run_id}/calls")).json()
    assert [(c["seq"], c["applied"]) for c in calls["model_calls"]] == [(0, True), (1, True)]
    assert all(c["duration_ms"] >= 0 and c["total_tokens"] == 10 for c in calls["model_calls"])
    [tool] = calls["tool_calls"]
    assert (tool["tool"], tool["status"], tool["is_error"], tool["attempts"]) == (
        "calculator",
        "done",
        False,
        1,
    )
    assert tool["duration_ms"] >= 0
    history = (await api.get("/agents/timed/executions")).json()
    [run] = history["runs"]
    assert (run["run_id"], run["exit"], run["iterations"], run["tool_calls"]) == (
        run_id,
        "SATISFIED",
        2,
        1,
    )
    assert run["total_tokens"] == 20 and run["duration_s"] >= 0
    assert history["function_executions"] == []
    assert (await api.get("/runs/nope/calls")).status_code == 404


async def test_a_run_finishes_on_the_definition_it_started_with(stack: Stack) -> None:
    """The version a run starts with is pinned on it: a change made while it runs applies to
    the runs started after it, not to its own next steps."""
    clients, pump = stack
    api = clients["api"]
    await api.post("/agents", json=scripted_agent("pinned"))
    run_id = (await api.post("/runs", json={"agent_id": "pinned", "message": "6*7"})).json()[
        "run_id"
    ]
    script = [{"content": "changed"}]
    changed = scripted_agent(
        "pinned", model={"provider": "scripted", "name": "scripted-demo", "script": script}
    )
    assert (await api.post("/agents", json=changed)).status_code == 201
    await pump.run()
    run = (await api.get(f"/runs/{run_id}")).json()
    assert run["agent_versions"] == {"pinned": 1}
    result = run["result"]
    assert result["exit"] == "SATISFIED" and result["payload"] == {"answer": "6*7 = 42"}
    later = (await api.post("/runs", json={"agent_id": "pinned", "message": "again"})).json()
    await pump.run()
    result = (await api.get(f"/runs/{later['run_id']}")).json()["result"]
    assert result["payload"] == {"answer": "changed"}


async def test_a_run_of_the_previous_layout_still_reads_and_finishes(stack: Stack) -> None:
    """A run document written before versions were pinned (schema version 3, no
    ``agent_versions``) reads as version 4 pinning nothing: its steps read the latest."""
    clients, pump = stack
    api = clients["api"]
    await api.post("/agents", json=scripted_agent("legacy"))
    run_id = (await api.post("/runs", json={"agent_id": "legacy", "message": "6*7"})).json()[
        "run_id"
    ]
    runs = pump.deps.runs
    assert isinstance(runs, InMemoryRunStore)
    stored = runs.runs[run_id].model_dump(mode="json")
    stored.pop("agent_versions")
    runs.runs[run_id] = RunRecord.model_validate({**stored, "schema_version": 3})
    assert runs.runs[run_id].schema_version == 6 and runs.runs[run_id].agent_versions == {}
    await pump.run()
    result = (await api.get(f"/runs/{run_id}")).json()["result"]
    assert result["exit"] == "SATISFIED" and result["payload"] == {"answer": "6*7 = 42"}
