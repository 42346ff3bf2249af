"""Shared budget counters: the daily cost ledger and the tools-per-minute limiter."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class CostLedger(Protocol):
    """Today's spend per agent, shared by all runs on all instances.

    Before a model call the caller ``reserve``s an upper estimate of its cost and afterwards
    ``settle``s the actual cost against that reservation, so concurrent calls see each other's
    pending spend: overspend is bounded by the calls in flight that were admitted before any
    of them settled (see ``docs/budgets.md``).
    """

    async def spent(self, agent_id: str, day: str) -> float: ...

    async def reserve(self, agent_id: str, day: str, amount: float) -> None: ...

    async def settle(self, agent_id: str, day: str, reserved: float, actual: float) -> None: ...


class RateLimiter(Protocol):
    """A fixed-window counter: ``acquire`` admits at most ``limit`` calls per key per minute.

    Returns 0 when admitted, else the seconds to wait until the next window opens.
    """

    async def acquire(self, key: str, limit: int, now: datetime) -> float: ...
