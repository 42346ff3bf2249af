"""Budget counters shared by every instance, on Firestore.

Daily cost, under ``budgets/{agent}:{day}``: settled spend in ``shards/{k}`` — increments land
on a random shard of ``SHARDS`` so concurrent runs do not contend on one document (Firestore
sustains about one write per second per document) — and pending calls in
``reservations/{id}`` (``usd``, ``expires_at``), one document per reservation. Spent is the sum
of the shards plus the reservations whose ``expires_at`` is still ahead; a reservation left
behind by a killed process stops counting at its ``expires_at``, and the ``reservations`` TTL
policy (``scripts/gen_terraform_topology.py``) deletes it some time after. Settling deletes the
reservation and increments a shard in one batch.

Tools per minute: ``rate_limits/{key}:{minute}/slots/{n}`` — an admission creates one of
``limit`` slot documents, so the limit holds exactly across instances, without locks.

Calls in flight: ``concurrency/{key}/slots/{n}`` — a holder leases one of ``limit`` slot
documents; a slot whose lease has passed can be taken over, so a killed process never holds
one for good.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from cloudagents.adapters.firestore.ops import counted_get, counted_stream, written
from cloudagents.domain.errors import TransientError
from cloudagents.metrics import count

SHARDS = 10
# How far ahead a refused call may be booked: at 1 call a minute, a backlog of an hour.
MAX_RESERVE_WINDOWS = 60

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class FirestoreCostLedger:
    """Sharded daily spend per agent, plus expiring reservations of calls in flight."""

    def __init__(
        self, client: firestore.AsyncClient, shards: int = SHARDS, *, clock: Clock = _utcnow
    ) -> None:
        self.client = client
        self.shards = shards
        self.clock = clock

    def _day(self, agent_id: str, day: str) -> Any:
        return self.client.collection("budgets").document(f"{agent_id}:{day}")

    def _shard(self, agent_id: str, day: str) -> Any:
        return (
            self._day(agent_id, day)
            .collection("shards")
            .document(str(random.randrange(self.shards)))
        )

    async def spent(self, agent_id: str, day: str) -> float:
        # Reservations before shards: a settle landing between the two reads is then counted
        # twice (briefly over), never in neither (under).
        total = 0.0
        held = (
            self._day(agent_id, day)
            .collection("reservations")
            .where(filter=firestore.FieldFilter("expires_at", ">", self.clock()))
        )
        async for reservation in counted_stream(held):
            total += float((reservation.to_dict() or {}).get("usd", 0.0))
        async for shard in counted_stream(self._day(agent_id, day).collection("shards")):
            total += float((shard.to_dict() or {}).get("usd", 0.0))
        return total

    async def reserve(self, agent_id: str, day: str, amount: float, *, hold_seconds: float) -> str:
        reservation = uuid.uuid4().hex
        expires_at = self.clock() + timedelta(seconds=hold_seconds)
        doc = self._day(agent_id, day).collection("reservations").document(reservation)
        await written(doc).set({"usd": amount, "expires_at": expires_at})
        return reservation

    async def settle(self, agent_id: str, day: str, reservation: str, actual: float) -> None:
        # Deleting a missing document succeeds: an expired (or TTL-deleted) reservation still
        # gets its actual cost counted.
        # No reservation (an agent without a daily cap reserves none): only the actual cost.
        batch = self.client.batch()
        writes = 0
        if reservation:
            batch.delete(self._day(agent_id, day).collection("reservations").document(reservation))
            writes += 1
        if actual != 0:
            batch.set(self._shard(agent_id, day), {"usd": firestore.Increment(actual)}, merge=True)
            writes += 1
        if writes:
            await written(batch, writes).commit()


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

    async def acquire(
        self, key: str, limit: int, now: datetime, *, window_seconds: float = 60.0
    ) -> float:
        window = int(now.timestamp() // window_seconds)
        if await self._take(key, limit, window, window_seconds):
            return 0.0
        return (window + 1) * window_seconds - now.timestamp()

    async def reserve(
        self, key: str, limit: int, now: datetime, *, window_seconds: float = 60.0
    ) -> tuple[int, datetime]:
        window = int(now.timestamp() // window_seconds)
        for _ in range(MAX_RESERVE_WINDOWS):
            if await self._take(key, limit, window, window_seconds):
                start = datetime.fromtimestamp(window * window_seconds, tz=UTC)
                return window, max(start, now)
            window += 1
        raise TransientError(
            f"no tools-per-minute slot for {key!r} in the next {MAX_RESERVE_WINDOWS} windows"
        )

    async def _take(self, key: str, limit: int, window: int, window_seconds: float) -> bool:
        """Create one of the window's ``limit`` slot documents; ``False`` if all are taken."""
        slots = (
            self.client.collection("rate_limits").document(f"{key}:{window}").collection("slots")
        )
        count("firestore.read")
        aggregate = await slots.count().get()
        taken = int(aggregate[0][0].value) if aggregate and aggregate[0] else 0
        if taken >= limit:
            return False
        expire_at = datetime.fromtimestamp((window + 1) * window_seconds, tz=UTC) + timedelta(
            days=1
        )
        # Slots fill from 0; start at the count and wrap round to any gap a racer left.
        for slot in [*range(taken, limit), *range(taken)]:
            try:
                await written(slots.document(f"{slot:06d}")).create(
                    {"key": key, "window": window, "expire_at": expire_at}
                )
            except gexc.AlreadyExists:
                continue
            return True
        return False


class FirestoreConcurrencyLimiter:
    """Leased slots as documents: ``concurrency/{key}/slots/{n}`` for ``n`` below the limit.

    A slot document holds its holder's ``token`` and the ``lease_until`` of its lease. Acquiring
    reads the key's slots (one query), then tries to *create* a free slot (Firestore creates a
    document at most once) or to *take over* one whose lease has passed, with an update
    conditioned on the slot's ``update_time`` as read (of two callers racing for the same
    expired slot, only one update applies). Releasing deletes the slot under the same
    condition, after checking that the token still holds it. No transactions, no locks, and
    the writes spread over ``limit`` documents.

    Leases are compared with this process's clock; keep them much longer than the clock skew
    between instances (seconds against minutes). ``expire_at`` (a day past the lease) lets the
    ``slots.expire_at`` TTL policy already in the topology (a collection-group policy, so it
    covers these and the rate-limit slots alike) sweep slots nobody took over or released.
    """

    def __init__(self, client: firestore.AsyncClient, *, clock: Clock = _utcnow) -> None:
        self.client = client
        self.clock = clock

    def _slots(self, key: str) -> Any:
        return self.client.collection("concurrency").document(key).collection("slots")

    async def acquire(self, key: str, limit: int, lease_seconds: float) -> str | None:
        now = self.clock()
        held: dict[str, Any] = {}
        async for snapshot in counted_stream(self._slots(key)):
            held[snapshot.id] = snapshot
        live = [s for s in held.values() if _lease_until(s) > now]
        if len(live) >= limit:
            return None
        names = [f"{n:06d}" for n in range(limit)]
        free = [name for name in names if name not in held]
        expired = [name for name in names if name in held and _lease_until(held[name]) <= now]
        random.shuffle(free)  # racers spread over the free slots instead of all trying slot 0
        until = now + timedelta(seconds=lease_seconds)
        for name in [*free, *expired]:
            token = f"{name}:{uuid.uuid4().hex}"
            data = {
                "key": key,
                "token": token,
                "lease_until": until,
                "expire_at": until + timedelta(days=1),
            }
            doc = self._slots(key).document(name)
            try:
                if name in held:
                    option = self.client.write_option(last_update_time=held[name].update_time)
                    await written(doc).update(data, option=option)
                else:
                    await written(doc).create(data)
            except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted):
                continue  # a racer took this slot first
            return token
        return None

    async def release(self, key: str, token: str) -> None:
        name = token.split(":", 1)[0]
        doc = self._slots(key).document(name)
        snapshot = await counted_get(doc)
        if not snapshot.exists or (snapshot.to_dict() or {}).get("token") != token:
            return  # released already, or taken over after the lease passed
        try:
            option = self.client.write_option(last_update_time=snapshot.update_time)
            await written(doc).delete(option=option)
        except (gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted):
            pass  # taken over between the read and the delete: the new holder keeps it


def _lease_until(snapshot: Any) -> datetime:
    until = (snapshot.to_dict() or {}).get("lease_until")
    return until if isinstance(until, datetime) else datetime.min.replace(tzinfo=UTC)
