"""In-memory ``CostLedger`` and ``RateLimiter`` (one process; the Firestore ones are shared)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime


class InMemoryCostLedger:
    """Daily spend per agent in a dict."""

    def __init__(self) -> None:
        self._spent: defaultdict[tuple[str, str], float] = defaultdict(float)

    async def spent(self, agent_id: str, day: str) -> float:
        return self._spent[(agent_id, day)]

    async def reserve(self, agent_id: str, day: str, amount: float) -> None:
        self._spent[(agent_id, day)] += amount

    async def settle(self, agent_id: str, day: str, reserved: float, actual: float) -> None:
        self._spent[(agent_id, day)] += actual - reserved


class InMemoryRateLimiter:
    """Fixed one-minute windows per key."""

    def __init__(self) -> None:
        self._counts: defaultdict[tuple[str, int], int] = defaultdict(int)
        self._lock = asyncio.Lock()

    async def acquire(self, key: str, limit: int, now: datetime) -> float:
        window = int(now.timestamp() // 60)
        async with self._lock:
            if self._counts[(key, window)] < limit:
                self._counts[(key, window)] += 1
                return 0.0
        return (window + 1) * 60 - now.timestamp()
