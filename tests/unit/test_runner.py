"""The in-process runner: every exit, end to end, with scripted and callable models.

``Agent.run`` drives the run executor and the tool invoker in process, so what a run did is read
back from its records (``agent.driver.deps.runs``), as for a service run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudagents import Agent, AgentDefinition, LoopExit, Tool, load_definitions
from cloudagents.adapters.memory.budgets import InMemoryCostLedger, InMemoryRateLimiter
from cloudagents.domain.events import ToolResultEvent
from cloudagents.domain.messages import Message
from cloudagents.engine.step import reservation_hold_seconds


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def scripted(*turns: dict[str, Any], **overrides: Any) -> AgentDefinition:
    data: dict[str, Any] = {
        "id": "calc",
        "instructions": "You add numbers.",
        "model": {"provider": "scripted", "name": "scripted-demo", "script": list(turns)},
        "tools": ["add"],
        "retry": {"max_attempts": 2, "backoff_seconds": 0},
    }
    data.update(overrides)
    return AgentDefinition.model_validate(data)


TOOL_TURN = {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 2}}], "total_tokens": 30}
FINAL_TURN = {"content": "2+2=4", "total_tokens": 20}


async def decisions(agent: Agent, run_id: str) -> list[str]:
    return [i.decision for i in await agent.driver.deps.runs.interactions(run_id)]


async def tool_results(agent: Agent, run_id: str) -> list[tuple[str, Any]]:
    events = await agent.driver.deps.runs.events(run_id)
    return [(e.tool_name, e.result) for e in events if isinstance(e, ToolResultEvent)]


async def transcript(agent: Agent, run_id: str) -> list[Message]:
    return await agent.driver.deps.runs.messages(run_id)


async def test_satisfied_after_a_tool_call() -> None:
    agent = Agent(scripted(TOOL_TURN, FINAL_TURN), tools=[Tool("add", add)])
    result = await agent.run("What is 2+2?", run_id="r")
    assert result.exit is LoopExit.SATISFIED
    assert result.payload == {"answer": "2+2=4"}
    assert (result.iterations, result.total_tokens, result.tool_calls) == (2, 50, 1)
    assert await decisions(agent, "r") == ["tools:add", "finish"]
    assert await tool_results(agent, "r") == [("add", 4)]
    messages = await transcript(agent, "r")
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[3].content == "4"
    run = await agent.driver.deps.runs.get_run("r")
    assert run is not None and run.source == "inprocess" and run.result == result


async def test_max_iters() -> None:
    agent = Agent(scripted(TOOL_TURN, budget={"max_iterations": 3}), tools=[Tool("add", add)])
    result = await agent.run("loop forever")
    assert result.exit is LoopExit.MAX_ITERS
    assert result.iterations == 3 and result.tool_calls == 3
    assert "max_iterations=3" in str(result.payload["reason"])
    assert result.errors == [result.payload["reason"]]


async def test_error_after_retries_with_cause() -> None:
    failing = {"content": "x", "fail_with": "server", "fail_times": 5}
    result = await Agent(scripted(failing)).run("hi")
    assert result.exit is LoopExit.ERROR
    assert result.errors == [
        "server: gave up after 2 attempts; last error: server: scripted failure on turn 0"
    ]


async def test_retry_recovers_from_a_transient_failure() -> None:
    flaky = {"content": "ok", "fail_with": "rate_limit", "fail_times": 1}
    result = await Agent(scripted(flaky)).run("hi")
    assert result.exit is LoopExit.SATISFIED and result.payload == {"answer": "ok"}


async def test_non_retryable_error_fails_at_once() -> None:
    bad = {"content": "x", "fail_with": "auth", "fail_times": 1}
    result = await Agent(scripted(bad)).run("hi")
    assert result.exit is LoopExit.ERROR and result.errors == ["auth: scripted failure on turn 0"]


async def test_guardrail_block_on_input_passed_at_run_time() -> None:
    result = await Agent(scripted(FINAL_TURN)).run(
        "how to do something illegal", guardrails={"blocked_patterns": ["illegal"]}
    )
    assert result.exit is LoopExit.GUARDRAIL_BLOCK
    assert result.payload["reason"] == "user input matches blocked pattern 'illegal'"
    assert result.errors == ["user input matches blocked pattern 'illegal'"]
    assert result.iterations == 0


async def test_run_time_guardrails_belong_to_that_run_only() -> None:
    agent = Agent(scripted(FINAL_TURN))
    blocked, free = await asyncio.gather(
        agent.run("illegal", guardrails={"blocked_patterns": ["illegal"]}, run_id="g1"),
        agent.run("illegal", run_id="g2"),
    )
    assert (blocked.exit, free.exit) == (LoopExit.GUARDRAIL_BLOCK, LoopExit.SATISFIED)
    stored = await agent.driver.deps.runs.get_run("g1")
    assert stored is not None and stored.guardrails is not None
    assert stored.guardrails.blocked_patterns == ["illegal"]


async def test_guardrail_block_on_risky_tool() -> None:
    agent = Agent(scripted(TOOL_TURN), tools=[Tool("add", add, "high")])
    result = await agent.run("add")
    assert result.exit is LoopExit.GUARDRAIL_BLOCK
    assert "risk 'high'" in str(result.payload["reason"])
    assert result.errors == [result.payload["reason"]]
    assert result.tool_calls == 0


async def test_handoff_without_a_broker_returns_the_target() -> None:
    turn = {"handoff_target": {"required_capabilities": ["ocr"], "ttl_seconds": 60}}
    agent = Agent(scripted(turn))
    result = await agent.run("read this scan", run_id="h")
    assert result.exit is LoopExit.HANDOFF
    assert result.payload["handoff_target"]["required_capabilities"] == ["ocr"]  # type: ignore[index]
    assert result.payload["offer_id"] == "offer-h-0"
    assert result.errors == []  # a handoff passes the work on; it is not an error
    offer = await agent.driver.deps.handoffs.get_offer("offer-h-0")
    assert offer is not None and offer.chain_depth == 1 and offer.status == "open"
    # The offer leaves through the outbox, after the snapshot it points to.
    outward = agent.driver.dispatcher.outward
    assert [m.topic for m in outward.published] == ["local-handoff"]  # type: ignore[attr-defined]
    assert offer.context_uri in agent.driver.deps.blobs.objects  # type: ignore[attr-defined]


async def test_a_handoff_past_max_chain_depth_is_refused() -> None:
    turn = {"handoff_target": {"required_capabilities": ["ocr"]}}
    result = await Agent(scripted(turn, max_chain_depth=0)).run("read this scan")
    assert result.exit is LoopExit.ERROR
    assert result.errors == ["handoff refused: chain depth 1 exceeds max_chain_depth=0"]


async def test_a_tool_sees_its_idempotency_key() -> None:
    from cloudagents.tools import idempotency_key

    seen: list[str | None] = []

    def keyed(a: int, b: int) -> int:
        """Add, noting the key."""
        seen.append(idempotency_key())
        return a + b

    agent = Agent(scripted(TOOL_TURN, FINAL_TURN), tools=[Tool("add", keyed)])
    assert (await agent.run("2+2", run_id="k")).exit is LoopExit.SATISFIED
    assert seen == ["k:0:0"]


async def test_the_model_text_is_streamed_as_events() -> None:
    from cloudagents.domain.events import ContentChunk

    agent = Agent(scripted({"content": "a reply longer than one scripted chunk of text"}))
    await agent.run("hi", run_id="s")
    chunks = [e for e in await agent.driver.deps.runs.events("s") if isinstance(e, ContentChunk)]
    assert "".join(c.chunk for c in chunks) == "a reply longer than one scripted chunk of text"


async def test_tool_audit_records_leave_on_the_audit_topic() -> None:
    agent = Agent(scripted(TOOL_TURN, FINAL_TURN), tools=[Tool("add", add)])
    await agent.run("2+2", run_id="a")
    outward = agent.driver.dispatcher.outward
    assert [m.topic for m in outward.published] == ["local-tools-audit"]  # type: ignore[attr-defined]


async def test_token_budget_exceeded() -> None:
    agent = Agent(scripted(TOOL_TURN, budget={"max_tokens_per_run": 50}), tools=[Tool("add", add)])
    result = await agent.run("add")
    assert result.exit is LoopExit.BUDGET_EXCEEDED
    assert result.total_tokens == 60  # two calls of 30: the second pushed it over
    assert result.errors == ["used 60 tokens, max_tokens_per_run=50"]
    assert result.payload == {"reason": result.errors[0]}


async def test_daily_cost_cap_is_shared_by_runs_of_the_agent() -> None:
    definition = scripted(
        {"content": "ok", "total_tokens": 1000},
        model={
            "provider": "scripted",
            "name": "priced",
            "input_price_per_million": 1000.0,
            "output_price_per_million": 1000.0,
            "script": [{"content": "ok", "total_tokens": 1000}],
        },
        generation={"max_tokens": 1000},
        budget={"max_daily_cost": 2.5},
    )
    ledger = InMemoryCostLedger()
    agent = Agent(definition, cost_ledger=ledger)
    results = [await agent.run("hi") for _ in range(3)]
    exits = [r.exit for r in results]
    assert exits == [LoopExit.SATISFIED, LoopExit.SATISFIED, LoopExit.BUDGET_EXCEEDED]
    assert [r.errors for r in results[:2]] == [[], []]
    assert results[2].errors == [results[2].payload["reason"]]
    assert "daily cost cap" in results[2].errors[0]
    day = datetime.now(UTC).date().isoformat()
    assert await ledger.spent("calc", day) == pytest.approx(2.0)


class RecordingLedger(InMemoryCostLedger):
    def __init__(self) -> None:
        super().__init__()
        self.holds: list[float] = []

    async def reserve(self, agent_id: str, day: str, amount: float, *, hold_seconds: float) -> str:
        self.holds.append(hold_seconds)
        return await super().reserve(agent_id, day, amount, hold_seconds=hold_seconds)


def test_reservation_hold_covers_every_attempt_and_backoff() -> None:
    definition = scripted(
        FINAL_TURN,
        retry={"max_attempts": 3, "backoff_seconds": 2.0, "backoff_multiplier": 3.0},
        model={
            "provider": "scripted",
            "name": "s",
            "timeout_seconds": 30.0,
            "script": [FINAL_TURN],
        },
    )
    # 3 attempts of 30 s, backoffs 2 s and 6 s between them, and the 60 s margin.
    assert reservation_hold_seconds(definition) == pytest.approx(3 * 30 + 2 + 6 + 60)
    huge = scripted(
        FINAL_TURN, retry={"max_attempts": 20, "backoff_seconds": 600, "backoff_multiplier": 10}
    )
    assert reservation_hold_seconds(huge) == 24 * 3600


def priced_agent(daily_cap: float) -> AgentDefinition:
    """One final turn at $1 per thousand output tokens, reserving for 1000 tokens ($1)."""
    return scripted(
        FINAL_TURN,
        model={
            "provider": "scripted",
            "name": "priced",
            "output_price_per_million": 1000.0,
            "script": [FINAL_TURN],
        },
        generation={"max_tokens": 1000},
        budget={"max_daily_cost": daily_cap},
    )


async def test_runner_reserves_for_the_hold_and_settles_its_reservation() -> None:
    definition = priced_agent(daily_cap=10.0)
    ledger = RecordingLedger()
    result = await Agent(definition, cost_ledger=ledger).run("hi")
    assert result.exit is LoopExit.SATISFIED
    assert ledger.holds == [reservation_hold_seconds(definition)]
    day = datetime.now(UTC).date().isoformat()
    # Settled at the actual cost, not the 1000-token reservation ($1): nothing left held.
    assert 0 < result.cost_usd < 0.1
    assert await ledger.spent("calc", day) == pytest.approx(result.cost_usd)


async def test_a_leaked_reservation_blocks_the_cap_only_until_its_hold_passes() -> None:
    now = [datetime(2030, 1, 1, 9, 0, tzinfo=UTC)]

    def clock() -> datetime:
        return now[0]

    definition = priced_agent(daily_cap=2.5)
    ledger = InMemoryCostLedger(clock=clock)
    # A process killed mid-call: reserved, never settled.
    await ledger.reserve("calc", "2030-01-01", 2.0, hold_seconds=300)
    agent = Agent(definition, cost_ledger=ledger, clock=clock)
    assert (await agent.run("hi")).exit is LoopExit.BUDGET_EXCEEDED
    now[0] += timedelta(seconds=301)
    assert (await agent.run("hi")).exit is LoopExit.SATISFIED


async def test_unknown_tool_gives_the_model_an_error() -> None:
    turn = {"tool_calls": [{"name": "nope", "arguments": {}}]}
    agent = Agent(scripted(turn, FINAL_TURN), tools=[Tool("add", add)])
    result = await agent.run("x", run_id="u")
    assert result.exit is LoopExit.SATISFIED
    assert await tool_results(agent, "u") == [
        ("nope", "tool 'nope' is not available to this agent")
    ]


async def test_seed_quick_start_with_a_plain_async_llm_client() -> None:
    seen: list[dict[str, Any]] = []

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        return {"done": True, "content": {"answer": "Response"}, "usage": {"total_tokens": 100}}

    definition = AgentDefinition(
        id="my-agent",
        instructions="You are a helpful assistant.",
        model={"provider": "callable", "name": "gpt-4"},  # type: ignore[arg-type]
    )
    result = await Agent(definition).run("What is 2+2?", context={"llm_client": llm_client})
    assert result.exit.value == "SATISFIED"
    assert result.payload == {"answer": "Response"}
    assert result.total_tokens == 100
    assert seen[0]["model"] == "gpt-4"
    assert seen[0]["messages"][1] == {"role": "user", "content": "What is 2+2?"}


async def test_template_variables_come_from_context() -> None:
    seen: list[str] = []

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request["messages"][-1]["content"])
        return {"content": "ok"}

    definition = scripted(FINAL_TURN, user_template="[{priority}] {input}")
    await Agent(definition).run("fix it", context={"llm_client": llm_client, "priority": "P1"})
    assert seen == ["[P1] fix it"]


async def test_rate_limiter_windows() -> None:
    limiter = InMemoryRateLimiter()
    t = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    assert await limiter.acquire("a", 2, t) == 0
    assert await limiter.acquire("a", 2, t) == 0
    assert await limiter.acquire("a", 2, t) == pytest.approx(50)
    assert await limiter.acquire("b", 2, t) == 0


def test_load_definitions_from_yaml(tmp_path: Any) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(
        "agents:\n"
        "  - id: one\n    model: {provider: openai, name: gpt-4o}\n"
        "  - id: two\n    model: {provider: anthropic, name: claude-3-5-haiku-latest}\n"
    )
    assert [d.id for d in load_definitions(path)] == ["one", "two"]


async def test_in_process_run_times_out_with_what_it_waited_for() -> None:
    async def hang(seconds: float) -> str:
        """Wait a long time.

        Args:
            seconds: how long
        """
        import asyncio

        await asyncio.sleep(seconds)
        return "late"

    definition = scripted(
        {"tool_calls": [{"name": "hang", "arguments": {"seconds": 30}}]},
        {"content": "never"},
        tools=["hang"],
        timeout_seconds=0.3,
    )
    result = await Agent(definition, tools=[Tool("hang", hang, timeout_seconds=60)]).run("go")
    reason = "timed out after 0.3 s waiting for tool calls: hang#0"
    assert result.exit is LoopExit.ERROR
    assert result.payload == {"reason": reason}
    assert result.errors == [reason]
    assert (result.iterations, result.tool_calls) == (1, 0)


async def test_error_reason_is_listed_once() -> None:
    bad = {"content": "x", "fail_with": "auth", "fail_times": 1}
    result = await Agent(scripted(bad)).run("hi")
    assert result.errors == [result.payload["reason"]]


class SeedTool:
    """Seed 000's own ``Tool`` class, verbatim (as a user would write it)."""

    def __init__(self, name, function, risk_level="low"):  # type: ignore[no-untyped-def]
        self.name = name
        self.function = function
        self.risk_level = risk_level

    def to_mcp_format(self):  # type: ignore[no-untyped-def]
        return {"name": self.name, "risk_level": self.risk_level}


def my_calc_function(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


async def test_the_seeds_own_tool_class_is_accepted() -> None:
    seen: list[dict[str, Any]] = []

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        if len(seen) == 1:
            call = {"name": "calculator", "arguments": {"a": 6, "b": 7}}
            return {"tool_calls": [call], "usage": {"total_tokens": 10}}
        return {"done": True, "content": "42", "usage": {"total_tokens": 10}}

    definition = AgentDefinition(
        id="calc",
        instructions="You calculate.",
        model={"provider": "callable", "name": "gpt-4"},  # type: ignore[arg-type]
    )
    tools = {"calculator": SeedTool("calculator", my_calc_function, "low")}
    agent = Agent(definition, tools=tools)
    registered = agent.tools.get("calculator")
    assert registered is not None and registered.risk_level == "low"
    assert registered.to_mcp_format()["name"] == "calculator"
    result = await agent.run("6*7?", context={"llm_client": llm_client}, run_id="c")
    assert result.exit is LoopExit.SATISFIED and result.errors == []
    assert await tool_results(agent, "c") == [("calculator", 42)]
    assert [t["function"]["name"] for t in seen[0]["tools"]] == ["calculator"]


async def test_the_seeds_tool_keeps_its_risk_level_and_the_key_names_a_nameless_one() -> None:
    from cloudagents.tools import ToolRegistry

    nameless = SeedTool(None, my_calc_function, "high")
    registry = ToolRegistry.from_mapping({"multiply": nameless})
    found = registry.get("multiply")
    assert found is not None and found.risk_level == "high"
    agent = Agent(scripted(TOOL_TURN, tools=[]), tools={"add": SeedTool("add", add, "high")})
    result = await agent.run("add")
    assert result.exit is LoopExit.GUARDRAIL_BLOCK and "risk 'high'" in result.errors[0]
    with pytest.raises(ValueError, match="risk_level"):
        ToolRegistry.from_mapping({"x": SeedTool("x", add, "extreme")})


async def test_a_passed_tool_is_offered_without_listing_it_in_the_definition() -> None:
    definition = scripted(TOOL_TURN, FINAL_TURN, tools=[])
    agent = Agent(definition, tools={"add": add})
    result = await agent.run("2+2?", run_id="p")
    assert result.exit is LoopExit.SATISFIED and result.errors == []
    assert await tool_results(agent, "p") == [("add", 4)]


async def test_offered_tools_are_the_definitions_then_the_passed_ones() -> None:
    seen: list[dict[str, Any]] = []

    def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        return {"done": True, "content": "ok"}

    def sub(a: int, b: int) -> int:
        """Subtract."""
        return a - b

    definition = AgentDefinition(
        id="calc",
        instructions="x",
        model={"provider": "callable", "name": "m"},  # type: ignore[arg-type]
        tools=["sub"],
    )
    agent = Agent(definition, tools=[Tool("add", add), Tool("sub", sub)])
    await agent.run("hi", context={"llm_client": llm_client})
    assert [t["function"]["name"] for t in seen[0]["tools"]] == ["sub", "add"]


def test_distributed_agent_accepts_the_seeds_tool_class() -> None:
    from cloudagents.gcp import DistributedAgent

    agent = DistributedAgent(
        agent_id="calc",
        instructions="You calculate.",
        model="gpt-4",
        project_id="demo-project",
        workspace_topic="demo",
        tools={"calculator": SeedTool("calculator", my_calc_function, "medium")},
    )
    assert agent.definition.tools == ["calculator"]
    registered = agent.tools.get("calculator")
    assert registered is not None and registered.risk_level == "medium"
    assert registered.function is my_calc_function


@pytest.mark.parametrize(
    ("turns", "overrides", "exit"),
    [
        ((TOOL_TURN,), {"budget": {"max_iterations": 1}}, LoopExit.MAX_ITERS),
        ((TOOL_TURN,), {"budget": {"max_tokens_per_run": 10}}, LoopExit.BUDGET_EXCEEDED),
        ((FINAL_TURN,), {"guardrails": {"blocked_patterns": ["go"]}}, LoopExit.GUARDRAIL_BLOCK),
        (({"content": "x", "fail_with": "auth", "fail_times": 1},), {}, LoopExit.ERROR),
    ],
)
async def test_the_stored_run_has_the_reason_in_errors(
    turns: tuple[dict[str, Any], ...], overrides: dict[str, Any], exit: LoopExit
) -> None:
    agent = Agent(scripted(*turns, **overrides), tools=[Tool("add", add)])
    result = await agent.run("go", run_id="run-1")
    assert result.exit is exit
    assert result.errors == [result.payload["reason"]]
    stored = await agent.driver.deps.runs.get_run("run-1")
    assert stored is not None and stored.result is not None
    assert stored.result.errors == result.errors
    assert stored.progress.errors == result.errors
