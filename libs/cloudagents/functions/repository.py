"""``FunctionRepository``: the port the store persists through, and its in-memory adapter.

A Firestore adapter follows the same shape: versions in a collection keyed by hash (write once),
aliases keyed by name (updated in a transaction), executions appended.
"""

from __future__ import annotations

from typing import Protocol

from cloudagents.functions.versions import ExecutionRecord, FunctionAlias, FunctionVersion


class FunctionRepository(Protocol):
    """Where function versions, aliases and execution records live."""

    async def save_version(self, version: FunctionVersion) -> None:
        """Store a version; saving an existing hash again is a no-op (versions are immutable)."""
        ...

    async def get_version(self, version_hash: str) -> FunctionVersion | None: ...

    async def point_alias(self, name: str, version_hash: str) -> FunctionAlias:
        """Make ``name`` point at ``version_hash``, appending to its history if it changed."""
        ...

    async def get_alias(self, name: str) -> FunctionAlias | None: ...

    async def list_aliases(self) -> list[FunctionAlias]: ...

    async def record_execution(self, record: ExecutionRecord) -> None: ...

    async def executions(
        self, *, function: str | None = None, agent: str | None = None, limit: int = 100
    ) -> list[ExecutionRecord]:
        """Newest first."""
        ...


class InMemoryFunctionRepository:
    """``FunctionRepository`` in process memory, for tests and the local stack."""

    def __init__(self) -> None:
        self._versions: dict[str, FunctionVersion] = {}
        self._aliases: dict[str, FunctionAlias] = {}
        self._executions: list[ExecutionRecord] = []

    async def save_version(self, version: FunctionVersion) -> None:
        self._versions.setdefault(version.hash, version)

    async def get_version(self, version_hash: str) -> FunctionVersion | None:
        return self._versions.get(version_hash)

    async def point_alias(self, name: str, version_hash: str) -> FunctionAlias:
        alias = self._aliases.get(name)
        if alias is None:
            alias = FunctionAlias(name=name, current=version_hash, history=[version_hash])
        elif alias.current != version_hash:
            alias = alias.model_copy(
                update={"current": version_hash, "history": [*alias.history, version_hash]}
            )
        self._aliases[name] = alias
        return alias

    async def get_alias(self, name: str) -> FunctionAlias | None:
        return self._aliases.get(name)

    async def list_aliases(self) -> list[FunctionAlias]:
        return [self._aliases[name] for name in sorted(self._aliases)]

    async def record_execution(self, record: ExecutionRecord) -> None:
        self._executions.append(record)

    async def executions(
        self, *, function: str | None = None, agent: str | None = None, limit: int = 100
    ) -> list[ExecutionRecord]:
        found = [
            r
            for r in reversed(self._executions)
            if (function is None or r.function == function) and (agent is None or r.agent == agent)
        ]
        return found[:limit]
