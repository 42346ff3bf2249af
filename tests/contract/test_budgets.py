"""``CostLedger`` and ``RateLimiter``: shared counters that hold under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from cloudagents.ports.budgets import CostLedger, RateLimiter
from tests.contract.conftest import new_id, race

pytestmark = pytest.mark.contract

DAY = "2030-01-01"


async def test_reserve_settle_spent(cost_ledger: CostLedger) -> None:
    agent = new_id("agent")
    assert await cost_ledger.spent(agent, DAY) == 0.0

    await cost_ledger.reserve(agent, DAY, 0.5)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.5)
    await cost_ledger.reserve(agent, DAY, 0.25)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.75)

    # The first call cost less than reserved, the second more; a failed call settles at 0.
    await cost_ledger.settle(agent, DAY, 0.5, 0.125)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.375)
    await cost_ledger.settle(agent, DAY, 0.25, 0.3)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.425)
    await cost_ledger.reserve(agent, DAY, 0.1)
    await cost_ledger.settle(agent, DAY, 0.1, 0.0)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.425)
    await cost_ledger.settle(agent, DAY, 0.2, 0.2)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.425)


async def test_spend_is_per_agent_and_day(cost_ledger: CostLedger) -> None:
    agent, other = new_id("agent"), new_id("agent")
    await cost_ledger.reserve(agent, DAY, 1.0)
    await cost_ledger.reserve(agent, "2030-01-02", 2.0)
    await cost_ledger.reserve(other, DAY, 4.0)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(1.0)
    assert await cost_ledger.spent(agent, "2030-01-02") == pytest.approx(2.0)
    assert await cost_ledger.spent(other, DAY) == pytest.approx(4.0)


async def test_concurrent_reserves_are_all_counted(cost_ledger: CostLedger) -> None:
    agent = new_id("agent")
    await asyncio.gather(*(cost_ledger.reserve(agent, DAY, 0.01 * (i + 1)) for i in range(20)))
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.01 * 210)
    await asyncio.gather(*(cost_ledger.settle(agent, DAY, 0.01 * (i + 1), 0.01) for i in range(20)))
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.2)


WINDOW_START = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


async def test_admits_up_to_the_limit_per_window(rate_limiter: RateLimiter) -> None:
    key = new_id("agent")
    now = WINDOW_START + timedelta(seconds=15)
    waits = [await rate_limiter.acquire(key, 3, now) for _ in range(3)]
    assert waits == [0.0, 0.0, 0.0]
    refused = await rate_limiter.acquire(key, 3, now)
    assert refused == pytest.approx(45.0)
    later = await rate_limiter.acquire(key, 3, WINDOW_START + timedelta(seconds=59.5))
    assert later == pytest.approx(0.5)
    # The next window admits again; other keys have their own windows.
    assert await rate_limiter.acquire(key, 3, WINDOW_START + timedelta(seconds=60)) == 0.0
    assert await rate_limiter.acquire(new_id("agent"), 3, now) == 0.0


async def test_concurrent_acquires_admit_exactly_the_limit(rate_limiter: RateLimiter) -> None:
    key = new_id("agent")
    now = WINDOW_START + timedelta(seconds=20)
    waits = await race([partial(rate_limiter.acquire, key, 2, now)] * 3)
    assert sorted(waits) == [0.0, 0.0, pytest.approx(40.0)]


async def test_many_concurrent_acquires_admit_exactly_the_limit(
    rate_limiter: RateLimiter, backend: str, request: pytest.FixtureRequest
) -> None:
    """A caller that loses the admission transaction to contention is told to wait briefly (under
    a second) and asks again, as the tool invoker does; the limit holds exactly."""
    key = new_id("agent")
    now = WINDOW_START + timedelta(seconds=30)

    async def admit_or_window_wait() -> float:
        while (wait := await rate_limiter.acquire(key, 7, now)) and wait < 1.0:
            await asyncio.sleep(wait)
        return wait

    waits = await asyncio.gather(*(admit_or_window_wait() for _ in range(20)))
    assert waits.count(0.0) == 7
    assert all(w == pytest.approx(30.0) for w in waits if w != 0.0)
