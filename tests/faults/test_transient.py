"""Transient model failures: retried per the agent's ``retry`` config and recovered; past
``max_attempts`` (or of a kind not retried) the run ends ``ERROR`` with the cause in ``errors``.

The scripted provider raises ``fail_with`` on the first ``fail_times`` attempts of a turn (per
model client, which the executor builds once per step), so the retry count is deterministic.
"""

from __future__ import annotations

from datetime import datetime

from tests.faults import figures
from tests.faults.harness import FaultStack, unique
from tests.faults.scenarios import scripted


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


CASES = {
    # agent: (turns, retry config, expected exit, expected error fragment or None)
    "tr-recovers": (
        [
            {
                "content": "first try failed twice",
                "fail_with": "rate_limit",
                "fail_times": 2,
                "tool_calls": [{"name": "calculator", "arguments": {"expression": "3*3"}}],
            },
            {"content": "nine", "fail_with": "server", "fail_times": 1},
        ],
        {"max_attempts": 3, "backoff_seconds": 0.4, "backoff_multiplier": 2.0},
        "SATISFIED",
        None,
    ),
    "tr-gives-up": (
        [{"content": "never", "fail_with": "server", "fail_times": 5}],
        {"max_attempts": 3, "backoff_seconds": 0.1, "backoff_multiplier": 1.0},
        "ERROR",
        "server: gave up after 3 attempts; last error: server: scripted failure on turn 0",
    ),
    "tr-not-retryable": (
        [{"content": "never", "fail_with": "bad_request", "fail_times": 5}],
        {"max_attempts": 5, "backoff_seconds": 2.0},
        "ERROR",
        "bad_request: scripted failure on turn 0",
    ),
    "tr-kind-not-listed": (
        [{"content": "never", "fail_with": "rate_limit", "fail_times": 1}],
        {"max_attempts": 4, "backoff_seconds": 2.0, "retry_on_errors": ["timeout"]},
        "ERROR",
        "rate_limit: scripted failure on turn 0",
    ),
}


def test_transient_failures_are_retried_per_config(stack: FaultStack) -> None:
    run_ids = {}
    for agent_id, (turns, retry, _, _) in CASES.items():
        stack.register(scripted(agent_id, turns, tools=["calculator"], retry=retry))
        run_ids[agent_id] = unique(agent_id)
        stack.publish(stack.topic("intents"), stack.intent(run_ids[agent_id], agent_id, "go"))
    docs = stack.wait_finished(run_ids.values(), 120)
    summary = {}
    for agent_id, (_, _retry, exit_, error) in CASES.items():
        run_id = run_ids[agent_id]
        result = docs[run_id]["result"]
        summary[agent_id] = f"{result['exit']} {result['errors'][:1]}"
        assert result["exit"] == exit_, (agent_id, result)
        if error is None:
            assert result["errors"] == []
        else:
            assert result["errors"] == [error], (agent_id, result["errors"])
            assert result["payload"]["reason"] == error
    # Recovery took the configured backoffs: 0.4 + 0.8 s before step 0's reply, 0.4 s before
    # step 1's; each step made exactly one (successful) recorded model call.
    run_id = run_ids["tr-recovers"]
    calls = sorted(stack.model_calls(run_id), key=lambda c: c["seq"])
    assert [(c["seq"], c["applied"]) for c in calls] == [(0, True), (1, True)]
    created = ts(docs[run_id]["created_at"])
    first = ts(calls[0]["created_at"]) - created
    second = ts(calls[1]["created_at"]) - ts(calls[0]["created_at"])
    assert first >= 1.2, first
    assert second >= 0.4, second
    figures.record("transient failures", "exits", summary)
    figures.record(
        "transient failures",
        "seconds before the recovered replies (backoffs 0.4+0.8, 0.4)",
        f"{first:.2f}, {second:.2f}",
    )
