"""The api's stored-function routes, and a stored function as a tool through every service
(api -> run_executor -> tool_invoker, as push bodies). Execution needs the real sandbox: those
tests skip without root and bubblewrap."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from cloudagents.adapters.memory.stores import InMemoryAuditStore
from tests.services.conftest import Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]
needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="executing a stored function needs the sandbox: root and bubblewrap",
)

HYPOT = '''import math

def hypot(a: float, b: float) -> float:
    """The hypotenuse.

    Args:
        a: one leg
        b: the other leg
    """
    return math.hypot(a, b)
'''
HYPOT_V2 = HYPOT.replace("return math.hypot(a, b)", "return -math.hypot(a, b)")


def stored(name: str = "hypot", code: str = HYPOT) -> dict[str, object]:
    return {"name": name, "code": code, "config": {"allowed_imports": ["math"], "timeout": 5}}


async def test_store_list_show_and_versions(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    first = await api.post("/functions", json=stored())
    assert first.status_code == 201, first.text
    v1 = first.json()
    assert v1["ref"] == f"hypot@{v1['hash']}" and v1["entry"] == "hypot"
    assert v1["input_schema"]["required"] == ["a", "b"]
    assert (await api.post("/functions", json=stored())).json()["hash"] == v1["hash"]
    v2 = (await api.post("/functions", json=stored(code=HYPOT_V2))).json()
    assert v2["hash"] != v1["hash"]
    listing = (await api.get("/functions")).json()["functions"]
    assert [(f["name"], f["current"], f["versions"]) for f in listing] == [("hypot", v2["hash"], 2)]
    shown = (await api.get("/functions/hypot")).json()
    assert (shown["hash"], shown["code"], shown["history"]) == (
        v2["hash"],
        HYPOT_V2,
        [v1["hash"], v2["hash"]],
    )
    old = await api.get("/functions/hypot", params={"version": v1["hash"][:10]})
    assert old.json()["hash"] == v1["hash"]
    versions = (await api.get("/functions/hypot/versions")).json()["versions"]
    assert [v["hash"] for v in versions] == [v1["hash"], v2["hash"]]
    assert "code" not in versions[0]
    assert (await api.get("/functions/nope")).status_code == 404
    assert (await api.get("/functions/hypot", params={"version": "xyz"})).status_code == 400
    audit = pump.deps.audit
    assert isinstance(audit, InMemoryAuditStore)
    assert [(r.action, r.outcome, r.principal) for r in audit.records] == [
        ("POST /functions", "allowed", "tester")
    ] * 3


async def test_refused_code_is_422_with_line_and_reason_and_nothing_is_stored(
    stack: Stack,
) -> None:
    clients, _ = stack
    api = clients["api"]
    cases = {
        "def f() -> int:\n    import os\n    return 1\n": (2, "import of 'os' is not allowed"),
        "def f() -> int:\n    return (\n": (2, "syntax error"),
        "def f(x: int) -> int:\n    return x.__class__\n": (2, "__class__"),
    }
    for code, (line, reason) in cases.items():
        refused = await api.post("/functions", json={"name": "f", "code": code})
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert (body["error"], body["line"]) == ("function refused", line), body
        assert reason in body["reason"], body
    bad_config = await api.post(
        "/functions",
        json={"name": "f", "code": "def f() -> int:\n    return 1\n", "config": {"timeout": -1}},
    )
    assert bad_config.status_code == 422
    assert (await api.get("/functions")).json()["functions"] == []


async def test_function_routes_need_authentication(stack: Stack) -> None:
    clients, _ = stack
    anonymous = httpx.AsyncClient(transport=clients["api"]._transport, base_url="http://svc")
    assert (await anonymous.post("/functions", json=stored())).status_code == 401
    assert (await anonymous.get("/functions")).status_code == 401
    assert (await anonymous.post("/functions/hypot/execute", json={})).status_code == 401
    assert (await clients["api"].get("/functions")).json()["functions"] == []
    paths = (await anonymous.get("/openapi.json")).json()["paths"]
    assert {"/functions", "/functions/{name}/versions", "/functions/{name}/execute"} <= set(paths)


@needs_sandbox
async def test_execute_for_testing_answers_the_typed_outcome_and_is_in_the_history(
    stack: Stack,
) -> None:
    clients, _ = stack
    api = clients["api"]
    v1 = (await api.post("/functions", json=stored())).json()
    await api.post("/functions", json=stored(code=HYPOT_V2))
    done = await api.post("/functions/hypot/execute", json={"args": {"a": 1, "b": 1}})
    assert done.status_code == 200
    assert (done.json()["ok"], done.json()["value"]) == (True, pytest.approx(-(2**0.5)))
    pinned = await api.post(
        "/functions/hypot/execute", json={"args": {"a": 1, "b": 1}, "version": v1["hash"][:8]}
    )
    assert pinned.json()["value"] == pytest.approx(2**0.5)
    wrong = (await api.post("/functions/hypot/execute", json={"args": {"a": "x"}})).json()
    assert (wrong["ok"], wrong["error_kind"]) == (False, "invalid_arguments")
    assert (await api.post("/functions/nope/execute", json={})).status_code == 404
    history = (await api.get("/function-executions", params={"function": "hypot"})).json()
    assert [e["exit_kind"] for e in history["executions"]] == ["invalid_arguments", "ok", "ok"]
    assert history["executions"][1]["version_hash"] == v1["hash"]
    sandbox = (await api.get("/functions")).json()["sandbox"]
    assert sandbox["available"] is True


@needs_sandbox
async def test_a_stored_function_as_a_tool_through_the_services(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    version = (await api.post("/functions", json=stored())).json()
    agent = scripted_agent(
        "geometry",
        tools=["hypot"],
        model={
            "provider": "scripted",
            "name": "scripted-geometry",
            "script": [
                {"tool_calls": [{"name": "hypot", "arguments": {"a": 3, "b": 4}}]},
                {"content": "5"},
            ],
        },
    )
    assert (await api.post("/agents", json=agent)).status_code == 201
    started = await api.post("/runs", json={"agent_id": "geometry", "message": "3, 4?"})
    run_id = started.json()["run_id"]
    await api.post("/functions", json=stored(code=HYPOT_V2))  # moves the name: not this run's
    await pump.run()
    run = (await api.get(f"/runs/{run_id}")).json()
    assert run["result"]["exit"] == "SATISFIED" and run["functions"] == {"hypot": version["hash"]}
    calls = await pump.deps.runs.tool_calls(run_id, 0)
    assert [(c.result, c.is_error) for c in calls] == [(5.0, False)]
    [execution] = (await api.get(f"/runs/{run_id}/calls")).json()["function_executions"]
    assert (execution["function"], execution["exit_kind"]) == ("hypot", "ok")
    assert execution["duration_ms"] > 0
    per_agent = (await api.get("/agents/geometry/executions")).json()
    assert per_agent["runs"][0]["functions"] == {"hypot": version["hash"]}
    assert per_agent["function_executions"] == [execution]
    by_agent = (await api.get("/function-executions", params={"agent": "geometry"})).json()
    assert [
        (e["run_id"], e["tool_call_id"], e["version_hash"]) for e in by_agent["executions"]
    ] == [(run_id, "000000-000", version["hash"])]


async def test_an_explicit_pin_that_resolves_to_nothing_refuses_the_run(stack: Stack) -> None:
    clients, _ = stack
    api = clients["api"]
    agent = scripted_agent("ghost", tools=["ghost@0123456789abcdef"])
    assert (await api.post("/agents", json=agent)).status_code == 201
    refused = await api.post("/runs", json={"agent_id": "ghost", "message": "hi"})
    assert refused.status_code == 400
    assert "ghost@0123456789abcdef" in refused.json()["error"]
