"""``ConcurrencyLimiter``: leased slots that hold under concurrency, on the fake and the emulator."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudagents.adapters.firestore.budgets import FirestoreConcurrencyLimiter
from cloudagents.adapters.memory.budgets import InMemoryConcurrencyLimiter
from cloudagents.ports.budgets import ConcurrencyLimiter
from tests.contract.conftest import new_id

pytestmark = pytest.mark.contract

LEASE = 300.0


class Clock:
    """A clock the test moves by hand, starting at the real time."""

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
def limiter(backend: str, clock: Clock, request: pytest.FixtureRequest) -> ConcurrencyLimiter:
    if backend == "memory":
        return InMemoryConcurrencyLimiter(clock=clock)
    db: Any = request.getfixturevalue("firestore_db")
    return FirestoreConcurrencyLimiter(db, clock=clock)


async def test_admits_up_to_the_limit_and_a_release_frees_a_slot(
    limiter: ConcurrencyLimiter,
) -> None:
    key = new_id("llm")
    tokens = [await limiter.acquire(key, 3, LEASE) for _ in range(3)]
    assert all(tokens) and len(set(tokens)) == 3
    assert await limiter.acquire(key, 3, LEASE) is None

    first = tokens[0]
    assert first is not None
    await limiter.release(key, first)
    again = await limiter.acquire(key, 3, LEASE)
    assert again is not None and again not in tokens
    assert await limiter.acquire(key, 3, LEASE) is None


async def test_keys_are_independent(limiter: ConcurrencyLimiter) -> None:
    one, other = new_id("llm"), new_id("llm")
    assert await limiter.acquire(one, 1, LEASE) is not None
    assert await limiter.acquire(one, 1, LEASE) is None
    assert await limiter.acquire(other, 1, LEASE) is not None


async def test_releasing_twice_or_an_unknown_token_frees_nothing_more(
    limiter: ConcurrencyLimiter,
) -> None:
    key = new_id("llm")
    first = await limiter.acquire(key, 2, LEASE)
    second = await limiter.acquire(key, 2, LEASE)
    assert first is not None and second is not None
    await limiter.release(key, first)
    await limiter.release(key, first)
    await limiter.release(key, "000001:not-a-token")
    # One slot free (first's), the other still held by second.
    assert await limiter.acquire(key, 2, LEASE) is not None
    assert await limiter.acquire(key, 2, LEASE) is None


async def test_a_slot_whose_lease_passed_is_taken_over(
    limiter: ConcurrencyLimiter, clock: Clock
) -> None:
    key = new_id("llm")
    killed = await limiter.acquire(key, 1, 60)  # a holder that never releases
    assert killed is not None
    clock.advance(59)
    assert await limiter.acquire(key, 1, 60) is None

    clock.advance(2)
    heir = await limiter.acquire(key, 1, 60)
    assert heir is not None and heir != killed

    # The late release of the killed holder must not free the heir's slot.
    await limiter.release(key, killed)
    assert await limiter.acquire(key, 1, 60) is None
    await limiter.release(key, heir)
    assert await limiter.acquire(key, 1, 60) is not None


async def test_racing_callers_never_exceed_the_limit(limiter: ConcurrencyLimiter) -> None:
    key = new_id("llm")
    results = await asyncio.gather(*(limiter.acquire(key, 4, LEASE) for _ in range(12)))
    admitted = [token for token in results if token is not None]
    # A racer tries every slot it saw free, so none is left over: exactly the limit get in.
    assert len(admitted) == 4
    assert len(set(admitted)) == 4
    assert await limiter.acquire(key, 4, LEASE) is None
    for token in admitted[:2]:
        await limiter.release(key, token)
    assert await limiter.acquire(key, 4, LEASE) is not None
    assert await limiter.acquire(key, 4, LEASE) is not None
    assert await limiter.acquire(key, 4, LEASE) is None


async def test_racing_for_one_expired_slot_only_one_takes_it(
    limiter: ConcurrencyLimiter, clock: Clock
) -> None:
    key = new_id("llm")
    assert await limiter.acquire(key, 1, 10) is not None
    clock.advance(11)
    results = await asyncio.gather(*(limiter.acquire(key, 1, LEASE) for _ in range(6)))
    assert len([token for token in results if token is not None]) == 1
