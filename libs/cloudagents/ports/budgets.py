"""Shared budget counters: the daily cost ledger, the per-minute limiter and the cap on calls
in flight."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class CostLedger(Protocol):
    """Today's spend per agent, shared by all runs on all instances.

    Before a model call the caller ``reserve``s an upper estimate of its cost and afterwards
    ``settle``s the actual cost against that reservation, so concurrent calls see each other's
    pending spend: overspend is bounded by the calls in flight that were admitted before any
    of them settled (see "The overspend bound" in ``docs/reliability.md``).

    A reservation expires: it counts toward ``spent`` until it is settled or until its
    ``hold_seconds`` have passed, whichever comes first. A caller killed between ``reserve`` and
    ``settle`` (SIGKILL, instance shutdown, crash) therefore holds its estimate against the cap
    only for as long as its model call could have lasted, not for the rest of the day.
    """

    async def spent(self, agent_id: str, day: str) -> float:
        """Settled spend plus the reservations of that day not yet settled nor expired."""
        ...

    async def reserve(self, agent_id: str, day: str, amount: float, *, hold_seconds: float) -> str:
        """Hold ``amount`` against the day's spend for at most ``hold_seconds``; return its id."""
        ...

    async def settle(self, agent_id: str, day: str, reservation: str, actual: float) -> None:
        """Drop the reservation and add ``actual`` to the settled spend, in one atomic write.

        An unknown or already expired reservation still adds ``actual`` (the money was spent)
        and does not fail; an empty ``reservation`` (none was taken: the agent has no daily cap
        to hold it against) only adds ``actual``.
        """
        ...


class RateLimiter(Protocol):
    """A fixed-window counter: at most ``limit`` calls per key per window (a minute by default).

    ``acquire`` returns 0 when admitted now, else the seconds until the next window opens.
    ``reserve`` always takes a slot: in the current window if one is free, else in the first
    later window that has one; it returns that window's number and start, so a refused caller
    is deferred to the window in which it will run (and holds its slot there) instead of
    retrying blindly.
    """

    async def acquire(
        self, key: str, limit: int, now: datetime, *, window_seconds: float = 60.0
    ) -> float: ...

    async def reserve(
        self, key: str, limit: int, now: datetime, *, window_seconds: float = 60.0
    ) -> tuple[int, datetime]: ...


class ConcurrencyLimiter(Protocol):
    """At most ``limit`` holders of a key at once, on every instance together (seed 004's
    ``MAX_CONCURRENT_EXECUTIONS``).

    ``acquire`` takes one of the key's ``limit`` slots and returns a token for it, or ``None``
    when every slot is held; it never waits. A slot is leased: it is held until ``release``
    or until ``lease_seconds`` have passed, whichever comes first, and then another caller may
    take it over. A process killed while holding a slot therefore blocks it only until its
    lease ends, never for good. Choose a lease longer than the work it covers.

    ``release`` frees the slot ``token`` holds. Releasing a token twice, or one whose slot was
    taken over after its lease passed, does nothing (and never frees the new holder's slot).
    """

    async def acquire(self, key: str, limit: int, lease_seconds: float) -> str | None: ...

    async def release(self, key: str, token: str) -> None: ...
