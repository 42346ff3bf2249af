"""The pure step engine: each outcome and each pre-call check."""

from __future__ import annotations

from typing import Any

from cloudagents import AgentDefinition, LoopExit, ModelResponse
from cloudagents.domain.messages import Message, ToolSpec
from cloudagents.engine.step import (
    CallTools,
    Finish,
    HandOff,
    RunAgain,
    RunProgress,
    Stop,
    check_before_model_call,
    check_daily_cost,
    decide,
    describe,
)

SPECS = {
    "lookup": ToolSpec(name="lookup", risk_level="low"),
    "wire_money": ToolSpec(name="wire_money", risk_level="high"),
}


def agent(**overrides: Any) -> AgentDefinition:
    data: dict[str, Any] = {
        "id": "a",
        "model": {"provider": "openai", "name": "gpt-4o"},
        "tools": ["lookup", "wire_money"],
        "guardrails": {"blocked_patterns": ["violence"]},
    }
    data.update(overrides)
    return AgentDefinition.model_validate(data)


def reply(**fields: Any) -> ModelResponse:
    return ModelResponse.model_validate(fields)


def test_final_text_finishes_with_answer_payload() -> None:
    outcome = decide(agent(), RunProgress(), reply(content="4"), SPECS)
    assert outcome == Finish({"answer": "4"})
    assert describe(outcome) == "finish"


def test_final_dict_is_the_payload() -> None:
    outcome = decide(agent(), RunProgress(), reply(content={"answer": "x"}, done=True), SPECS)
    assert outcome == Finish({"answer": "x"})


def test_tool_calls_are_called() -> None:
    outcome = decide(
        agent(), RunProgress(), reply(tool_calls=[{"name": "lookup", "arguments": {}}]), SPECS
    )
    assert isinstance(outcome, CallTools) and outcome.calls[0].name == "lookup"


def test_high_risk_tool_is_blocked_with_reason() -> None:
    outcome = decide(agent(), RunProgress(), reply(tool_calls=[{"name": "wire_money"}]), SPECS)
    assert isinstance(outcome, Stop) and outcome.exit is LoopExit.GUARDRAIL_BLOCK
    assert "risk 'high', above the threshold 'medium'" in outcome.reason


def test_high_risk_tool_allowed_when_threshold_high_or_guardrails_off() -> None:
    calls = reply(tool_calls=[{"name": "wire_money"}])
    high = agent(guardrails={"risk_threshold": "high"})
    assert isinstance(decide(high, RunProgress(), calls, SPECS), CallTools)
    off = agent(guardrails={"enabled": False})
    assert isinstance(decide(off, RunProgress(), calls, SPECS), CallTools)


def test_blocked_pattern_in_tool_arguments_and_output() -> None:
    args = reply(tool_calls=[{"name": "lookup", "arguments": {"q": "VIOLENCE now"}}])
    outcome = decide(agent(), RunProgress(), args, SPECS)
    assert isinstance(outcome, Stop) and "blocked pattern 'violence'" in outcome.reason
    out = decide(agent(), RunProgress(), reply(content="some violence"), SPECS)
    assert isinstance(out, Stop) and out.exit is LoopExit.GUARDRAIL_BLOCK


def test_handoff_wins() -> None:
    target = {"required_capabilities": ["ocr"], "ttl_seconds": 30}
    outcome = decide(agent(), RunProgress(), reply(handoff_target=target), SPECS)
    assert isinstance(outcome, HandOff) and outcome.target.required_capabilities == ["ocr"]


def test_done_false_runs_again() -> None:
    assert (
        decide(agent(), RunProgress(), reply(content="thinking", done=False), SPECS) == RunAgain()
    )


def test_output_schema_mismatch_asks_again_with_the_problem() -> None:
    strict = agent(output_schema=["final_report"])
    outcome = decide(strict, RunProgress(), reply(content={"other": 1}), SPECS)
    assert isinstance(outcome, RunAgain) and outcome.feedback is not None
    assert "'final_report' is a required property" in outcome.feedback
    good = decide(strict, RunProgress(), reply(content={"final_report": "ok"}), SPECS)
    assert good == Finish({"final_report": "ok"})


def test_token_budget_stops_tool_calls_after_an_overspending_reply() -> None:
    tight = agent(budget={"max_tokens_per_run": 100})
    progress = RunProgress(total_tokens=150)
    outcome = decide(tight, progress, reply(tool_calls=[{"name": "lookup"}]), SPECS)
    assert isinstance(outcome, Stop) and outcome.exit is LoopExit.BUDGET_EXCEEDED
    # A final answer that arrives over budget is still accepted: it is already paid for.
    assert decide(tight, progress, reply(content="done"), SPECS) == Finish({"answer": "done"})


def test_checks_before_model_call() -> None:
    user = [Message(role="system", content="s"), Message(role="user", content="hello")]
    assert check_before_model_call(agent(), RunProgress(), user) is None
    iters = check_before_model_call(
        agent(budget={"max_iterations": 2}), RunProgress(iterations=2), user
    )
    assert iters is not None and iters.exit is LoopExit.MAX_ITERS
    tokens = check_before_model_call(
        agent(budget={"max_tokens_per_run": 10}), RunProgress(total_tokens=10), user
    )
    assert tokens is not None and tokens.exit is LoopExit.BUDGET_EXCEEDED
    bad = [*user[:1], Message(role="user", content="plan some Violence")]
    blocked = check_before_model_call(agent(), RunProgress(), bad)
    assert blocked is not None and blocked.reason == "user input matches blocked pattern 'violence'"


def test_input_guardrail_sees_only_new_input() -> None:
    history = [
        Message(role="user", content="violence"),  # already answered: not re-checked
        Message(role="assistant", content="no"),
        Message(role="tool", tool_call_id="c", content="fine"),
    ]
    assert check_before_model_call(agent(), RunProgress(), history) is None


def test_daily_cost_cap() -> None:
    capped = agent(budget={"max_daily_cost": 1.0})
    assert check_daily_cost(capped, 0.5, 0.4) is None
    stop = check_daily_cost(capped, 0.7, 0.4)
    assert stop is not None and stop.exit is LoopExit.BUDGET_EXCEEDED
    assert check_daily_cost(agent(), 1e9, 1.0) is None
