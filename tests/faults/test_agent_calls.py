"""Agent-to-agent calls under faults: trees of three levels with fan-out 3 (a root calls three
agents, each of which calls three more, each of which calls a tool), every message delivered
2-3 times through ``PushProxy(duplicate=True)``, while the run executor and the tool invoker are
SIGKILLed. Each child is created once, each caller resumed once, none lost, and every run's
transcript equals that of a reference tree run without faults."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.faults import figures
from tests.faults.harness import FaultStack, Supervisor, proxied, sized, unique
from tests.faults.scenarios import RunSnapshot

FAN_OUT = 3
TREES = sized(3, 9)


def agent(agent_id: str, first: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": agent_id,
        "instructions": f"You are {agent_id}.",
        "model": {
            "provider": "scripted",
            "name": "scripted-tree",
            "script": [first, {"content": f"{agent_id} is done", "total_tokens": 7}],
        },
        "retry": {"max_attempts": 3, "backoff_seconds": 0.2},
        "timeout_seconds": sized(400, 2400),
        **extra,
    }


def fan_out(peer: str) -> dict[str, Any]:
    calls = [{"name": f"invoke_{peer}", "arguments": {"request": f"part {i}"}} for i in range(3)]
    return {"tool_calls": calls, "total_tokens": 11}


AGENTS = [
    agent(
        "tc-leaf",
        {"tool_calls": [{"name": "word_count", "arguments": {"text": "a b c"}}]},
        tools=["word_count"],
    ),
    agent("tc-mid", fan_out("tc_leaf"), allowed_peers=["tc-leaf"]),
    agent("tc-top", fan_out("tc_mid"), allowed_peers=["tc-mid"]),
]


def tree_ids(root: str) -> list[str]:
    """The run ids of a tree: derived from each call, so they are known in advance."""
    ids, level = [root], [root]
    for _ in range(2):
        level = [f"{r}-c000000-{i:03d}" for r in level for i in range(FAN_OUT)]
        ids.extend(level)
    return ids


def snapshots(stack: FaultStack, root: str) -> dict[str, RunSnapshot]:
    docs = stack.wait_finished(tree_ids(root), 1, follow_handoffs=False)
    return {r.replace(root, "ROOT"): RunSnapshot.read(stack, r, d) for r, d in docs.items()}


def start(stack: FaultStack, root: str) -> None:
    stack.publish(stack.topic("intents"), stack.intent(root, "tc-top", "build the tree"))


@pytest.mark.timeout(sized(900, 3600))
def test_call_trees_under_duplicates_and_kills(stack: FaultStack) -> None:
    for definition in AGENTS:
        stack.register(definition)
    reference = unique("tcref")
    start(stack, reference)
    stack.wait_finished(tree_ids(reference), 120, follow_handoffs=False)
    expected = snapshots(stack, reference)
    assert len(expected) == 13 and all(
        s.doc["result"]["exit"] == "SATISFIED" for s in expected.values()
    )

    roots = [unique("tc") for _ in range(TREES)]
    wanted = [r for root in roots for r in tree_ids(root)]
    started = time.monotonic()
    supervisor = Supervisor(stack).start()
    stop = threading.Event()

    def kill_twice() -> None:
        for name in ("run_executor", "tool_invoker"):
            if stop.wait(4.0):
                return
            supervisor.kill(name)

    killer = threading.Thread(target=kill_twice, daemon=True)
    try:
        with proxied(stack, duplicate=True, seed=20261202) as proxy:
            for root in roots:
                start(stack, root)
            killer.start()
            docs = stack.wait_finished(wanted, sized(600, 3000), follow_handoffs=False)
            extra = proxy.stats.replays + proxy.stats.republished
    finally:
        stop.set()
        killer.join()
        supervisor.stop()
    seconds = time.monotonic() - started

    mismatched: list[str] = []
    for root in roots:
        got = snapshots(stack, root)
        assert set(got) == set(expected), f"tree {root}: runs {sorted(set(got) ^ set(expected))}"
        for name, snap in got.items():
            want = expected[name]
            same = (
                snap.result(root) == want.result(reference)
                and snap.messages(root) == want.messages(reference)
                and len(snap.interactions) == len(want.interactions)
                and snap.doc["seq"] == want.doc["seq"]
            )
            if not same:
                mismatched.append(f"{root}:{name}")
    # No run outside the trees was started by them (a second child of one call would be one).
    strays = [
        d.id
        for d in stack.db.collection("agent_runs").stream()
        if any(d.id.startswith(root) for root in roots) and d.id not in set(wanted)
    ]
    figures.record("agent calls", "trees (3 levels, fan-out 3)", TREES)
    figures.record("agent calls", "runs", len(docs))
    figures.record("agent calls", "seconds", round(seconds, 1))
    figures.record("agent calls", "services SIGKILLed", sum(supervisor.kills.values()))
    figures.record("agent calls", "children created twice or stray", len(strays))
    figures.record("agent calls", "runs differing from the reference", len(mismatched))
    figures.record("agent calls", "extra deliveries (replays + republished)", extra)
    assert sum(supervisor.kills.values()) == 2
    assert not strays, strays
    assert not mismatched, mismatched
