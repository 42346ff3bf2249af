"""Agent-to-agent calls in process: a call to an allowed peer is a child run whose answer is the
call's result; the checks (allowed, depth, cycle, input schema) are error results the model
reads; the child joins the caller's tree."""

from __future__ import annotations

from typing import Any

from cloudagents import Agent, AgentDefinition, LoopExit, Tool
from cloudagents.domain.runs import RunRecord


def scripted(agent_id: str, *turns: dict[str, Any], **extra: Any) -> AgentDefinition:
    return AgentDefinition.model_validate(
        {
            "id": agent_id,
            "description": f"the {agent_id}",
            "model": {"provider": "scripted", "name": "s", "script": list(turns)},
            "retry": {"max_attempts": 1, "backoff_seconds": 0},
            **extra,
        }
    )


def ask(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool, "arguments": arguments}]}


def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


async def runs_of(agent: Agent) -> dict[str, RunRecord]:
    store = agent.driver.deps.runs
    return {r.run_id: r for r in await store.list_runs(limit=100)}


async def test_a_peer_call_is_a_child_run_whose_answer_is_the_result() -> None:
    researcher = Agent(
        scripted("researcher", ask("shout", text="x is 42"), {"content": "found: X IS 42"}),
        tools=[Tool("shout", shout)],
    )
    orchestrator = scripted(
        "orchestrator",
        {
            "tool_calls": [
                {"name": "invoke_researcher", "arguments": {"request": "what is x?"}},
                {"name": "invoke_researcher", "arguments": {"request": "and y?"}},
            ]
        },
        {"content": "composed"},
        allowed_peers=["researcher"],
    )
    agent = Agent(orchestrator, peers=[researcher])
    result = await agent.run("tell me x", run_id="root")
    assert result.exit is LoopExit.SATISFIED and result.tool_calls == 2
    calls = await agent.driver.deps.runs.tool_calls("root", 0)
    assert [(c.child_run_id, c.result, c.is_error) for c in calls] == [
        ("root-c000000-000", "found: X IS 42", False),
        ("root-c000000-001", "found: X IS 42", False),
    ]
    child = await agent.driver.deps.runs.get_run("root-c000000-000")
    assert child is not None and child.result is not None
    assert child.result.exit is LoopExit.SATISFIED
    assert (child.root_run_id, child.call_path, child.call_depth) == ("root", ["orchestrator"], 1)
    assert child.parent_call is not None and (child.parent_call.seq, child.parent_call.index) == (
        0,
        0,
    )
    transcript = await agent.driver.deps.runs.messages(child.run_id)
    assert transcript[1].content == "what is x?"


async def test_checks_are_error_results_the_model_reads() -> None:
    typed = scripted(
        "typed",
        {"content": "ok"},
        input_schema={"city": "str"},
    )
    looping = scripted("looping", {"content": "never"}, allowed_peers=["orchestrator"])
    orchestrator = scripted(
        "orchestrator",
        {
            "tool_calls": [
                {"name": "invoke_typed", "arguments": {"wrong_field": "Paris"}},
                {"name": "invoke_ghost", "arguments": {"request": "hi"}},
            ]
        },
        {"content": "done"},
        allowed_peers=["typed", "ghost", "looping"],
    )
    agent = Agent(orchestrator, peers=[typed, looping])
    result = await agent.run("go", run_id="checks")
    assert result.exit is LoopExit.SATISFIED
    first, second = await agent.driver.deps.runs.tool_calls("checks", 0)
    assert first.is_error and "does not match its input_schema" in str(first.result)
    assert first.child_run_id is not None
    assert await agent.driver.deps.runs.get_run(first.child_run_id) is None  # never started
    assert second.is_error and second.result == "agent 'ghost' is not registered"


async def test_a_cycle_and_the_depth_limit_are_refused() -> None:
    b = scripted(
        "b", ask("invoke_a", request="back to a"), {"content": "b done"}, allowed_peers=["a"]
    )
    a = scripted("a", ask("invoke_b", request="to b"), {"content": "a done"}, allowed_peers=["b"])
    agent = Agent(a, peers=[b])
    result = await agent.run("go", run_id="cycle")
    assert result.exit is LoopExit.SATISFIED
    child = await agent.driver.deps.runs.tool_calls("cycle-c000000-000", 0)
    assert "would make a cycle: a -> b -> a" in str(child[0].result)
    shallow = scripted(
        "shallow",
        ask("invoke_b", request="x"),
        {"content": "ok"},
        allowed_peers=["b"],
        max_chain_depth=0,
    )
    agent = Agent(shallow, peers=[b])
    await agent.run("go", run_id="deep")
    (call,) = await agent.driver.deps.runs.tool_calls("deep", 0)
    assert "over max_chain_depth=0" in str(call.result)


async def test_a_failing_child_gives_a_typed_error() -> None:
    strict = scripted(
        "strict",
        {"content": "not json"},
        {"content": "still not"},
        output_schema={"answer": "int"},
        budget={"max_iterations": 2},
    )
    caller = scripted(
        "caller",
        ask("invoke_strict", request="n?"),
        {"content": "gave up"},
        allowed_peers=["strict"],
    )
    agent = Agent(caller, peers=[strict])
    await agent.run("go", run_id="typed-error")
    (call,) = await agent.driver.deps.runs.tool_calls("typed-error", 0)
    assert call.is_error and isinstance(call.result, dict)
    assert call.result["error"] == "output_invalid" and call.result["exit"] == "MAX_ITERS"


async def test_the_tree_spends_the_roots_token_budget() -> None:
    child = scripted("spender", {"content": "spent a lot", "total_tokens": 45})
    root = scripted(
        "frugal",
        {**ask("invoke_spender", request="go"), "total_tokens": 10},
        {"content": "never reached"},
        allowed_peers=["spender"],
        budget={"max_tokens_per_run": 50},
    )
    agent = Agent(root, peers=[child])
    result = await agent.run("go", run_id="budget")
    assert result.exit is LoopExit.BUDGET_EXCEEDED
    assert result.total_tokens == 55  # its own 10 and its call's 45
    below = await agent.driver.deps.runs.get_run("budget-c000000-000")
    assert below is not None and below.token_budget == 40 and below.root_agent_id == "frugal"


async def test_a_child_past_its_deadline_gives_its_caller_a_timeout() -> None:
    import asyncio

    async def dawdle(seconds: float) -> str:
        """Take a while."""
        await asyncio.sleep(seconds)
        return "late"

    slow = Agent(
        scripted("slow", ask("dawdle", seconds=5), {"content": "never"}, timeout_seconds=0.3),
        tools=[Tool("dawdle", dawdle, timeout_seconds=10)],
    )
    caller = scripted(
        "patient", ask("invoke_slow", request="go"), {"content": "moved on"}, allowed_peers=["slow"]
    )
    agent = Agent(caller, peers=[slow])
    result = await agent.run("go", run_id="late")
    assert result.exit is LoopExit.SATISFIED
    (call,) = await agent.driver.deps.runs.tool_calls("late", 0)
    assert call.is_error and isinstance(call.result, dict)
    assert call.result["error"] == "timeout" and "timed out after 0.3 s" in call.result["reason"]


async def test_every_call_is_billed_to_its_agent_and_a_capped_roots_ledger() -> None:
    from datetime import UTC, datetime

    from cloudagents.adapters.memory.budgets import InMemoryCostLedger

    priced = {"input_price_per_million": 1000.0, "output_price_per_million": 1000.0}
    child = scripted("billed-child", {"content": "ok", "total_tokens": 100})
    child = child.model_copy(update={"model": child.model.model_copy(update=priced)})
    root = scripted(
        "billed-root",
        ask("invoke_billed_child", request="go"),
        {"content": "done", "total_tokens": 100},
        allowed_peers=["billed-child"],
        budget={"max_daily_cost": 100.0},
    )
    root = root.model_copy(update={"model": root.model.model_copy(update=priced)})
    ledger = InMemoryCostLedger()
    agent = Agent(root, peers=[child], cost_ledger=ledger)
    result = await agent.run("go", run_id="billed")
    assert result.exit is LoopExit.SATISFIED
    day = datetime.now(UTC).date().isoformat()
    child_spent = await ledger.spent("billed-child", day)  # no cap of its own: still billed
    root_spent = await ledger.spent("billed-root", day)
    assert child_spent > 0
    assert abs(root_spent - (result.cost_usd)) < 1e-9  # the root's ledger has the whole tree
    assert result.cost_usd > child_spent
