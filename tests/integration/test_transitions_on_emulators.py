"""Seed 004's document-review example on the emulators, through every service and the CLI:
the token moves once to ``reviewed`` with the content-reviewer's mapped output."""

from __future__ import annotations

import contextlib
import io
import json
import os
from datetime import datetime
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


def test_a_place_agent_added_later_runs_on_a_token_already_in_its_place(
    api: httpx.Client, stack_state: StackState
) -> None:
    """The workflow registered again (twice) with a place agent: Firestore finds the token
    already in its place, the Cloud Tasks emulator delivers the execution, it runs once."""
    import yaml

    spec = yaml.safe_load(CLASSIFICATION.read_text())
    agent = spec["agents"][0]
    agent["id"] = "it-late-classifier"
    workflow = spec["workflows"][0]
    workflow["id"] = "it-late-intake"
    [config] = workflow["place_agents"]
    config["agent_id"] = "it-late-classifier"
    config["schedule"] = {"initial_delay_seconds": 0, "max_executions": 1}
    assert api.post("/agents", json=agent).status_code == 201
    assert (
        api.post("/transition-workflows", json={**workflow, "place_agents": []}).status_code == 201
    )
    body = {
        "workflow_id": "it-late-intake",
        "token_id": "it-late-1",
        "data": {"content": "Our Q3 revenue grew 12%."},
        "metadata": {"type": "article", "status": "unclassified"},
    }
    assert api.post("/tokens", json=body).status_code == 201
    for _ in range(2):
        assert api.post("/transition-workflows", json=workflow).status_code == 201
    wait_until(
        lambda: api.get("/tokens/it-late-1").json()["place"] == "categorized",
        timeout=60,
        what="the token already in the place to be classified and moved",
    )
    token = api.get("/tokens/it-late-1").json()
    assert token["data"]["classification"] == "finance"
    executions = api.get("/tokens/it-late-1/executions").json()["executions"]
    assert [(e["place_id"], e["status"]) for e in executions] == [
        ("pending_classification", "succeeded")
    ]


def test_a_retry_waits_out_its_backoff_on_the_cloud_tasks_emulator(
    api: httpx.Client, stack_state: StackState
) -> None:
    """A failed attempt's retry is a Cloud Task (``{ws}-place-agents``), delivered by the
    emulator after ``backoff_seconds``: every attempt runs once, then the token keeps the reason."""
    import yaml

    spec = yaml.safe_load(EXAMPLE.read_text())
    agent = spec["agents"][0]
    agent["id"] = "it-flaky-reviewer"
    agent["retry"] = {"max_attempts": 1, "backoff_seconds": 0}
    turn = agent["model"]["script"][0]
    agent["model"]["script"] = [{**turn, "fail_with": "rate_limit", "fail_times": 99}]
    workflow = spec["workflows"][0]
    workflow["id"] = "it-retry-review"
    config = workflow["transitions"][0]["agent_execution"]
    config["agent_id"] = "it-flaky-reviewer"
    config["retry_config"] = {
        "max_attempts": 2,
        "backoff_seconds": 1,
        "retry_on_errors": ["rate_limit"],
    }
    assert api.post("/agents", json=agent).status_code == 201
    assert api.post("/transition-workflows", json=workflow).status_code == 201
    body = {
        "workflow_id": "it-retry-review",
        "token_id": "it-retry-1",
        "data": {"content": "Q3 revenue grew 12%."},
        "metadata": {"type": "report", "priority": "high"},
    }
    assert api.post("/tokens", json=body).status_code == 201
    fired = api.post("/tokens/it-retry-1/fire", json={"transition_id": "ai_review"})
    assert fired.status_code == 202, fired.text

    def settled() -> bool:
        token = api.get("/tokens/it-retry-1").json()
        return token["firing"] is None and token["last_error"] is not None

    wait_until(settled, timeout=90, what="both attempts to fail")
    token = api.get("/tokens/it-retry-1").json()
    assert token["place"] == "submitted" and "rate_limit" in token["last_error"]
    executions = api.get("/tokens/it-retry-1/executions").json()["executions"]
    assert [(e["attempt"], e["status"]) for e in executions] == [(1, "failed"), (2, "failed")]
    first, second = executions
    started = datetime.fromisoformat(second["started_at"])
    assert started >= datetime.fromisoformat(first["finished_at"]), "it started before its backoff"
