"""Seed 004's document-review example on the emulators, through every service and the CLI:
the token moves once to ``reviewed`` with the content-reviewer's mapped output."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest

from cloudagents import cli
from cloudagents.local.stack import StackState
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transitions" / "document_review.yaml"


def run_cli(state: StackState, *args: str) -> tuple[int, str]:
    env = {"CLOUDAGENTS_API_URL": state.api_url, "CLOUDAGENTS_API_TOKEN": state.api_token}
    printed = io.StringIO()
    with patch.dict(os.environ, env), contextlib.redirect_stdout(printed):
        code = cli.main(list(args))
    return code, printed.getvalue()


def test_document_review_example_end_to_end(api: httpx.Client, stack_state: StackState) -> None:
    code, printed = run_cli(stack_state, "transitions", "apply", "-f", str(EXAMPLE))
    assert code == 0 and "applied workflow document-review" in printed
    data = json.dumps({"content": "Q3 revenue grew 12%."})
    metadata = json.dumps({"type": "report", "priority": "high"})
    code, printed = run_cli(
        stack_state,
        "tokens",
        "create",
        "document-review",
        "--id",
        "it-doc-1",
        "--data",
        data,
        "--metadata",
        metadata,
    )
    assert code == 0 and "it-doc-1 in submitted v1 idle" in printed, printed
    code, printed = run_cli(stack_state, "tokens", "fire", "it-doc-1", "ai_review", "--wait")
    assert code == 0, printed
    token: dict[str, Any] = api.get("/tokens/it-doc-1").json()
    assert token["place"] == "reviewed" and token["history_count"] == 1
    assert token["data"]["review_result"] == "APPROVE" and token["data"]["review_score"] == 8
    assert token["metadata"]["reviewer"] == "content-reviewer"
    [execution] = api.get("/tokens/it-doc-1/executions").json()["executions"]
    assert execution["status"] == "succeeded"
    run = api.get(f"/runs/{execution['run_id']}").json()
    assert run["result"]["exit"] == "SATISFIED" and run["source"] == "transition"
    # A redelivered fire at the version it was sent for changes nothing.
    again = api.post("/tokens/it-doc-1/fire", json={"transition_id": "ai_review", "version": 1})
    assert again.json()["status"] == "stale"
    code, printed = run_cli(stack_state, "tokens", "executions", "it-doc-1")
    assert code == 0 and "content-reviewer succeeded" in printed
    code, _ = run_cli(stack_state, "tokens", "fire", "it-doc-1", "approve")
    assert code == 0
    wait_until(
        lambda: api.get("/tokens/it-doc-1").json()["place"] == "approved", what="approve moved"
    )
    final = api.get("/tokens/it-doc-1").json()
    assert [h["to_place"] for h in final["history"]] == ["reviewed", "approved"]


CLASSIFICATION = EXAMPLE.parent / "classification.yaml"


def test_classification_place_agent_on_cloud_tasks(
    api: httpx.Client, stack_state: StackState
) -> None:
    code, printed = run_cli(stack_state, "transitions", "apply", "-f", str(CLASSIFICATION))
    assert code == 0 and "applied workflow content-intake" in printed
    body = {
        "workflow_id": "content-intake",
        "token_id": "it-item-1",
        "data": {"content": "Our Q3 revenue grew 12%."},
        "metadata": {"type": "article", "status": "unclassified"},
    }
    assert api.post("/tokens", json=body).status_code == 201
    # The Cloud Tasks emulator delivers the execution after initial_delay_seconds (5 s); the
    # classifier's output is mapped back and move_to_categorized fires.
    wait_until(
        lambda: api.get("/tokens/it-item-1").json()["place"] == "categorized",
        timeout=60,
        what="the classified token to move",
    )
    token = api.get("/tokens/it-item-1").json()
    assert token["data"]["classification"] == "finance"
    assert token["metadata"]["classifier"] == "content-classifier"
    executions = api.get("/tokens/it-item-1/executions").json()["executions"]
    assert [(e["place_id"], e["status"]) for e in executions] == [
        ("pending_classification", "succeeded")
    ]
