"""Counts of billable cloud operations made by this process, by the adapters themselves.

The benchmarks read them to price a step (Firestore reads/writes/deletes, Pub/Sub messages,
Cloud Storage operations, Cloud Tasks); they are plain in-process counters, cheap enough to
leave on.
"""

from __future__ import annotations

from collections import Counter

OPERATIONS: Counter[str] = Counter()


def count(operation: str, n: int = 1) -> None:
    OPERATIONS[operation] += n


def snapshot() -> dict[str, int]:
    return dict(OPERATIONS)


def reset() -> None:
    OPERATIONS.clear()
