"""Budget counters shared by every instance, on Firestore.

Daily cost: ``budgets/{agent}:{day}/shards/{k}`` — increments land on a random shard of
``SHARDS`` so concurrent runs do not contend on one document (Firestore sustains about one write
per second per document); reading sums the shards. Tools per minute:
``rate_limits/{key}:{minute}/slots/{n}`` — an admission creates one of ``limit`` slot documents,
so the limit holds exactly across instances, without locks.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from cloudagents.adapters.firestore.ops import counted_stream, written
from cloudagents.metrics import count

SHARDS = 10


class FirestoreCostLedger:
    """Sharded daily spend per agent."""

    def __init__(self, client: firestore.AsyncClient, shards: int = SHARDS) -> None:
        self.client = client
        self.shards = shards

    def _shards(self, agent_id: str, day: str) -> Any:
        return self.client.collection("budgets").document(f"{agent_id}:{day}").collection("shards")

    async def spent(self, agent_id: str, day: str) -> float:
        total = 0.0
        async for shard in counted_stream(self._shards(agent_id, day)):
            total += float((shard.to_dict() or {}).get("usd", 0.0))
        return total

    async def _add(self, agent_id: str, day: str, amount: float) -> None:
        if amount == 0:
            return
        doc = self._shards(agent_id, day).document(str(random.randrange(self.shards)))
        await written(doc).set({"usd": firestore.Increment(amount)}, merge=True)

    async def reserve(self, agent_id: str, day: str, amount: float) -> None:
        await self._add(agent_id, day, amount)

    async def settle(self, agent_id: str, day: str, reserved: float, actual: float) -> None:
        await self._add(agent_id, day, actual - reserved)


class FirestoreRateLimiter:
    """Fixed one-minute windows as numbered slots: ``rate_limits/{key}:{minute}/slots/{n}``.

    An admission is the creation of one of the window's ``limit`` slot documents. Firestore
    creates a document at most once, so no more than ``limit`` calls are admitted per window on
    every instance together, without transactions or locks, and the writes spread over many
    documents (Firestore sustains about one write per second on any one). Each caller first
    counts the slots taken, then tries the free ones from a random starting point.
    """

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.client = client

    async def acquire(self, key: str, limit: int, now: datetime) -> float:
        window = int(now.timestamp() // 60)
        slots = (
            self.client.collection("rate_limits").document(f"{key}:{window}").collection("slots")
        )
        count("firestore.read")
        aggregate = await slots.count().get()
        taken = int(aggregate[0][0].value) if aggregate and aggregate[0] else 0
        if taken < limit:
            expire_at = datetime.fromtimestamp((window + 1) * 60, tz=UTC) + timedelta(days=1)
            # Slots fill from 0; start at the count and wrap round to any gap a racer left.
            for slot in [*range(taken, limit), *range(taken)]:
                try:
                    await written(slots.document(f"{slot:06d}")).create(
                        {"key": key, "window": window, "expire_at": expire_at}
                    )
                except gexc.AlreadyExists:
                    continue
                return 0.0
        return (window + 1) * 60 - now.timestamp()
