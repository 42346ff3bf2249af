"""Approval policies are checked when an agent is registered: the field and the reason, 422."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.services.conftest import Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]


@pytest.mark.parametrize(
    ("approval", "where", "why"),
    [
        ({"approvers": ["alice"], "quorum": 2}, "approval", "quorum 2 can never be reached"),
        ({"on_timeout": "shrug"}, "approval.on_timeout", "'deny' or 'halt'"),
        ({"timeout_seconds": -1}, "approval.timeout_seconds", "greater than 0"),
        ({"threshold": "extreme"}, "approval.threshold", "'low', 'medium' or 'high'"),
        ({"tools": {"calculator": "no_such_rule"}}, "approval.tools.calculator", "registered"),
    ],
)
async def test_an_invalid_policy_is_refused_with_the_field_and_the_reason(
    stack: Stack, approval: dict[str, Any], where: str, why: str
) -> None:
    clients, _ = stack
    answer = await clients["api"].post("/agents", json=scripted_agent("p", approval=approval))
    assert answer.status_code == 422, answer.text
    problems = answer.json()["problems"]
    assert any(p["loc"].startswith(where) and why in p["msg"] for p in problems), problems
    assert (await clients["api"].get("/agents/p")).status_code == 404


async def test_a_valid_policy_is_stored_and_listed_back(stack: Stack) -> None:
    clients, _ = stack
    policy = {"threshold": "medium", "tools": {"calculator": "never"}, "quorum": 1}
    answer = await clients["api"].post("/agents", json=scripted_agent("ok", approval=policy))
    assert answer.status_code == 201, answer.text
    stored = (await clients["api"].get("/agents/ok")).json()["approval"]
    assert stored["threshold"] == "medium" and stored["tools"] == {"calculator": "never"}
    plain = await clients["api"].post("/agents", json=scripted_agent("plain"))
    assert "approval" not in plain.json()
