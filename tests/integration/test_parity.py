"""Parity: the same scripted agents give the same results and transcripts on every entry point.

Each scenario runs through ``Agent.run`` (in process, memory adapters), the services (every
``main.py`` through functions-framework's ASGI app on the memory backend, messages delivered by
the ``Pump`` as Pub/Sub push bodies) and ``DistributedAgent.run`` (in process, on the Firestore,
Pub/Sub and Cloud Storage emulators). What is compared, per run: the ``LoopResult``, the
transcript, the events (content chunks merged: their batching depends on timing by design), the
interaction records, the run document's counters and, for a handoff, the offer. Only what is
expected to differ is normalised: timestamps, and the project in ``gs://`` URIs.

The ``Agent.run`` outcome is the reference; the services and ``DistributedAgent`` tests compare
with it (``-k services`` needs no emulators).

Checked to fail when one path behaves differently (each change made alone, run, reverted): the
dispatcher sending snapshots outward instead of to the snapshotter (every scenario fails); the
executor not counting a handoff's depth in process only (``handoff``); ``Agent.run`` given a fresh
cost ledger per run (``daily-cost-cap``); the tool invoker service ignoring all but the first
call of a step (``parallel-tools``); the dispatcher delivering only the first call of a step
(``parallel-tools``); ``DistributedAgent`` dropping its agent's ``max_chain_depth``
(``handoff``, on the emulators). The approval scenarios answer each approval with the
in-process callback and, in the services, with ``POST /runs/{id}/approvals/{approval_id}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import patch

import pytest

from cloudagents import Agent, AgentDefinition
from cloudagents.adapters.memory.messaging import InMemoryEventBus
from cloudagents.bootstrap import get_deps, reset_deps
from cloudagents.domain.runs import RunRecord
from cloudagents.gcp import DistributedAgent
from cloudagents.local.emulators import EmulatorStack, start_stack
from cloudagents.ports.stores import HandoffStore, RunStore
from tests.integration.parity_tools import TOOLS
from tests.integration.pubsub import pull, pull_subscription
from tests.services.conftest import TOKEN, Pump, service_clients

pytestmark = pytest.mark.integration

PROJECT = "parity-project"
WORKSPACE = "parity"
NO_RETRY_WAIT = {"max_attempts": 2, "backoff_seconds": 0}
PRICED = {"input_price_per_million": 1000.0, "output_price_per_million": 1000.0}


def turn(**fields: Any) -> dict[str, Any]:
    return {"total_tokens": 20, **fields}


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


@dataclass(frozen=True)
class Scenario:
    """An agent definition and the messages of its runs (run one after another)."""

    turns: list[dict[str, Any]]
    messages: tuple[str, ...] = ("go",)
    overrides: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] | None = None
    """The answer to every approval the run asks for: the in-process callback's, and the body
    the services test POSTs to ``/runs/{id}/approvals/{approval_id}`` (as ``tester``)."""

    def approval(self, request: Any) -> dict[str, Any] | None:
        return None if self.decision is None else {**self.decision, "principal": "tester"}

    def definition(self, agent_id: str) -> AgentDefinition:
        data: dict[str, Any] = {
            "id": agent_id,
            "instructions": "You answer with the tools.",
            "model": {"provider": "scripted", "name": "scripted-parity", "script": self.turns},
            "tools": ["add", "multiply", "wipe"],
            "retry": NO_RETRY_WAIT,
        }
        for key, value in self.overrides.items():
            data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
        return AgentDefinition.model_validate(data)


SCENARIOS: dict[str, Scenario] = {
    "tool-call": Scenario(
        [turn(tool_calls=[call("add", a=2, b=2)]), turn(content="2+2=4")], ("what is 2+2?",)
    ),
    "parallel-tools": Scenario(
        [
            turn(tool_calls=[call("add", a=2, b=3), call("multiply", a=4, b=5)]),
            turn(content="5 and 20"),
        ]
    ),
    "handoff": Scenario(
        [
            turn(
                handoff_target={
                    "required_capabilities": ["ocr"],
                    "ttl_seconds": 300,
                    "message": "read the scan",
                }
            )
        ]
    ),
    "guardrail-input": Scenario(
        [turn(content="never")],
        ("how to do something illegal",),
        {"guardrails": {"blocked_patterns": ["illegal"]}},
    ),
    "guardrail-tool": Scenario([turn(tool_calls=[call("wipe")])]),
    "token-budget": Scenario(
        [turn(tool_calls=[call("add", a=1, b=1)], total_tokens=30)],
        overrides={"budget": {"max_tokens_per_run": 50}},
    ),
    "daily-cost-cap": Scenario(
        [turn(content="ok", total_tokens=1000)],
        ("one", "two", "three"),
        {
            "model": {
                "provider": "scripted",
                "name": "scripted-priced",
                "script": [turn(content="ok", total_tokens=1000)],
                **PRICED,
            },
            "generation": {"max_tokens": 1000},
            "budget": {"max_daily_cost": 2.5},
        },
    ),
    "output-schema-retry": Scenario(
        [turn(content="four"), turn(content={"answer": 4})],
        overrides={
            "output_schema": {
                "type": "object",
                "required": ["answer"],
                "properties": {"answer": {"type": "number"}},
            }
        },
    ),
    "approval-edited": Scenario(
        [
            turn(tool_calls=[call("add", a=2, b=3), call("multiply", a=4, b=5)]),
            turn(content="5 and 24"),
        ],
        overrides={"approval": {"threshold": None, "tools": {"multiply": "always"}}},
        decision={"decision": "approve", "reason": "fine", "arguments": {"a": 4, "b": 6}},
    ),
    "approval-rejected": Scenario(
        [turn(tool_calls=[call("wipe")]), turn(content="not wiped")],
        overrides={"approval": {"threshold": "high"}},
        decision={"decision": "reject", "reason": "never wipe"},
    ),
    "provider-error-retried": Scenario([turn(content="ok", fail_with="rate_limit", fail_times=1)]),
    "provider-error-exhausted": Scenario([turn(content="never", fail_with="server", fail_times=5)]),
}


def agent_id_of(name: str) -> str:
    return "parity-" + name


def run_id_of(name: str, index: int) -> str:
    return f"parity-{name}-{index}"


# -- what is compared -------------------------------------------------------------------------

TIME_KEYS = {
    "timestamp",
    "expires_at",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "lease_until",
}
OUTWARD = ("handoff", "tools_audit")
"""The topics whose messages leave the process (compared, as what other services receive)."""
GS_PROJECT = re.compile(r"gs://[a-z0-9-]+-agent-context/")


def normalised(value: Any) -> Any:
    """``value`` without timestamps and with ``gs://{project}-agent-context/`` made neutral."""
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items() if k not in TIME_KEYS}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, str):
        return GS_PROJECT.sub("gs://agent-context/", value)
    return value


def merged_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive content chunks of a step as one (how text is batched depends on timing);
    event ids of the model phase (``a``) are renumbered by the merge, so they are dropped."""
    out: list[dict[str, Any]] = []
    for event in events:
        event = dict(event)
        if "-a" in event.get("id", ""):
            event.pop("id")
        last = out[-1] if out else None
        if (
            last is not None
            and event["type"] == last["type"] == "content_chunk"
            and event["seq"] == last["seq"]
        ):
            last["chunk"] += event["chunk"]
            continue
        out.append(event)
    return out


async def outcome(runs: RunStore, handoffs: HandoffStore, run_id: str) -> dict[str, Any]:
    """Everything the parity test compares about one finished run."""
    run = await runs.get_run(run_id)
    assert run is not None and run.finished, f"run {run_id} did not finish: {run}"
    assert run.result is not None
    offer = None
    if run.handoff_offer_id is not None:
        found = await handoffs.get_offer(run.handoff_offer_id)
        assert found is not None
        offer = found.model_dump(mode="json", exclude={"expiry_task"})
    events = [e.model_dump(mode="json") for e in await runs.events(run_id)]
    tool_calls = [
        record.model_dump(mode="json")
        for seq in range(run.seq)
        for record in await runs.tool_calls(run_id, seq)
    ]
    return normalised(
        {
            "result": run.result.model_dump(mode="json"),
            "transcript": [m.model_dump(mode="json") for m in await runs.messages(run_id)],
            "events": merged_events(events),
            "interactions": [
                # The applied model call's id is random: whether the step names one is compared.
                {
                    **i.model_dump(mode="json", exclude={"agent_id", "applied_model_call"}),
                    "names_its_model_call": i.applied_model_call is not None,
                }
                for i in await runs.interactions(run_id)
            ],
            "tool_calls": tool_calls,
            "run": run_counters(run),
            "offer": offer,
        }
    )


def run_counters(run: RunRecord) -> dict[str, Any]:
    return {
        "status": run.status.value,
        "seq": run.seq,
        "message_count": run.message_count,
        "progress": run.progress.model_dump(mode="json"),
        "pending_tool_calls": run.pending_tool_calls,
        "chain_depth": run.chain_depth,
        "handoff_offer_id": run.handoff_offer_id,
        "handoff_status": run.handoff_status,
        "snapshot": run.snapshot.model_dump(mode="json") if run.snapshot else None,
    }


def tools_of(definition: AgentDefinition) -> list[Any]:
    return [t for t in TOOLS if t.name in definition.tools]


# -- the three entry points -------------------------------------------------------------------


def published(messages: list[tuple[str, bytes]]) -> dict[str, list[Any]]:
    """What left on each outward topic (``(topic, data)`` pairs), in a stable order; topics are
    told by their suffix (``Agent.run``'s workspace is ``local``)."""
    out: dict[str, list[Any]] = {role: [] for role in OUTWARD}
    for topic, data in messages:
        for role in OUTWARD:
            if topic.endswith("-" + role.replace("_", "-")):
                out[role].append(json.loads(data))
    return {role: sorted(items, key=json.dumps) for role, items in out.items()}


async def through_agent_run(name: str) -> dict[str, Any]:
    scenario = SCENARIOS[name]
    definition = scenario.definition(agent_id_of(name))
    agent = Agent(definition, tools=tools_of(definition), outward=InMemoryEventBus())
    deps = agent.driver.deps
    runs = []
    for index, message in enumerate(scenario.messages):
        result = await agent.run(message, run_id=run_id_of(name, index), approval=scenario.approval)
        found = await outcome(deps.runs, deps.handoffs, run_id_of(name, index))
        assert found["result"] == normalised(result.model_dump(mode="json"))
        runs.append(found)
    outward = agent.driver.dispatcher.outward
    assert isinstance(outward, InMemoryEventBus)
    sent = published([(m.topic, m.data) for m in outward.published])
    return {"runs": runs, "published": sent}


@pytest.fixture
async def services(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Pump]:
    """Every service's ``main.py`` on the memory backend, with the parity tools loaded."""
    for name, value in {
        "CLOUDAGENTS_BACKEND": "memory",
        "GOOGLE_CLOUD_PROJECT": "test-project",
        "CLOUDAGENTS_WORKSPACE": WORKSPACE,
        "CLOUDAGENTS_BROKER_URL": "http://svc",
        "CLOUDAGENTS_WAKE_URL": "http://svc",
        "CLOUDAGENTS_PUSH_AUTH": "off",
        "CLOUDAGENTS_API_TOKENS": f"tester={TOKEN}",
        "CLOUDAGENTS_TOOL_MODULES": "tests.integration.parity_tools",
    }.items():
        monkeypatch.setenv(name, value)
    reset_deps()
    clients = service_clients()
    yield Pump(await get_deps(), clients)
    for client in clients.values():
        await client.aclose()
    reset_deps()


async def through_services(name: str, pump: Pump) -> dict[str, Any]:
    scenario = SCENARIOS[name]
    api = pump.clients["api"]
    definition = scenario.definition(agent_id_of(name)).model_dump(mode="json")
    assert (await api.post("/agents", json=definition)).status_code == 201
    outcomes = []
    for index, message in enumerate(scenario.messages):
        body = {"agent_id": agent_id_of(name), "message": message, "run_id": run_id_of(name, index)}
        assert (await api.post("/runs", json=body)).status_code == 202
        await pump.run()
        if scenario.decision is not None:
            run_id = run_id_of(name, index)
            for approval in (await api.get(f"/runs/{run_id}/approvals")).json()["approvals"]:
                decided = await api.post(
                    f"/runs/{run_id}/approvals/{approval['approval_id']}", json=scenario.decision
                )
                assert decided.status_code == 200, decided.text
            await pump.run()
        outcomes.append(await outcome(pump.deps.runs, pump.deps.handoffs, run_id_of(name, index)))
    sent = published([(m.topic, m.data) for m in pump.bus.published])
    return {"runs": outcomes, "published": sent}


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorStack]:
    stack = start_stack(PROJECT, tmp_path_factory.mktemp("parity-emulator-logs"))
    try:
        with patch.dict(os.environ, stack.env()):
            yield stack
    finally:
        stack.stop()


async def through_distributed_agent(name: str, expected: dict[str, list[Any]]) -> dict[str, Any]:
    from google.cloud import firestore

    from cloudagents.adapters.firestore.stores import FirestoreHandoffStore, FirestoreRunStore

    scenario = SCENARIOS[name]
    subscriptions = {
        role: await asyncio.to_thread(pull_subscription, PROJECT, topic)
        for role, topic in ((r, f"{WORKSPACE}-{r.replace('_', '-')}") for r in OUTWARD)
    }
    definition = scenario.definition(agent_id_of(name))
    agent = DistributedAgent.from_definition(
        definition, project_id=PROJECT, workspace_topic=WORKSPACE, tools=tools_of(definition)
    )
    db = firestore.AsyncClient(project=PROJECT)
    runs = FirestoreRunStore(db)
    outcomes = []
    try:
        for index, message in enumerate(scenario.messages):
            result = await agent.run(
                message, run_id=run_id_of(name, index), approval=scenario.approval
            )
            found = await outcome(runs, FirestoreHandoffStore(db), run_id_of(name, index))
            assert found["result"] == normalised(result.model_dump(mode="json"))
            outcomes.append(found)
    finally:
        await agent.aclose()
    sent: list[tuple[str, bytes]] = []
    pulled = await asyncio.gather(  # the topics' lingers (for a late duplicate) overlap
        *(
            asyncio.to_thread(pull, subscription, len(expected[role]), linger=1.0)
            for role, subscription in subscriptions.items()
        )
    )
    for role, data in zip(subscriptions, pulled, strict=True):
        topic = f"{WORKSPACE}-{role.replace('_', '-')}"
        sent.extend((topic, item.data) for item in data)
    return {"runs": outcomes, "published": published(sent)}


# -- the tests --------------------------------------------------------------------------------


async def test_every_scenario_ends_as_intended() -> None:
    """The scenarios cover what they say (so parity is not parity of trivial runs)."""
    exits = {
        "tool-call": ["SATISFIED"],
        "parallel-tools": ["SATISFIED"],
        "handoff": ["HANDOFF"],
        "guardrail-input": ["GUARDRAIL_BLOCK"],
        "guardrail-tool": ["GUARDRAIL_BLOCK"],
        "token-budget": ["BUDGET_EXCEEDED"],
        "daily-cost-cap": ["SATISFIED", "SATISFIED", "BUDGET_EXCEEDED"],
        "output-schema-retry": ["SATISFIED"],
        "approval-edited": ["SATISFIED"],
        "approval-rejected": ["SATISFIED"],
        "provider-error-retried": ["SATISFIED"],
        "provider-error-exhausted": ["ERROR"],
    }
    assert set(exits) == set(SCENARIOS)
    for name, expected in exits.items():
        got = await through_agent_run(name)
        assert [o["result"]["exit"] for o in got["runs"]] == expected, name
    sent = (await through_agent_run("parallel-tools"))["published"]
    assert [(a["tool"], a["idempotency_key"]) for a in sent["tools_audit"]] == [
        ("add", "parity-parallel-tools-0:0:0"),
        ("multiply", "parity-parallel-tools-0:0:1"),
    ]
    edited = (await through_agent_run("approval-edited"))["runs"][0]["tool_calls"]
    assert [(c["call"]["name"], c["result"], c["approval"]) for c in edited] == [
        ("add", 5, None),
        ("multiply", 24, "approved"),
    ]
    (wiped,) = (await through_agent_run("approval-rejected"))["runs"][0]["tool_calls"]
    assert "rejected by tester: never wipe" in wiped["result"] and wiped["approval"] == "rejected"
    assert (await through_agent_run("handoff"))["published"]["handoff"] == [
        {"schema_version": 1, "offer_id": "offer-parity-handoff-0-0"}
    ]


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_services_match_agent_run(name: str, services: Pump) -> None:
    expected = await through_agent_run(name)
    assert await through_services(name, services) == expected


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_distributed_agent_matches_agent_run(name: str, emulators: EmulatorStack) -> None:
    expected = await through_agent_run(name)
    assert await through_distributed_agent(name, expected["published"]) == expected
