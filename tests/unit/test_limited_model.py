"""``LimitedModel``: seed 004's RATE_LIMIT_PER_MINUTE and MAX_CONCURRENT_EXECUTIONS around a
model client, over the in-memory limiters (their Firestore twins pass the same contract)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cloudagents.adapters.llm.limited import BUSY_RETRY_SECONDS, LimitedModel
from cloudagents.adapters.llm.openai import OpenAIModel
from cloudagents.adapters.llm.scripted import ScriptedModel
from cloudagents.adapters.memory.budgets import InMemoryConcurrencyLimiter, InMemoryRateLimiter
from cloudagents.domain.agents import ScriptedTurn
from cloudagents.domain.errors import ConfigurationError, LimitReached, ModelError
from cloudagents.domain.messages import Message, ModelRequest
from cloudagents.settings import Settings
from tests.fakes.llm_api_servers import FakeLLMServer, fake_llm_server

# 10 seconds into a minute window, so the next window opens in 50 s.
START = datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as fake:
        yield fake


def ask() -> ModelRequest:
    return ModelRequest(model="m", messages=[Message(role="user", content="Hi")])


def slow(seconds: float) -> ScriptedModel:
    return ScriptedModel([ScriptedTurn(content="done", delay_seconds=seconds)])


async def test_calls_beyond_the_concurrency_cap_are_refused_not_queued(clock: Clock) -> None:
    slots = InMemoryConcurrencyLimiter(clock=clock)
    model = LimitedModel(slow(0.2), concurrency=slots, max_concurrent=2, lease_seconds=60)

    results = await asyncio.gather(*(model(ask()) for _ in range(3)), return_exceptions=True)

    replies = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, LimitReached)]
    assert [r.content for r in replies] == ["done", "done"]
    assert len(errors) == 1
    assert errors[0].kind == "rate_limit"
    assert errors[0].retry_after == BUSY_RETRY_SECONDS
    assert "MAX_CONCURRENT_EXECUTIONS" in str(errors[0])
    # The two finished calls gave their slots back.
    assert [await slots.acquire("llm", 2, 60) for _ in range(3)].count(None) == 1


async def test_a_failing_call_gives_its_slot_back(clock: Clock) -> None:
    slots = InMemoryConcurrencyLimiter(clock=clock)
    failing = ScriptedModel([ScriptedTurn(fail_with="server", fail_times=1)])
    model = LimitedModel(failing, concurrency=slots, max_concurrent=1, lease_seconds=60)

    with pytest.raises(ModelError) as caught:
        await model(ask())
    assert caught.value.kind == "server"
    assert await slots.acquire("llm", 1, 60) is not None


async def test_the_per_minute_limit_refuses_with_the_wait_until_the_next_window(
    clock: Clock, server: FakeLLMServer
) -> None:
    server.reset()
    server.reply_text("one")
    server.reply_text("two")
    inner = OpenAIModel(model="gpt-x", api_key="k", base_url=server.openai_base_url)
    slots = InMemoryConcurrencyLimiter(clock=clock)
    model = LimitedModel(
        inner,
        rate_limiter=InMemoryRateLimiter(),
        calls_per_minute=1,
        concurrency=slots,
        max_concurrent=1,
        lease_seconds=60,
        clock=clock,
    )

    assert (await model(ask())).content == "one"
    with pytest.raises(LimitReached) as caught:
        await model(ask())
    assert caught.value.kind == "rate_limit"
    assert caught.value.retry_after == pytest.approx(50)
    assert "RATE_LIMIT_PER_MINUTE" in str(caught.value)
    assert len(server.requests) == 1  # the refused call never reached the provider
    # The refused call gave back the concurrency slot it had taken.
    token = await slots.acquire("llm", 1, 60)
    assert token is not None
    await slots.release("llm", token)

    clock.now += timedelta(seconds=50)
    assert (await model(ask())).content == "two"
    await inner.aclose()


async def test_keys_keep_limits_apart(clock: Clock) -> None:
    limiter = InMemoryRateLimiter()
    openai = LimitedModel(
        slow(0), rate_limiter=limiter, calls_per_minute=1, key="openai", clock=clock
    )
    anthropic = LimitedModel(
        slow(0), rate_limiter=limiter, calls_per_minute=1, key="anthropic", clock=clock
    )
    await openai(ask())
    await anthropic(ask())
    with pytest.raises(ModelError):
        await openai(ask())


def test_settings_read_the_seed_variables() -> None:
    unset = Settings.from_env({"CLOUDAGENTS_BACKEND": "memory"})
    assert (unset.rate_limit_per_minute, unset.max_concurrent_executions) == (None, None)
    limited = Settings.from_env(
        {
            "CLOUDAGENTS_BACKEND": "memory",
            "RATE_LIMIT_PER_MINUTE": "100",
            "MAX_CONCURRENT_EXECUTIONS": "10",
        }
    )
    assert (limited.rate_limit_per_minute, limited.max_concurrent_executions) == (100, 10)
    for bad in ("0", "-3", "ten", "1.5"):
        with pytest.raises(ConfigurationError, match="RATE_LIMIT_PER_MINUTE"):
            Settings.from_env({"CLOUDAGENTS_BACKEND": "memory", "RATE_LIMIT_PER_MINUTE": bad})


async def test_from_settings_applies_both_limits_and_none_means_unlimited(clock: Clock) -> None:
    settings = Settings.from_env({"CLOUDAGENTS_BACKEND": "memory", "RATE_LIMIT_PER_MINUTE": "2"})
    model = LimitedModel.from_settings(
        slow(0),
        settings,
        rate_limiter=InMemoryRateLimiter(),
        concurrency=InMemoryConcurrencyLimiter(clock=clock),
        lease_seconds=60,
    )
    assert model.max_concurrent is None
    model.clock = clock
    await model(ask())
    await model(ask())
    with pytest.raises(ModelError, match="2 model calls per minute"):
        await model(ask())

    unlimited = LimitedModel.from_settings(
        slow(0),
        Settings.from_env({"CLOUDAGENTS_BACKEND": "memory"}),
        rate_limiter=InMemoryRateLimiter(),
        concurrency=InMemoryConcurrencyLimiter(),
        lease_seconds=60,
    )
    for _ in range(20):
        assert (await unlimited(ask())).content == "done"


def test_a_limit_without_its_limiter_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="rate_limiter"):
        LimitedModel(slow(0), calls_per_minute=5)
    with pytest.raises(ValueError, match="concurrency"):
        LimitedModel(slow(0), max_concurrent=5)


class _FlippingLimiter(InMemoryRateLimiter):
    """Refuses once (the minute is booked), then lets the clock reach the next window."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.refused = 0

    async def acquire(
        self, key: str, limit: int, now: datetime, *, window_seconds: float = 60.0
    ) -> float:
        wait = await super().acquire(key, limit, now, window_seconds=window_seconds)
        if wait > 0:
            self.refused += 1
            self.clock.now = START.replace(second=59, microsecond=990_000) + timedelta(seconds=1)
        return wait


async def test_in_process_agent_run_obeys_rate_limit_per_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One rule, every entry point: ``Agent.run`` goes through the executor's step, so
    ``RATE_LIMIT_PER_MINUTE`` defers its model call to the next window there too (the in-process
    wake-up is a timer), instead of calling the provider over the limit."""
    from cloudagents.domain.agents import AgentDefinition
    from cloudagents.domain.results import LoopExit
    from cloudagents.runner import Agent

    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "1")
    clock = Clock()
    clock.now = START.replace(second=59, microsecond=990_000)  # 10 ms before the next window
    limiter = _FlippingLimiter(clock)
    assert await limiter.acquire("llm:calls", 1, clock()) == 0.0  # another caller's call
    seen: list[datetime] = []
    inner = ScriptedModel([ScriptedTurn(content="done")])

    async def model(request: ModelRequest, *, on_chunk: object = None) -> object:
        seen.append(clock())
        return await inner(request)

    definition = AgentDefinition.model_validate(
        {"id": "limited", "instructions": "Answer.", "model": {"provider": "openai", "name": "m"}}
    )
    agent = Agent(definition, model_client=model, rate_limiter=limiter, clock=clock)  # type: ignore[arg-type]
    result = await asyncio.wait_for(agent.run("hi"), timeout=30)
    assert result.exit is LoopExit.SATISFIED
    assert limiter.refused == 1, "the call over the limit was not refused"
    assert len(seen) == 1 and seen[0] >= START.replace(second=59, microsecond=990_000) + timedelta(
        seconds=1
    ), "the provider was called inside the booked minute"
