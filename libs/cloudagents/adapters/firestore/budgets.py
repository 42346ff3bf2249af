"""Budget counters shared by every instance, on Firestore.

Daily cost: ``budgets/{agent}:{day}/shards/{k}`` — increments land on a random shard of
``SHARDS`` so concurrent runs do not contend on one document (Firestore sustains about one write
per second per document); reading sums the shards. Tools per minute:
``rate_limits/{key}:{minute}`` — a transaction admits a call while the window's count is below
the limit, so the limit holds exactly across instances.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from google.cloud import firestore

from cloudagents.adapters.firestore.ops import counted_get, counted_stream, written

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
    """Fixed one-minute windows, one transaction per admission."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.client = client

    async def acquire(self, key: str, limit: int, now: datetime) -> float:
        window = int(now.timestamp() // 60)
        ref = self.client.collection("rate_limits").document(f"{key}:{window}")

        @firestore.async_transactional
        async def admit(transaction: Any) -> bool:
            snap = await counted_get(ref, transaction)
            count = int((snap.to_dict() or {}).get("count", 0)) if snap.exists else 0
            if count >= limit:
                return False
            written(transaction).set(ref, {"count": count + 1, "window": window, "key": key})
            return True

        admitted: bool = await admit(self.client.transaction())
        return 0.0 if admitted else (window + 1) * 60 - now.timestamp()
