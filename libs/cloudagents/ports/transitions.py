"""The store of seed 004's workflows: definitions, tokens, their history and agent executions.

Every change of a token goes through :meth:`TransitionStore.update_token`, which applies only if
the stored token is still at ``expected_version`` (a guarded write): of two deliveries that read
the same version, one moves the token and the other finds it moved.
"""

from __future__ import annotations

from typing import Protocol

from cloudagents.domain.transitions import (
    Token,
    TokenHistoryEntry,
    TransitionExecution,
    WorkflowDefinition,
)


class TransitionStore(Protocol):
    """``transition_workflows``, ``tokens`` (with ``history``) and ``transition_executions``."""

    async def put_workflow(self, workflow: WorkflowDefinition) -> None: ...

    async def get_workflow(self, workflow_id: str) -> WorkflowDefinition | None: ...

    async def list_workflows(self) -> list[WorkflowDefinition]: ...

    async def create_token(self, token: Token) -> bool:
        """Store a new token; ``False`` if one with its id exists (nothing written)."""
        ...

    async def get_token(self, token_id: str) -> Token | None: ...

    async def tokens_in_place(self, workflow_id: str, place: str) -> list[Token]:
        """Every token of ``workflow_id`` now in ``place``, by token id (what a place agent
        added to the place by a new definition of the workflow is scheduled for)."""
        ...

    async def update_token(
        self,
        token: Token,
        *,
        expected_version: int,
        history: TokenHistoryEntry | None = None,
        executions: list[TransitionExecution] | None = None,
    ) -> bool:
        """Write ``token`` (its ``version`` is ``expected_version + 1``), its new ``history``
        entry and ``executions``, all or nothing, only if the stored token is at
        ``expected_version``; ``False`` (nothing written) otherwise."""
        ...

    async def history(self, token_id: str) -> list[TokenHistoryEntry]:
        """The token's moves, oldest first."""
        ...

    async def get_execution(self, execution_id: str) -> TransitionExecution | None: ...

    async def list_executions_for_token(self, token_id: str) -> list[TransitionExecution]:
        """Seed 004's ``list_executions_for_token``: every agent execution, oldest first."""
        ...
