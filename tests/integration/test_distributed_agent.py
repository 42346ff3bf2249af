"""Seed 000's ``DistributedAgent`` (``cloudagents.gcp``) on the emulators: the Quick Start as
written, tools, guardrails, handoffs, budgets and errors, and the example scripts.

Only the emulators are started (no services): ``DistributedAgent.run`` drives the run executor
and the tool invoker in process, on the Firestore and GCS adapters, and publishes what leaves the
process (handoff offers, the tool audit trail) to Pub/Sub.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore, storage  # type: ignore[attr-defined]

from cloudagents.bootstrap import build_gcp_deps, close_firestore, function_repository, sdk_clients
from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.errors import ConfigurationError
from cloudagents.functions import FunctionStore
from cloudagents.gcp import Budget, DistributedAgent, LoopExit, Tool
from cloudagents.local.emulators import EmulatorStack, start_stack
from cloudagents.runtime.broker import HandoffBroker
from cloudagents.settings import Settings
from cloudagents.tools import ToolRegistry
from cloudagents.topology import build_topology
from tests.fakes.llm_api_servers import fake_llm_server
from tests.integration.pubsub import pull, pull_subscription

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "my-gcp-project"
WORKSPACE = "sdk-ws"


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorStack]:
    """The four emulators for this module alone, with their variables set while it runs."""
    stack = start_stack(PROJECT, tmp_path_factory.mktemp("sdk-emulator-logs"))
    try:
        with patch.dict(os.environ, stack.env()):
            yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def db(emulators: EmulatorStack) -> firestore.Client:
    return firestore.Client(project=PROJECT)


def blob(uri: str) -> dict[str, Any]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    data: dict[str, Any] = json.loads(client.bucket(bucket).blob(name).download_as_bytes())
    return data


def run_doc(db: firestore.Client, run_id: str) -> dict[str, Any]:
    snap = db.collection("agent_runs").document(run_id).get()
    assert snap.exists, f"no agent_runs/{run_id}"
    data: dict[str, Any] = snap.to_dict() or {}
    return data


def interactions(db: firestore.Client, run_id: str) -> list[dict[str, Any]]:
    """The run's interaction records, in its step documents."""
    steps = db.collection("agent_runs").document(run_id).collection("steps").stream()
    found = [(d.to_dict() or {}).get("interaction") for d in steps]
    return sorted((i for i in found if i), key=lambda i: i["seq"])


def run_ids_of(db: firestore.Client, agent_id: str) -> set[str]:
    query = db.collection("agent_runs").where(
        filter=firestore.FieldFilter("agent_id", "==", agent_id)
    )
    return {d.id for d in query.stream()}


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression.

    Args:
        expression: e.g. "6*7"
    """
    return float(eval(expression, {"__builtins__": {}}))


def new_agent(agent_id: str, workspace_topic: str = WORKSPACE, **options: Any) -> DistributedAgent:
    return DistributedAgent(
        agent_id=agent_id,
        instructions="You are a helpful assistant.",
        model="gpt-4",
        project_id=PROJECT,
        workspace_topic=workspace_topic,
        **options,
    )


async def test_quick_start_as_written(emulators: EmulatorStack, db: firestore.Client) -> None:
    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        """Your LLM client implementation"""
        # Call OpenAI, Anthropic, or other LLM provider
        return {"done": True, "content": {"answer": "Response"}, "usage": {"total_tokens": 100}}

    before = run_ids_of(db, "my-agent")
    agent = DistributedAgent(
        agent_id="my-agent",
        instructions="You are a helpful assistant.",
        model="gpt-4",
        project_id="my-gcp-project",
        workspace_topic="my-workspace",
        budget=Budget(max_tokens_per_run=10000),
    )
    result = await agent.run(message="What is 2+2?", context={"llm_client": llm_client})

    assert result.exit.value == "SATISFIED"
    assert result.payload == {"answer": "Response"}
    assert (result.iterations, result.total_tokens, result.errors) == (1, 100, [])
    (run_id,) = run_ids_of(db, "my-agent") - before
    run = run_doc(db, run_id)
    assert (run["status"], run["source"], run["seq"]) == ("finished", "sdk", 1)
    assert run["result"]["exit"] == "SATISFIED"
    assert run["result"]["payload"] == {"answer": "Response"}
    assert run["message_count"] == 3
    steps = db.collection("agent_runs").document(run_id).collection("steps").stream()
    messages = [m for d in steps for m in (d.to_dict() or {})["messages"]]
    assert sorted(m.get("role") for m in messages) == ["assistant", "system", "user"]
    model_calls = list(
        db.collection("agent_runs").document(run_id).collection("model_calls").stream()
    )
    steps = interactions(db, run_id)
    assert [(i["seq"], i["decision"], i["total_tokens"]) for i in steps] == [(0, "finish", 100)]
    # The applied call is named by its step's interaction record.
    assert [
        (c.get("model"), c.get("attempt_id") == steps[0]["applied_model_call"]) for c in model_calls
    ] == [("gpt-4", True)]
    # The snapshot is found by its name (the run's last step), not by a pointer on the run.
    assert run.get("snapshot") is None
    snapshot = blob(f"gs://my-gcp-project-agent-context/runs/{run_id}/snapshots/000001.json")
    assert [m["role"] for m in snapshot["messages"]] == ["system", "user", "assistant"]
    await agent.aclose()


async def test_a_tool_round_runs_the_tool_and_publishes_an_audit_record(
    emulators: EmulatorStack, db: firestore.Client
) -> None:
    audit = pull_subscription(PROJECT, f"{WORKSPACE}-tools-audit")
    seen: list[dict[str, Any]] = []

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        results = [m["content"] for m in request["messages"] if m["role"] == "tool"]
        if not results:
            call = {"id": "call-1", "name": "calculator", "arguments": {"expression": "6*7"}}
            return {"tool_calls": [call], "usage": {"total_tokens": 30}}
        return {"done": True, "content": f"6*7 = {results[0]}", "usage": {"total_tokens": 20}}

    tools = {"calculator": Tool("calculator", calculator, "low")}
    agent = new_agent("sdk-calc", budget=Budget(max_tools_per_minute=60), tools=tools)
    assert tools["calculator"].to_mcp_format()["risk_level"] == "low"
    result = await agent.run("What is 6*7?", {"llm_client": llm_client}, run_id="sdk-tool-run")

    assert result.exit is LoopExit.SATISFIED
    assert result.payload == {"answer": "6*7 = 42.0"}
    assert (result.iterations, result.tool_calls, result.total_tokens) == (2, 1, 50)
    assert [t["function"]["name"] for t in seen[0]["tools"]] == ["calculator"]
    run = run_doc(db, "sdk-tool-run")
    assert (run["status"], run["seq"], run["result"]["tool_calls"]) == ("finished", 2, 1)
    calls = list(
        db.collection("agent_runs").document("sdk-tool-run").collection("tool_calls").stream()
    )
    assert [(c.id, c.get("status"), c.get("result"), c.get("attempts")) for c in calls] == [
        ("000000-000", "done", 42.0, 1)
    ]
    assert [i["decision"] for i in interactions(db, "sdk-tool-run")] == [
        "tools:calculator",
        "finish",
    ]
    (message,) = pull(audit, 1)
    record = json.loads(message.data)
    assert record == {
        "schema_version": 1,
        "run_id": "sdk-tool-run",
        "agent_id": "sdk-calc",
        "seq": 0,
        "index": 0,
        "tool": "calculator",
        "idempotency_key": "sdk-tool-run:0:0",
        "is_error": False,
        "attempts": 1,
    }
    await agent.aclose()


async def test_guardrails_block_the_input_and_risky_tools(
    emulators: EmulatorStack, db: firestore.Client
) -> None:
    calls = 0

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        call = {"id": "c1", "name": "wipe", "arguments": {}}
        return {"tool_calls": [call], "usage": {"total_tokens": 10}}

    def wipe() -> str:
        """Delete everything."""
        raise AssertionError("a blocked tool ran")

    guardrails = {"enabled": True, "risk_threshold": "medium", "blocked_patterns": ["violence"]}
    agent = new_agent("sdk-guarded", tools=[Tool("wipe", wipe, "high")])
    blocked = await agent.run(
        "Tell me about violence", {"llm_client": llm_client}, guardrails=guardrails, run_id="g-in"
    )
    assert blocked.exit == LoopExit.GUARDRAIL_BLOCK
    assert "violence" in str(blocked.payload["reason"])
    assert calls == 0
    run = run_doc(db, "g-in")
    assert (run["status"], run["result"]["exit"]) == ("finished", "GUARDRAIL_BLOCK")
    assert interactions(db, "g-in") == []

    risky = await agent.run(
        "Clean up", {"llm_client": llm_client}, guardrails=guardrails, run_id="g-tool"
    )
    assert risky.exit is LoopExit.GUARDRAIL_BLOCK
    assert "risk 'high'" in str(risky.payload["reason"])
    assert [i["decision"] for i in interactions(db, "g-tool")] == ["stop:GUARDRAIL_BLOCK"]
    await agent.aclose()


async def test_a_handoff_target_reply_offers_the_task(
    emulators: EmulatorStack, db: firestore.Client
) -> None:
    offers = pull_subscription(PROJECT, f"{WORKSPACE}-handoff")

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        target = {"required_capabilities": ["image_processing", "ocr"], "ttl_seconds": 300}
        return {"handoff_target": target, "usage": {"total_tokens": 25}}

    agent = new_agent("sdk-triage", capabilities=["triage"])
    result = await agent.run("Read this scan", {"llm_client": llm_client}, run_id="sdk-handoff")

    assert result.exit is LoopExit.HANDOFF
    offer_id = result.payload["offer_id"]
    assert offer_id == "offer-sdk-handoff-0"
    assert result.payload["required_capabilities"] == ["image_processing", "ocr"]
    offer = db.collection("handoff_offers").document(str(offer_id)).get().to_dict()
    assert offer is not None
    assert (offer["status"], offer["source_run_id"], offer["source_agent"]) == (
        "open",
        "sdk-handoff",
        "sdk-triage",
    )
    assert offer["required_capabilities"] == ["image_processing", "ocr"]
    assert [m["role"] for m in blob(offer["context_uri"])["messages"]] == [
        "system",
        "user",
        "assistant",
    ]
    run = run_doc(db, "sdk-handoff")
    assert (run["result"]["exit"], run["handoff_offer_id"], run["handoff_status"]) == (
        "HANDOFF",
        offer_id,
        "open",
    )
    assert offer["context_uri"].endswith(f"/runs/sdk-handoff/snapshots/{run['seq']:06d}.json")
    (message,) = pull(offers, 1)
    assert json.loads(message.data) == {"schema_version": 1, "offer_id": offer_id}
    await agent.aclose()


async def test_the_handoff_broker_claims_an_sdk_offer(
    emulators: EmulatorStack, db: firestore.Client
) -> None:
    """The offer is in the broker's form: it claims it and starts the target from the snapshot."""

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        target = {"required_capabilities": ["ocr"], "message": "OCR the scan"}
        return {"handoff_target": target, "usage": {"total_tokens": 5}}

    agent = new_agent("sdk-source")
    result = await agent.run("Here is a scan", {"llm_client": llm_client}, run_id="sdk-src")
    await agent.aclose()
    deps = build_gcp_deps(
        Settings(project=PROJECT, workspace=WORKSPACE),
        build_topology(PROJECT, WORKSPACE),
        ToolRegistry(),
    )
    reader = {"provider": "scripted", "name": "scripted-ocr", "script": [{"content": "read"}]}
    await deps.agents.put_agent(
        AgentDefinition.model_validate({"id": "sdk-ocr", "model": reader, "capabilities": ["ocr"]})
    )
    assert await HandoffBroker(deps).handle_offer(str(result.payload["offer_id"])) == "claimed"
    source = run_doc(db, "sdk-src")
    assert (source["handoff_status"], source["child_run_ids"]) == (
        "claimed",
        ["offer-sdk-src-0-sdk-ocr"],
    )
    target = await deps.runs.get_run("offer-sdk-src-0-sdk-ocr")
    assert target is not None
    assert (target.source, target.parent_run_id, target.chain_depth) == ("handoff", "sdk-src", 1)
    carried = await deps.runs.messages(target.run_id)
    assert [(m.role, m.content) for m in carried[1:]] == [
        ("user", "Here is a scan"),
        ("assistant", None),
        ("user", "OCR the scan"),
    ]


async def test_budget_exceeded_and_model_errors_are_results(
    emulators: EmulatorStack, db: firestore.Client
) -> None:
    async def thinking(request: dict[str, Any]) -> dict[str, Any]:
        return {"done": False, "content": "thinking...", "usage": {"total_tokens": 60}}

    async def broken(request: dict[str, Any]) -> dict[str, Any]:
        raise ConnectionError("provider down")

    agent = new_agent("sdk-budget", budget=Budget(max_tokens_per_run=100))
    over = await agent.run("Think hard", {"llm_client": thinking}, run_id="sdk-over")
    assert over.exit is LoopExit.BUDGET_EXCEEDED
    assert over.total_tokens == 120
    assert [i["decision"] for i in interactions(db, "sdk-over")] == [
        "run_again",
        "stop:BUDGET_EXCEEDED",
    ]
    run = run_doc(db, "sdk-over")
    assert (run["status"], run["result"]["exit"], run["seq"]) == ("finished", "BUDGET_EXCEEDED", 2)
    assert blob(f"gs://{PROJECT}-agent-context/runs/sdk-over/snapshots/000002.json")["seq"] == 2

    fragile = new_agent("sdk-fragile", retry={"max_attempts": 1})
    failed = await fragile.run("Hello", {"llm_client": broken}, run_id="sdk-error")
    assert failed.exit is LoopExit.ERROR
    assert failed.errors and "provider down" in failed.errors[0]
    run = run_doc(db, "sdk-error")
    assert (run["result"]["exit"], run["result"]["errors"]) == ("ERROR", failed.errors)
    await agent.aclose()
    await fragile.aclose()


async def test_concurrent_runs_share_one_agent(
    emulators: EmulatorStack, db: firestore.Client
) -> None:
    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"done": True, "content": request["messages"][-1]["content"], "usage": {}}

    agent = new_agent("sdk-many")
    results = await asyncio.gather(
        *(agent.run(f"echo {i}", {"llm_client": llm_client}, run_id=f"many-{i}") for i in range(4))
    )
    assert [r.payload for r in results] == [{"answer": f"echo {i}"} for i in range(4)]
    assert {run_doc(db, f"many-{i}")["status"] for i in range(4)} == {"finished"}
    await agent.aclose()


@pytest.mark.parametrize(
    ("model", "key_env", "base_url_env", "path"),
    [
        ("gpt-4o-mini", "OPENAI_API_KEY", "OPENAI_BASE_URL", "/v1/chat/completions"),
        ("claude-test-model", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "/v1/messages"),
    ],
)
async def test_without_an_llm_client_the_provider_comes_from_the_model_name(
    emulators: EmulatorStack,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    key_env: str,
    base_url_env: str,
    path: str,
) -> None:
    with fake_llm_server() as server:
        monkeypatch.setenv(key_env, "test-key")
        openai = key_env == "OPENAI_API_KEY"
        monkeypatch.setenv(
            base_url_env, server.openai_base_url if openai else server.anthropic_base_url
        )
        server.reply_text("Four.")
        agent = DistributedAgent("sdk-native", "Be brief.", model, PROJECT, WORKSPACE)
        result = await agent.run("What is 2+2?")
        await agent.aclose()
    assert (result.exit, result.payload) == (LoopExit.SATISFIED, {"answer": "Four."})
    assert server.last_request.path == path
    assert server.last_request.body["model"] == model


def test_missing_topic_outside_the_emulators_names_it_and_terraform(
    emulators: EmulatorStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = new_agent("sdk-prod", workspace_topic="nowhere")
    agent._clients = sdk_clients(PROJECT)  # built while the emulator variables are set
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST")
    with pytest.raises(ConfigurationError, match=r"topics/nowhere does not exist.*Terraform"):
        agent._ensure_resources()


def test_missing_bucket_outside_the_emulators_names_it_and_terraform(
    emulators: EmulatorStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = DistributedAgent(
        "sdk-prod", "x", "gpt-4", project_id="other-project", workspace_topic=WORKSPACE
    )
    agent._clients = sdk_clients(PROJECT)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    with pytest.raises(ConfigurationError, match=r"gs://other-project-agent-context.*Terraform"):
        agent._ensure_resources()


def run_script(name: str, emulators: EmulatorStack) -> list[str]:
    env = {**os.environ, **emulators.env()}
    env.pop("CLOUDAGENTS_WORKSPACE", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_quickstart_script_prints_the_result(emulators: EmulatorStack) -> None:
    assert run_script("quickstart.py", emulators) == [
        "Result: SATISFIED",
        "Payload: {'answer': 'Response'}",
    ]


def test_example_script_covers_each_exit(emulators: EmulatorStack) -> None:
    lines = run_script("distributed_agent_example.py", emulators)
    results = [line for line in lines if "] Result: " in line]
    assert results == [
        "[basic] Result: SATISFIED",
        "[tool] Result: SATISFIED",
        "[guardrail] Result: GUARDRAIL_BLOCK",
        "[error] Result: ERROR",
        "[handoff] Result: HANDOFF",
    ]
    assert "[tool] Payload: {'answer': '(17 + 25) * 3 = 126'}" in lines
    assert any(line.startswith("[error] Diagnostics: ") for line in lines)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="stored functions run in the bubblewrap sandbox: needs root and bubblewrap",
)
async def test_a_stored_function_in_firestore_is_a_tool_of_a_distributed_agent(
    emulators: EmulatorStack, db: firestore.Client
) -> None:
    """Stored in the project's function store (Firestore), named among the definition's tools:
    the run pins the version and the call runs in the sandbox, recorded in the history."""
    repository = function_repository(PROJECT)
    store = FunctionStore(repository)
    code = "import math\n\ndef hypot(a: float, b: float) -> float:\n    return math.hypot(a, b)\n"
    version = await store.store_function("hypot", code, config={"allowed_imports": ["math"]})

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        results = [m["content"] for m in request["messages"] if m["role"] == "tool"]
        if not results:
            call = {"id": "call-1", "name": "hypot", "arguments": {"a": 3, "b": 4}}
            return {"tool_calls": [call], "usage": {"total_tokens": 10}}
        return {"done": True, "content": f"hypot = {results[0]}", "usage": {"total_tokens": 10}}

    definition = AgentDefinition(
        id="sdk-geometry",
        instructions="You use hypot.",
        model={"provider": "callable", "name": "gpt-4"},  # type: ignore[arg-type]
        tools=["hypot"],
    )
    agent = DistributedAgent.from_definition(
        definition, project_id=PROJECT, workspace_topic=WORKSPACE
    )
    result = await agent.run("3 and 4?", {"llm_client": llm_client}, run_id="sdk-function-run")
    assert result.exit is LoopExit.SATISFIED and result.payload == {"answer": "hypot = 5.0"}
    assert run_doc(db, "sdk-function-run")["functions"] == {"hypot": version.hash}
    [record] = await store.history(agent="sdk-geometry")
    assert (record.run_id, record.tool_call_id, record.exit_kind) == (
        "sdk-function-run",
        "000000-000",
        "ok",
    )
    await agent.aclose()
    await close_firestore(getattr(repository, "client", None))


async def test_a_missing_template_variable_is_the_run_error(
    emulators: EmulatorStack, db: firestore.Client
) -> None:
    """The same rule as ``Agent.run`` and the services: the run exists and ends ERROR."""
    calls: list[dict[str, Any]] = []

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        calls.append(request)
        return {"content": "ok"}

    definition = new_agent("sdk-templated").definition.model_copy(
        update={"user_template": "[{priority}] {token_id}: {input}"}
    )
    agent = DistributedAgent.from_definition(
        definition, project_id=PROJECT, workspace_topic=WORKSPACE
    )
    result = await agent.run("Hello", {"llm_client": llm_client}, run_id="sdk-template")
    assert result.exit is LoopExit.ERROR and calls == []
    assert "user_template needs variables ['priority', 'token_id']" in result.errors[0]
    run = run_doc(db, "sdk-template")
    assert run["result"]["exit"] == "ERROR" and "priority" in run["opening_error"]
    filled = await agent.run(
        "Hello", {"llm_client": llm_client, "priority": "P1", "token_id": "t1"}, run_id="sdk-ok"
    )
    assert filled.exit is LoopExit.SATISFIED
    assert calls[0]["messages"][-1]["content"] == "[P1] t1: Hello"
    await agent.aclose()
