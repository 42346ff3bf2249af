"""Firestore operations counted as they are billed: documents read and documents written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

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
