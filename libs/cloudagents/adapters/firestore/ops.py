"""Firestore operations counted as they are billed: documents read and documents written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

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


# Hot documents (a run under parallel tool results, an offer raced by brokers, a rate-limit
# window) see lock conflicts; the client's default of 5 attempts gives up too soon.
TRANSACTION_ATTEMPTS = 25


def contention_exhausted(error: BaseException) -> bool:
    """The client's way of saying the transaction lost every attempt to concurrent writers."""
    return isinstance(error, ValueError) and "Failed to commit transaction" in str(error)


async def transact(client: Any, apply: Callable[[Any], Awaitable[_T]]) -> _T:
    """Run a ``@firestore.async_transactional`` function; contention that outlasts every attempt
    becomes a ``TransientError`` (the message is redelivered) rather than a crash."""
    try:
        return await apply(client.transaction(max_attempts=TRANSACTION_ATTEMPTS))
    except ValueError as error:
        if contention_exhausted(error):
            raise TransientError(f"Firestore contention: {error}") from error
        raise
