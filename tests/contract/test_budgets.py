"""``CostLedger`` and ``RateLimiter``: shared counters that hold under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from cloudagents.adapters.firestore.budgets import FirestoreCostLedger
from cloudagents.adapters.memory.budgets import InMemoryCostLedger
from cloudagents.ports.budgets import CostLedger, RateLimiter
from tests.contract.conftest import new_id, race

pytestmark = pytest.mark.contract

DAY = "2030-01-01"
HOLD = 600.0


class Clock:
    """A clock the test moves by hand; starts at the real time so the emulator's documents
    carry plausible timestamps."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cost_ledger(backend: str, clock: Clock, request: pytest.FixtureRequest) -> CostLedger:
    """Overrides the conftest fixture: the same two adapters, on a clock the test drives."""
    if backend == "memory":
        return InMemoryCostLedger(clock=clock)
    db: Any = request.getfixturevalue("firestore_db")
    return FirestoreCostLedger(db, clock=clock)


async def test_reserve_settle_spent(cost_ledger: CostLedger) -> None:
    agent = new_id("agent")
    assert await cost_ledger.spent(agent, DAY) == 0.0

    first = await cost_ledger.reserve(agent, DAY, 0.5, hold_seconds=HOLD)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.5)
    second = await cost_ledger.reserve(agent, DAY, 0.25, hold_seconds=HOLD)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.75)
    assert first != second

    # The first call cost less than reserved, the second more; a failed call settles at 0.
    await cost_ledger.settle(agent, DAY, first, 0.125)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.375)
    await cost_ledger.settle(agent, DAY, second, 0.3)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.425)
    failed = await cost_ledger.reserve(agent, DAY, 0.1, hold_seconds=HOLD)
    await cost_ledger.settle(agent, DAY, failed, 0.0)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.425)
    # Settling twice, or a reservation never made, drops nothing more; the actual cost counts.
    await cost_ledger.settle(agent, DAY, failed, 0.0)
    await cost_ledger.settle(agent, DAY, "never-reserved", 0.2)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.625)


async def test_settle_replaces_the_reservation_by_the_actual_cost(cost_ledger: CostLedger) -> None:
    agent = new_id("agent")
    kept = await cost_ledger.reserve(agent, DAY, 1.0, hold_seconds=HOLD)
    settled = await cost_ledger.reserve(agent, DAY, 2.0, hold_seconds=HOLD)
    await cost_ledger.settle(agent, DAY, settled, 0.5)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(1.5)
    # Only the settled reservation was removed: the other one still counts, and settles alone.
    await cost_ledger.settle(agent, DAY, kept, 0.25)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.75)


async def test_an_unsettled_reservation_stops_counting_when_its_hold_has_passed(
    cost_ledger: CostLedger, clock: Clock
) -> None:
    """A caller killed between reserve and settle does not eat the day's budget for good."""
    agent = new_id("agent")
    await cost_ledger.reserve(agent, DAY, 3.0, hold_seconds=60)  # never settled: the caller died
    late = await cost_ledger.reserve(agent, DAY, 0.5, hold_seconds=600)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(3.5)

    clock.advance(59)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(3.5)
    clock.advance(2)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.5)

    # A settle after its own hold has passed still counts the money spent.
    clock.advance(600)
    assert await cost_ledger.spent(agent, DAY) == 0.0
    await cost_ledger.settle(agent, DAY, late, 0.4)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.4)


async def test_spend_is_per_agent_and_day(cost_ledger: CostLedger) -> None:
    agent, other = new_id("agent"), new_id("agent")
    await cost_ledger.reserve(agent, DAY, 1.0, hold_seconds=HOLD)
    await cost_ledger.reserve(agent, "2030-01-02", 2.0, hold_seconds=HOLD)
    held = await cost_ledger.reserve(other, DAY, 4.0, hold_seconds=HOLD)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(1.0)
    assert await cost_ledger.spent(agent, "2030-01-02") == pytest.approx(2.0)
    assert await cost_ledger.spent(other, DAY) == pytest.approx(4.0)
    # A reservation id is settled against its own agent and day only.
    await cost_ledger.settle(agent, DAY, held, 0.5)
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(1.5)
    assert await cost_ledger.spent(other, DAY) == pytest.approx(4.0)


async def test_concurrent_reserves_and_settles_sum_exactly(cost_ledger: CostLedger) -> None:
    agent = new_id("agent")
    reservations = await asyncio.gather(
        *(cost_ledger.reserve(agent, DAY, 0.01 * (i + 1), hold_seconds=HOLD) for i in range(20))
    )
    assert len(set(reservations)) == 20
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.01 * 210)
    await asyncio.gather(
        *(cost_ledger.settle(agent, DAY, reservation, 0.01) for reservation in reservations)
    )
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.2)


async def test_concurrent_calls_that_reserve_then_settle_sum_exactly(
    cost_ledger: CostLedger,
) -> None:
    """20 model calls at once, each reserving, then settling its own reservation."""
    agent = new_id("agent")

    async def call(i: int) -> None:
        reservation = await cost_ledger.reserve(agent, DAY, 1.0, hold_seconds=HOLD)
        await asyncio.sleep(0)
        await cost_ledger.settle(agent, DAY, reservation, 0.001 * (i + 1))

    await asyncio.gather(*(call(i) for i in range(20)))
    assert await cost_ledger.spent(agent, DAY) == pytest.approx(0.001 * 210)


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


async def test_reserve_books_the_first_window_with_a_free_slot(rate_limiter: RateLimiter) -> None:
    key = new_id("agent")
    now = WINDOW_START + timedelta(seconds=15)
    booked = [await rate_limiter.reserve(key, 2, now) for _ in range(5)]
    first = int(WINDOW_START.timestamp() // 60)
    assert [w for w, _ in booked] == [first, first, first + 1, first + 1, first + 2]
    # A slot in the current window runs now; a later one at its window's start.
    assert [at for _, at in booked] == [
        now,
        now,
        WINDOW_START + timedelta(seconds=60),
        WINDOW_START + timedelta(seconds=60),
        WINDOW_START + timedelta(seconds=120),
    ]
    # A booked slot counts against its window for acquire too.
    assert await rate_limiter.acquire(key, 2, WINDOW_START + timedelta(seconds=61)) > 0


async def test_concurrent_reserves_never_overfill_a_window(rate_limiter: RateLimiter) -> None:
    key = new_id("agent")
    now = WINDOW_START + timedelta(seconds=5)
    booked = await asyncio.gather(
        *(rate_limiter.reserve(key, 3, now, window_seconds=10) for _ in range(10))
    )
    per_window: dict[int, int] = {}
    for window, _ in booked:
        per_window[window] = per_window.get(window, 0) + 1
    assert max(per_window.values()) <= 3
    assert sum(per_window.values()) == 10
