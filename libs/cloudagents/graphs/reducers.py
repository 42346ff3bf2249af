"""Reducers: how an update to a state key combines with the value already there."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

ReducerFunction = Callable[[Any, Any], Any]
"""``(current, update) -> new value``; ``current`` is None when the key is not set yet."""


def last_value(current: Any, update: Any) -> Any:
    """The update replaces the value (two parallel writers are a conflict, never a race)."""
    return update


def append(current: Any, update: Any) -> Any:
    """Add the update as one item to a list."""
    return [*(current or []), update]


def extend(current: Any, update: Any) -> Any:
    """Add every item of the update (a list or tuple) to a list."""
    if not isinstance(update, (list, tuple)):
        raise TypeError(f"the extend reducer needs a list, got {type(update).__name__}")
    return [*(current or []), *update]


def add(current: Any, update: Any) -> Any:
    """Sum numbers (or concatenate strings); a missing value counts as the update alone."""
    return update if current is None else current + update


def merge(current: Any, update: Any) -> Any:
    """Shallow dict merge; the update's keys win."""
    if not isinstance(update, Mapping):
        raise TypeError(f"the merge reducer needs a mapping, got {type(update).__name__}")
    return {**(current or {}), **update}


BUILTIN_REDUCERS: dict[str, ReducerFunction] = {
    "last_value": last_value,
    "append": append,
    "extend": extend,
    "add": add,
    "merge": merge,
}
