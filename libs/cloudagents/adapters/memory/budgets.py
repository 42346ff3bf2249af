"""In-memory ``CostLedger``, ``RateLimiter`` and ``ConcurrencyLimiter`` (one process; the
Firestore ones are shared)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class InMemoryCostLedger:
    """Daily spend per agent in dicts: settled spend, and reservations with their expiry."""

    def __init__(self, clock: Clock = _utcnow) -> None:
        self.clock = clock
        self._settled: defaultdict[tuple[str, str], float] = defaultdict(float)
        # (agent, day) -> reservation id -> (usd, expires_at)
        self._reservations: defaultdict[tuple[str, str], dict[str, tuple[float, datetime]]] = (
            defaultdict(dict)
        )

    async def spent(self, agent_id: str, day: str) -> float:
        now = self.clock()
        held = self._reservations[(agent_id, day)]
        for expired in [rid for rid, (_, expires_at) in held.items() if expires_at <= now]:
            del held[expired]
        return self._settled[(agent_id, day)] + sum(usd for usd, _ in held.values())

    async def reserve(self, agent_id: str, day: str, amount: float, *, hold_seconds: float) -> str:
        reservation = uuid.uuid4().hex
        expires_at = self.clock() + timedelta(seconds=hold_seconds)
        self._reservations[(agent_id, day)][reservation] = (amount, expires_at)
        return reservation

    async def settle(self, agent_id: str, day: str, reservation: str, actual: float) -> None:
        self._reservations[(agent_id, day)].pop(reservation, None)
        self._settled[(agent_id, day)] += actual


class InMemoryRateLimiter:
    """Fixed one-minute windows per key."""

    def __init__(self) -> None:
        self._counts: defaultdict[tuple[str, int], int] = defaultdict(int)
        self._lock = asyncio.Lock()

    async def acquire(
        self, key: str, limit: int, now: datetime, *, window_seconds: float = 60.0
    ) -> float:
        window = int(now.timestamp() // window_seconds)
        async with self._lock:
            if self._counts[(key, window)] < limit:
                self._counts[(key, window)] += 1
                return 0.0
        return (window + 1) * window_seconds - now.timestamp()

    async def reserve(
        self, key: str, limit: int, now: datetime, *, window_seconds: float = 60.0
    ) -> tuple[int, datetime]:
        window = int(now.timestamp() // window_seconds)
        async with self._lock:
            while self._counts[(key, window)] >= limit:
                window += 1
            self._counts[(key, window)] += 1
        start = datetime.fromtimestamp(window * window_seconds, tz=UTC)
        return window, max(start, now)


class InMemoryConcurrencyLimiter:
    """Leased slots per key in a dict: slot number -> (token, lease end)."""

    def __init__(self, clock: Clock = _utcnow) -> None:
        self.clock = clock
        self._slots: defaultdict[str, dict[int, tuple[str, datetime]]] = defaultdict(dict)

    async def acquire(self, key: str, limit: int, lease_seconds: float) -> str | None:
        # No await between reading and writing the slots: atomic within the event loop.
        now = self.clock()
        held = self._slots[key]
        live = {n for n, (_, until) in held.items() if until > now}
        if len(live) >= limit:
            return None
        slot = next(n for n in range(limit) if n not in live)
        token = f"{slot}:{uuid.uuid4().hex}"
        held[slot] = (token, now + timedelta(seconds=lease_seconds))
        return token

    async def release(self, key: str, token: str) -> None:
        held = self._slots[key]
        for slot, (holder, _) in list(held.items()):
            if holder == token:
                del held[slot]
