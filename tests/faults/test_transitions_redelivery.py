"""Seed 004's transitions under at-least-once delivery: every push (fire intents, the agents'
runs, their completions) delivered two or three times, some copies concurrently, by the
``PushProxy``. Each token moves exactly once and each agent execution runs once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudagents.domain.transitions import FireIntent
from tests.faults import figures
from tests.faults.harness import FaultStack, proxied, sized, unique

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transitions" / "document_review.yaml"
TOKENS = sized(20, 100)
SECTION = "transitions redelivery"


def settled(stack: FaultStack, token_ids: list[str]) -> dict[str, dict[str, Any]]:
    assert stack.api is not None
    found = {t: stack.api.get(f"/tokens/{t}").json() for t in token_ids}
    return {t: d for t, d in found.items() if d["firing"] is None and d["history_count"] >= 1}


@pytest.mark.timeout(sized(600, 3600))
def test_each_token_moves_once_under_duplicate_deliveries(stack: FaultStack) -> None:
    assert stack.api is not None
    spec = yaml.safe_load(EXAMPLE.read_text())
    for agent in spec["agents"]:
        stack.register(agent)
    workflow = spec["workflows"][0]
    assert stack.api.post("/transition-workflows", json=workflow).status_code == 201
    token_ids = [unique("tok") for _ in range(TOKENS)]
    for token_id in token_ids:
        body = {
            "workflow_id": workflow["id"],
            "token_id": token_id,
            "data": {"content": f"Document {token_id}."},
            "metadata": {"type": "report", "priority": "high"},
        }
        assert stack.api.post("/tokens", json=body).status_code == 201
    started = time.monotonic()
    with proxied(stack, duplicate=True, seed=20261202) as proxy:
        stack.publish_many(
            (
                stack.topic("transitions"),
                FireIntent(token_id=t, transition_id="ai_review", version=1)
                .model_dump_json()
                .encode(),
            )
            for t in token_ids
        )
        deadline = time.monotonic() + sized(300, 3000)
        while len(done := settled(stack, token_ids)) < len(token_ids):
            assert time.monotonic() < deadline, f"{len(token_ids) - len(done)} tokens not moved"
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        quiet = time.monotonic() + 60
        while proxy.busy() and time.monotonic() < quiet:
            time.sleep(0.5)
        time.sleep(3.0)  # late duplicates (republished copies) land, and must change nothing
        duplicated = proxy.stats
    moved_twice, executions_twice, wrong = [], [], []
    for token_id in token_ids:
        token = stack.api.get(f"/tokens/{token_id}").json()
        if token["history_count"] != 1 or len(token["history"]) != 1:
            moved_twice.append(token_id)
        if token["place"] != "reviewed" or token["data"].get("review_result") != "APPROVE":
            wrong.append(token_id)
        executions = stack.api.get(f"/tokens/{token_id}/executions").json()["executions"]
        runs = {e["run_id"] for e in executions}
        iterations = [stack.api.get(f"/runs/{r}").json()["result"]["iterations"] for r in runs]
        if len(executions) != 1 or iterations != [1]:
            executions_twice.append(token_id)
    figures.record(SECTION, "tokens fired (each fire intent and push delivered 2-3 times)", TOKENS)
    figures.record(
        SECTION,
        "tokens moved twice / agent executions twice / wrong place",
        f"{len(moved_twice)} / {len(executions_twice)} / {len(wrong)}",
    )
    figures.record(SECTION, "seconds until every token moved", round(elapsed, 1))
    copies = duplicated.replays + duplicated.republished
    figures.record(
        SECTION, "pushes forwarded / duplicate copies", f"{duplicated.forwarded} / {copies}"
    )
    assert copies > 0, "nothing was duplicated: the test would prove nothing"
    assert moved_twice == [] and executions_twice == [] and wrong == []
