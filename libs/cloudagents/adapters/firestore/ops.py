"""Firestore operations counted as they are billed: documents read and documents written."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from google.api_core import exceptions as gexc

from cloudagents.domain.errors import TransientError
from cloudagents.metrics import count

_T = TypeVar("_T")


def written(target: _T, n: int = 1) -> _T:
    """Count a document write (billing and benchmarks) and return what writes it."""
    count("firestore.write", n)
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
    delay = BACKOFF_FIRST_SECONDS
    last: BaseException | None = None
    for _ in range(TRANSACTION_ATTEMPTS):
        try:
            return await apply(client.transaction(max_attempts=1))
        except Exception as error:
            if not _lost_to_contention(error):
                raise
            last = error
        count("firestore.transaction_retry")
        await asyncio.sleep(random.uniform(0, delay))
        delay = min(delay * 2, BACKOFF_MAX_SECONDS)
    raise TransientError(
        f"Firestore contention: lost {TRANSACTION_ATTEMPTS} transaction attempts ({last})"
    ) from last
