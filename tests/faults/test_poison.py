"""Poison input published to the real topics: recorded in ``dead_letters`` with the original
message and a clear reason, acknowledged once (it stops looping), and valid traffic published
around it all finishes.

The push subscriptions deliver through ``PushProxy(duplicate=False)`` with no proxy-side
redelivery, so the proxy counts exactly how often Pub/Sub pushed each message: a message the
service did not acknowledge would be pushed again after the subscription's backoff.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.faults import figures
from tests.faults.harness import FaultStack, PushProxy, unique
from tests.faults.scenarios import scripted

WATCH_SECONDS = 8.0  # min backoff is 1 s: an unacknowledged message is pushed again in this time


def poison_cases(ws: str) -> list[dict[str, Any]]:
    """(name, topic, data, expected reason fragment, subscription)."""
    good_intent = {
        "run_id": "poison-run",
        "source_agent": "faults",
        "payload": {"agent_id": "po-ok", "message": "hello"},
    }
    return [
        {
            "name": "not JSON",
            "topic": ws,
            "data": b"this is {not json",
            "reason": "invalid IntentionMessage",
        },
        {
            "name": "wrong schema",
            "topic": ws,
            "data": json.dumps({"hello": "world"}).encode(),
            "reason": "invalid IntentionMessage",
        },
        {
            "name": "unknown agent",
            "topic": ws,
            "data": json.dumps(
                {
                    **good_intent,
                    "run_id": unique("po-unknown-agent"),
                    "payload": {"agent_id": "no-such-agent", "message": "x"},
                }
            ).encode(),
            "reason": "unknown agent 'no-such-agent'",
        },
        {
            "name": "unknown run",
            "topic": f"{ws}-steps",
            "data": json.dumps({"run_id": "no-such-run", "seq": 0}).encode(),
            "reason": "unknown run 'no-such-run'",
        },
        {
            "name": "wrong types",
            "topic": f"{ws}-tools",
            "data": json.dumps({"run_id": 17, "seq": "three", "index": -1}).encode(),
            "reason": "invalid ToolMessage",
        },
        {
            "name": "attention_weight out of range",
            "topic": ws,
            "data": json.dumps(
                {**good_intent, "run_id": unique("po-weight"), "attention_weight": 7.5}
            ).encode(),
            "reason": "attention_weight",
        },
        {
            "name": "invalid UTF-8",
            "topic": f"{ws}-snapshots",
            "data": b'{"run_id": "\xff\xfe\xfd", "seq": 1}',
            "reason": "not valid UTF-8",
        },
        {
            "name": "payload is not a run start",
            "topic": ws,
            "data": json.dumps(
                {**good_intent, "run_id": unique("po-payload"), "payload": {"agent": 3}}
            ).encode(),
            "reason": "not a run start",
        },
        {
            "name": "unknown handoff offer",
            "topic": f"{ws}-handoff",
            "data": json.dumps({"offer_id": "no-such-offer"}).encode(),
            "reason": "unknown handoff offer",
        },
        {
            "name": "JSON array on the steps topic",
            "topic": f"{ws}-steps",
            "data": b"[1, 2, 3]",
            "reason": "invalid StepMessage",
        },
    ]


def oversized(ws: str) -> dict[str, Any]:
    intent = {
        "run_id": unique("po-big"),
        "source_agent": "faults",
        "payload": {"agent_id": "po-ok", "message": "x", "variables": {"pad": "p" * 1_100_000}},
    }
    return {
        "name": "oversized (>1 MB)",
        "topic": ws,
        "data": json.dumps(intent).encode(),
        "reason": "exceeds 1000000",
        # A dead-letter document cannot hold a >1 MiB message: a prefix of it is acceptable.
        "prefix_ok": True,
    }


def subscription_of(stack: FaultStack, topic: str) -> str:
    return next(s.name for s in stack.topology.subscriptions if s.topic == topic)


def publish_and_check(
    stack: FaultStack, cases: list[dict[str, Any]], valid: int
) -> tuple[list[str], PushProxy]:
    """Publish ``cases`` between valid intents; returns problems found and the proxy."""
    stack.register(
        scripted(
            "po-ok",
            [
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]},
                {"content": "4"},
            ],
            tools=["calculator"],
        )
    )
    proxy = PushProxy(stack, duplicate=False).start()
    proxy.takeover = False  # Pub/Sub itself must redeliver anything not acknowledged
    problems: list[str] = []
    try:
        proxy.route(stack.original_endpoints)
        run_ids = [unique("po-valid") for _ in range(valid)]
        per_gap = max(1, valid // (len(cases) + 1))
        pending = list(run_ids)
        for case in cases:
            for run_id in pending[:per_gap]:
                stack.publish(stack.topic("intents"), stack.intent(run_id, "po-ok", "2+2?"))
            pending = pending[per_gap:]
            case["message_id"] = stack.publish(case["topic"], case["data"])
        for run_id in pending:
            stack.publish(stack.topic("intents"), stack.intent(run_id, "po-ok", "2+2?"))
        docs = stack.wait_finished(run_ids, 120)
        bad = [r for r, d in docs.items() if d["result"]["exit"] != "SATISFIED"]
        if bad:
            problems.append(f"valid runs not SATISFIED: {bad[:5]}")
        deadline = time.monotonic() + 60
        for case in cases:
            sub = subscription_of(stack, case["topic"])
            letter_ref = stack.db.collection("dead_letters").document(f"{sub}-{case['message_id']}")
            while not (snap := letter_ref.get()).exists and time.monotonic() < deadline:
                time.sleep(0.25)
            case["letter"] = snap.to_dict() if snap.exists else None
        time.sleep(WATCH_SECONDS)
        for case in cases:
            letter = case["letter"]
            pushes = proxy.stats.deliveries.get(case["message_id"], 0)
            case["pushes"] = pushes
            if letter is None:
                problems.append(f"{case['name']}: no dead letter (pushed {pushes} times)")
                continue
            kept = base64.b64decode(letter["data"])
            if case.get("prefix_ok") and kept and case["data"].startswith(kept):
                case["kept_bytes"] = len(kept)
            elif kept != case["data"]:
                problems.append(f"{case['name']}: dead letter does not hold the original message")
            if case["reason"] not in letter["reason"]:
                problems.append(f"{case['name']}: reason {letter['reason'][:200]!r}")
            if pushes != 1:
                problems.append(f"{case['name']}: pushed {pushes} times (not acknowledged?)")
    finally:
        proxy.stop()
    return problems, proxy


def test_poison_messages_are_dead_lettered_once(stack: FaultStack) -> None:
    cases = poison_cases(stack.local.workspace)
    problems, _ = publish_and_check(stack, cases, valid=20)
    section = "poison input"
    figures.record(section, "poison messages published", len(cases))
    figures.record(
        section,
        "dead-lettered (reason)",
        {c["name"]: (c["letter"] or {}).get("reason", "MISSING")[:80] for c in cases},
    )
    figures.record(section, "pushes per poison message", {c["name"]: c["pushes"] for c in cases})
    figures.record(section, "valid runs around them finished", 20)
    assert problems == []


@pytest.mark.timeout(600)
def test_oversized_message_is_dead_lettered_once(stack: FaultStack) -> None:
    case = oversized(stack.local.workspace)
    problems, _ = publish_and_check(stack, [case], valid=4)
    section = "poison input"
    figures.record(
        section,
        "oversized (>1 MB) message",
        {
            "dead letter": (case["letter"] or {}).get("reason", "MISSING")[:80],
            "bytes kept": case.get("kept_bytes"),
            "pushes": case["pushes"],
        },
    )
    assert problems == []
