"""Firestore operations counted as they are billed: documents read and documents written."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from google.api_core import exceptions as gexc

from cloudagents.domain.errors import TransientError
from cloudagents.domain.runs import WakeClaim
from cloudagents.metrics import count

_T = TypeVar("_T")


def written(target: _T, n: int = 1, *, live: bool = False) -> _T:
    """Count a document write (billing and benchmarks) and return what writes it. ``live``: a
    live event's document (a streamed chunk, a status shown while it happens), billed the same
    but counted apart (``firestore.write.live``), as ``designs/cost.md`` counts them."""
    count("firestore.write.live" if live else "firestore.write", n)
    return target


async def counted_get(ref: Any, transaction: Any = None) -> Any:
    count("firestore.read")
    if transaction is None:
        return await ref.get()
    return await ref.get(transaction=transaction)


async def counted_stream(query: Any) -> AsyncIterator[Any]:
    # A query is billed at least one read even when it matches nothing.
    n = 0
    async for doc in query.stream():
        n += 1
        yield doc
    count("firestore.read", max(n, 1))


async def claim_wake_document(client: Any, ref: Any, hold_seconds: float) -> WakeClaim:
    """Claim a wake-up on its own document ``ref`` (``RunStore.claim_wake``, the graph store's):
    created by the first delivery; a later one is told ``done`` once ``finish_wake_document``
    marked it, ``held`` while it is younger than ``hold_seconds``, and after that takes it over
    (one delivery only: the update is conditioned on the document as read)."""
    try:
        await written(ref).create({"at": time.time(), "done": False})
        return "claimed"
    except gexc.AlreadyExists:
        pass
    snapshot = await counted_get(ref)
    data = snapshot.to_dict() or {}
    if data.get("done", True):
        return "done"  # finished (a claim written before ``done`` existed counts as done)
    at = data.get("at", 0.0)
    at = at.timestamp() if hasattr(at, "timestamp") else float(at)
    if time.time() - at < hold_seconds:
        return "held"
    option = client.write_option(last_update_time=snapshot.update_time)
    try:
        await written(ref).update({"at": time.time()}, option=option)
    except (gexc.FailedPrecondition, gexc.NotFound):
        return "held"  # another delivery took it over first
    return "claimed"


async def finish_wake_document(ref: Any) -> None:
    """The claimed wake-up did its work and scheduled what follows it."""
    await written(ref).update({"done": True})


# Firestore cannot store an array directly inside an array, nor map keys that are empty or look
# like ``__name__``; JSON values from models and tools can hold both. Such values are stored as
# {"cloudagents_json": "<json text>"} and decoded on read.
_JSON_KEY = "cloudagents_json"


def to_doc(data: Any) -> Any:
    """A JSON-able value as Firestore can store it."""
    if isinstance(data, dict):
        if all(k and not (k.startswith("__") and k.endswith("__")) for k in data):
            return {k: to_doc(v) for k, v in data.items()}
        return {_JSON_KEY: json.dumps(data)}
    if isinstance(data, list):
        if all(not isinstance(item, list) for item in data):
            return [to_doc(item) for item in data]
        return {_JSON_KEY: json.dumps(data)}
    return data


def from_doc(data: Any) -> Any:
    """The value ``to_doc`` stored, as it was."""
    if isinstance(data, dict):
        if set(data) == {_JSON_KEY} and isinstance(data[_JSON_KEY], str):
            return json.loads(data[_JSON_KEY])
        return {k: from_doc(v) for k, v in data.items()}
    if isinstance(data, list):
        return [from_doc(item) for item in data]
    return data


# Hot documents (a run under parallel tool results, an offer raced by brokers) see lock conflicts.
TRANSACTION_ATTEMPTS = 12
BACKOFF_FIRST_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 1.0


def contention_exhausted(error: BaseException) -> bool:
    """The client's way of saying the transaction lost its attempt(s) to concurrent writers."""
    return isinstance(error, ValueError) and "Failed to commit transaction" in str(error)


def _lost_to_contention(error: BaseException | None) -> bool:
    """A lost commit or a read that timed out on a lock, possibly behind a failed rollback."""
    while error is not None:
        if isinstance(error, gexc.Aborted) or contention_exhausted(error):
            return True
        error = error.__context__
    return False


async def transact(client: Any, apply: Callable[[Any], Awaitable[_T]]) -> _T:
    """Run a ``@firestore.async_transactional`` function, retrying contention here.

    Each attempt is its own transaction of one try, so the client rolls back every attempt that
    loses (its own retry loop begins the next try without rolling back the aborted one, which
    the Firestore emulator can leave holding locks), and attempts are spaced by jittered
    exponential backoff rather than retried at once. Contention that outlasts every attempt
    becomes a ``TransientError`` (the message is redelivered) rather than a crash."""
    return await _retrying(
        lambda: apply(client.transaction(max_attempts=1)),
        lost=_lost_to_contention,
        metric="firestore.transaction_retry",
        what="transaction attempts",
    )


async def _retrying(
    once: Callable[[], Awaitable[_T]],
    *,
    lost: Callable[[BaseException], bool],
    metric: str,
    what: str,
) -> _T:
    """``once()`` until it does not lose to another writer, spaced by jittered exponential
    backoff; ``TRANSACTION_ATTEMPTS`` lost in a row become a ``TransientError``."""
    delay = BACKOFF_FIRST_SECONDS
    last: BaseException | None = None
    for _ in range(TRANSACTION_ATTEMPTS):
        try:
            return await once()
        except Exception as error:
            if not lost(error):
                raise
            last = error
        count(metric)
        await asyncio.sleep(random.uniform(0, delay))
        delay = min(delay * 2, BACKOFF_MAX_SECONDS)
    raise TransientError(
        f"Firestore contention: lost {TRANSACTION_ATTEMPTS} {what} ({last})"
    ) from last


class Guarded:
    """The writes of one optimistic attempt, committed as one atomic batch.

    A document the decision was read from is written with ``update_if_unchanged``: the batch
    applies only if that document has not changed since it was read (its update time), so two
    attempts that read the same version cannot both apply. New documents are ``set``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.batch = client.batch()
        self.writes = 0
        self._committed: list[tuple[int, Callable[[Any], None]]] = []

    def on_commit(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback`` with the write result (its ``update_time``) of the write added
        last, once the batch has committed."""
        self._committed.append((self.writes - 1, callback))

    def committed(self, results: Any) -> None:
        for index, callback in self._committed:
            callback(results[index])

    def set(self, ref: Any, data: Any, *, merge: bool = False) -> None:
        count("firestore.write")
        self.batch.set(ref, data, merge=merge)
        self.writes += 1

    def create(self, ref: Any, data: Any) -> None:
        """Create ``ref``; the batch fails (and is tried again) if another writer created it."""
        count("firestore.write")
        self.batch.create(ref, data)
        self.writes += 1

    def update_if_unchanged(self, ref: Any, data: dict[str, Any], read: Any) -> None:
        """Replace the fields of ``ref`` with ``data``, if it is still as ``read`` saw it."""
        count("firestore.write")
        option = self.client.write_option(last_update_time=read.update_time)
        self.batch.update(ref, data, option=option)
        self.writes += 1


def _lost_a_guard(error: BaseException) -> bool:
    """Another writer changed a guarded document first (or held it locked too long), or
    created one this attempt creates."""
    return isinstance(error, gexc.FailedPrecondition | gexc.Aborted | gexc.AlreadyExists)


async def guarded(client: Any, attempt: Callable[[Guarded], Awaitable[_T]]) -> _T:
    """Read-modify-write of a few documents without a transaction, so without read locks.

    ``attempt`` reads what it decides from (plain reads), adds its writes to the ``Guarded``
    it is given — each document it read and writes, conditioned on the version it read — and
    returns its answer; the writes then commit as one atomic batch. When a condition no longer
    holds, the batch is dropped and ``attempt`` runs again on fresh reads (jittered backoff).

    Why not a transaction: the Firestore emulator locks a document for every transaction that
    reads it, and when several deliveries of one step or one tool call (duplicates, redeliveries,
    wake-ups) run transactions on the same document at once, its lock timeouts can abort every
    one of them, round after round, for minutes (docs/reliability.md). A guarded batch holds no
    lock between its reads and its commit: of attempts that read one version, exactly one
    applies. Production Firestore serialises transactions fairly, but the guarded batch is also
    cheaper there (no transaction round trips)."""

    async def once() -> _T:
        writes = Guarded(client)
        answer = await attempt(writes)
        if writes.writes:
            writes.committed(await writes.batch.commit())
        return answer

    return await _retrying(
        once, lost=_lost_a_guard, metric="firestore.guard_retry", what="guarded writes"
    )
