"""The in-process dispatcher: redelivery, dead letters, wake-up timers, the rate-limit wait."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from cloudagents import Agent, LoopExit, Tool
from cloudagents.domain.errors import TransientError
from cloudagents.domain.steps import StepCommit
from cloudagents.runtime.dispatcher import RunNotSettled
from tests.unit.test_runner import add, scripted

TWO_CALLS = {
    "tool_calls": [
        {"name": "add", "arguments": {"a": 1, "b": 2}},
        {"name": "add", "arguments": {"a": 3, "b": 4}},
    ]
}
FINAL = {"content": "3 and 7"}


async def test_a_transient_failure_is_delivered_again() -> None:
    agent = Agent(scripted(TWO_CALLS, FINAL), tools=[Tool("add", add)])
    runs = agent.driver.deps.runs
    real = runs.commit_step
    failures: list[int] = []

    async def flaky(commit: StepCommit) -> Any:
        if not failures:
            failures.append(commit.expected_seq)
            raise TransientError("contention")
        return await real(commit)

    runs.commit_step = flaky  # type: ignore[method-assign]
    result = await agent.run("go", run_id="flaky")
    assert failures == [0]
    assert (result.exit, result.payload, result.tool_calls) == (
        LoopExit.SATISFIED,
        {"answer": "3 and 7"},
        2,
    )
    assert agent.driver.dispatcher.dead_letters == []


async def test_a_step_that_keeps_failing_is_given_up_and_said() -> None:
    agent = Agent(scripted(FINAL), tools=[Tool("add", add)])
    agent.driver.dispatcher.backoff_seconds = 0.001

    async def broken(commit: StepCommit) -> Any:
        raise TransientError("the store is down")

    agent.driver.deps.runs.commit_step = broken  # type: ignore[method-assign]
    with pytest.raises(RunNotSettled, match="the store is down"):
        await agent.run("go", run_id="broken")
    (letter,) = agent.driver.dispatcher.dead_letters
    assert (letter.run_id, letter.what) == ("broken", "intent")


async def test_the_rate_limit_wait_is_a_wake_up_timer() -> None:
    definition = scripted(TWO_CALLS, FINAL, budget={"max_tools_per_minute": 1})
    agent = Agent(definition, tools=[Tool("add", add)])
    deps = agent.driver.deps
    deps.settings = dataclasses.replace(deps.settings, rate_window_seconds=0.5)
    started = time.monotonic()
    result = await agent.run("go", run_id="limited")
    assert result.exit is LoopExit.SATISFIED and result.tool_calls == 2
    calls = await deps.runs.tool_calls("limited", 0)
    deferred = [c for c in calls if c.deferred_until is not None]
    assert len(deferred) == 1  # one call waited for the next window, on a timer
    assert [c.attempts for c in calls] == [1, 1]
    assert time.monotonic() - started < 5


async def test_a_wait_that_loses_its_message_is_woken() -> None:
    """A tool message lost on the way: the wait's wake-up dispatches the call again."""
    agent = Agent(scripted(TWO_CALLS, FINAL), tools=[Tool("add", add)])
    deps = agent.driver.deps
    deps.settings = dataclasses.replace(deps.settings, wake_seconds=0.2)
    dispatcher = agent.driver.dispatcher
    real = dispatcher._spawn
    lost: list[str] = []

    def lossy(run_id: str, what: str, work: Any) -> None:
        if what == "tool call 0-1" and not lost:
            lost.append(what)
            return
        real(run_id, what, work)

    dispatcher._spawn = lossy  # type: ignore[method-assign]
    result = await agent.run("go", run_id="lossy")
    assert lost == ["tool call 0-1"]
    assert result.exit is LoopExit.SATISFIED and result.tool_calls == 2
