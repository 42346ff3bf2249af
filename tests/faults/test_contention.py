"""Contention: many concurrent runs of one agent share its daily cost cap and its
tools-per-minute limit.

Overspend bound (derived in docs/reliability.md from ``RunExecutor._step`` / ``_call_model``):
a call is admitted when ``spent + r <= cap`` (``spent`` read from the sharded ledger, ``r`` =
``pricing.max_call_cost``), then ``r`` is added, the model is called, and ``actual - r`` is added.
Take the admitted call L whose read came last. Its read saw ``S_L <= cap - r``. What it did not
see: the actual cost of calls admitted concurrently whose reservation was not yet written
(``W`` of them) and the excess ``actual - r`` of calls reserved but not yet settled (``V``).
So ``spend - cap <= (1 + V) * max(A - r, 0) + W * A`` with ``A`` the largest actual call cost;
with ``c`` calls admitted concurrently (``V + W <= c - 1``):

    overspend <= max(A - r, 0) + (c - 1) * A

The test measures the spend, the worst-case ``c`` it can observe, and asserts the bound.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

import pytest

from tests.faults import figures
from tests.faults.harness import RATE_WINDOW_SECONDS, FaultStack, sized, unique
from tests.faults.scenarios import scripted

RUNS = sized(50, 150)
PRICE = 1000.0  # USD per million tokens, input and output: 0.001 USD a token
TOKENS = 100  # per call: actual A = 0.1 USD
MAX_TOKENS = 50  # reservation r = 50 * PRICE / 1e6 = 0.05 USD < A
CAP = 6.0  # step 0 of every run fits (5 USD), then about 10 more calls
TOOLS_PER_MINUTE = 30  # about 50 tool calls: two windows (RATE_WINDOW_SECONDS long here)
DELAY = 0.5  # each model call takes this long, so calls overlap
CONTENTION_MARKERS = ("contention", "Aborted", "Failed to commit transaction", "lock timeout")


def agent(agent_id: str) -> dict:
    turns = [
        {
            "tool_calls": [{"name": "rate_probe", "arguments": {"tag": "t"}}],
            "total_tokens": TOKENS,
            "delay_seconds": DELAY,
        },
        {"content": "done", "total_tokens": TOKENS, "delay_seconds": DELAY},
    ]
    return scripted(
        agent_id,
        turns,
        tools=["rate_probe"],
        model={
            "provider": "scripted",
            "name": f"scripted-{agent_id}",
            "input_price_per_million": PRICE,
            "output_price_per_million": PRICE,
            "script": turns,
        },
        generation={"max_tokens": MAX_TOKENS},
        budget={
            "max_daily_cost": CAP,
            "max_tools_per_minute": TOOLS_PER_MINUTE,
            "max_iterations": 5,
        },
    )


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


@pytest.mark.timeout(sized(1200, 3600))
def test_shared_cost_cap_and_rate_limit_under_contention(stack: FaultStack) -> None:
    agent_id = unique("ct").replace("-", "")[:20]
    stack.register(agent(agent_id))
    reserve = MAX_TOKENS * PRICE / 1e6
    actual = TOKENS * PRICE / 1e6
    run_ids = [unique("ct") for _ in range(RUNS)]
    started = time.time()
    stack.publish_many([(stack.topic("intents"), stack.intent(r, agent_id, "go")) for r in run_ids])
    docs = stack.wait_finished(run_ids, sized(600, 1200))
    elapsed = time.time() - started

    exits = Counter(d["result"]["exit"] for d in docs.values())
    contention_failures = [
        r
        for r, d in docs.items()
        if any(m in " ".join(d["result"]["errors"]) for m in CONTENTION_MARKERS)
        or d["result"]["exit"] == "ERROR"
    ]
    # Spend: every shard of the agent's ledger (all days the test touched).
    spend = stack.spend([agent_id])
    calls = [c for r in run_ids for c in stack.sub(r, "model_calls")]
    recorded = sum(c["cost_usd"] for c in calls)
    intervals = [
        (
            datetime.fromisoformat(c["created_at"]).timestamp() - DELAY - 0.25,
            datetime.fromisoformat(c["created_at"]).timestamp(),
        )
        for c in calls
    ]
    concurrent = max_overlap(intervals)
    overspend = spend - CAP
    bound_observed = max(actual - reserve, 0) + (concurrent - 1) * actual
    bound_all = max(actual - reserve, 0) + (RUNS - 1) * actual

    # Rate limit: tool executions per one-minute window, from the tool's own ledger.
    ledger = [e for e in stack.ledger("rate_probe") if str(e["key"]).split(":")[0] in set(run_ids)]
    windows = Counter(int(e["at"] // RATE_WINDOW_SECONDS) for e in ledger)
    # An execution admitted just before a window ends may start just after it.
    spill = Counter(
        int(e["at"] // RATE_WINDOW_SECONDS) for e in ledger if e["at"] % RATE_WINDOW_SECONDS < 1.0
    )
    limiter_counts = {
        d.id: len(list(d.collection("slots").list_documents()))
        for d in stack.db.collection("rate_limits").list_documents()
        if d.id.startswith(f"{agent_id}:")
    }
    log = stack.service_log("tool_invoker") + stack.service_log("run_executor")
    handler_contention = sum(log.count(m) for m in ("Failed to commit transaction", "Aborted"))

    section = "contention"
    figures.record(section, "concurrent runs of one agent", RUNS)
    figures.record(section, "exits", dict(exits))
    figures.record(section, "daily cap / spend (USD)", f"{CAP:.4f} / {spend:.4f}")
    figures.record(section, "worst overspend (USD)", round(overspend, 6))
    figures.record(section, "reserve r / actual A per call (USD)", f"{reserve} / {actual}")
    figures.record(section, "calls admitted concurrently (observed c)", concurrent)
    figures.record(section, "bound max(A-r,0)+(c-1)A at observed c", round(bound_observed, 6))
    figures.record(section, "bound at c = runs", round(bound_all, 6))
    figures.record(section, "model calls made / cost recorded", f"{len(calls)} / {recorded:.4f}")
    figures.record(section, "tools per minute limit", TOOLS_PER_MINUTE)
    figures.record(section, "tool executions per window (max)", max(windows.values(), default=0))
    figures.record(section, "limiter window counts", dict(sorted(limiter_counts.items())))
    figures.record(section, "runs failed by Firestore contention", len(contention_failures))
    figures.record(section, "handler 5xx from contention (logged, redelivered)", handler_contention)
    figures.record(section, "seconds", round(elapsed, 1))

    assert len(docs) == RUNS and all(d["status"] == "finished" for d in docs.values())
    assert set(exits) <= {"SATISFIED", "BUDGET_EXCEEDED"}, exits
    assert exits["BUDGET_EXCEEDED"] > 0, "the cap was never reached: the test proves nothing"
    assert abs(recorded - spend) < 1e-6, (recorded, spend)  # every call made is billed once
    assert overspend <= bound_all + 1e-9, (overspend, bound_all)
    assert overspend <= bound_observed + 1e-9, (overspend, bound_observed, concurrent)
    assert all(n <= TOOLS_PER_MINUTE for n in limiter_counts.values()), limiter_counts
    for window, n in windows.items():
        assert n <= TOOLS_PER_MINUTE + spill[window], (window, n, spill[window])
    assert len(ledger) == sum(1 for d in docs.values() if d["result"]["tool_calls"])
    assert contention_failures == [], contention_failures[:5]
