"""Seed 004's workflows in Firestore: ``transition_workflows/{id}``, ``tokens/{id}`` with
``tokens/{id}/history/{n:06d}``, and ``transition_executions/{id}``.

A token moves by a guarded batch (``ops.guarded``): the token document is written only if it is
unchanged since it was read and still at the expected ``version``, and its history entry is
created (never overwritten), so two deliveries of one move cannot both apply it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from cloudagents.adapters.firestore.ops import (
    Guarded,
    contention_exhausted,
    counted_get,
    counted_stream,
    from_doc,
    guarded,
    to_doc,
    written,
)
from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.transitions import (
    Token,
    TokenHistoryEntry,
    TransitionExecution,
    WorkflowDefinition,
)

WORKFLOWS = "transition_workflows"
TOKENS = "tokens"
EXECUTIONS = "transition_executions"


@contextlib.contextmanager
def _storable(what: str) -> Iterator[None]:
    """A value Firestore cannot hold (an integer past 64 bits, maps nested too deep) is a
    ``PermanentMessageError`` (400 from the api, dead-lettered from a push), not a crash."""
    try:
        yield
    except gexc.InvalidArgument as exc:
        raise PermanentMessageError(f"{what} cannot be stored: {exc}") from exc
    except (ValueError, OverflowError) as exc:
        if contention_exhausted(exc):
            raise
        raise PermanentMessageError(f"{what} cannot be stored: {exc}") from exc


class FirestoreTransitionStore:
    """``TransitionStore`` on Firestore."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.client = client
        self.workflows = client.collection(WORKFLOWS)
        self.tokens = client.collection(TOKENS)
        self.executions = client.collection(EXECUTIONS)

    async def put_workflow(self, workflow: WorkflowDefinition) -> None:
        ref = self.workflows.document(workflow.id)
        with _storable("the workflow"):
            await written(ref).set(to_doc(workflow.model_dump(mode="json")))

    async def get_workflow(self, workflow_id: str) -> WorkflowDefinition | None:
        snap = await counted_get(self.workflows.document(workflow_id))
        return WorkflowDefinition.model_validate(from_doc(snap.to_dict())) if snap.exists else None

    async def list_workflows(self) -> list[WorkflowDefinition]:
        found = [
            WorkflowDefinition.model_validate(from_doc(d.to_dict()))
            async for d in counted_stream(self.workflows)
        ]
        return sorted(found, key=lambda w: w.id)

    async def create_token(self, token: Token) -> bool:
        try:
            with _storable("the token"):
                await written(self.tokens.document(token.token_id)).create(
                    to_doc(token.model_dump(mode="json"))
                )
        except gexc.AlreadyExists:
            return False
        return True

    async def get_token(self, token_id: str) -> Token | None:
        snap = await counted_get(self.tokens.document(token_id))
        return Token.model_validate(from_doc(snap.to_dict())) if snap.exists else None

    async def tokens_in_place(self, workflow_id: str, place: str) -> list[Token]:
        # Two equality filters: served by merging the single-field indexes (no composite
        # index); one query, billed a read per token found (at least one). Ordered here.
        query = self.tokens.where(
            filter=firestore.FieldFilter("workflow_id", "==", workflow_id)
        ).where(filter=firestore.FieldFilter("place", "==", place))
        found = [Token.model_validate(from_doc(d.to_dict())) async for d in counted_stream(query)]
        return sorted(found, key=lambda t: t.token_id)

    async def update_token(
        self,
        token: Token,
        *,
        expected_version: int,
        history: TokenHistoryEntry | None = None,
        executions: list[TransitionExecution] | None = None,
    ) -> bool:
        ref = self.tokens.document(token.token_id)

        async def attempt(writes: Guarded) -> bool:
            snap = await counted_get(ref)
            if not snap.exists or (snap.to_dict() or {}).get("version") != expected_version:
                return False
            writes.update_if_unchanged(ref, to_doc(token.model_dump(mode="json")), snap)
            if history is not None:
                entry = ref.collection("history").document(f"{history.n:06d}")
                writes.create(entry, to_doc(history.model_dump(mode="json")))
            for execution in executions or []:
                writes.set(
                    self.executions.document(execution.execution_id),
                    to_doc(execution.model_dump(mode="json")),
                )
            return True

        with _storable("the token"):
            moved: bool = await guarded(self.client, attempt)
        return moved

    async def history(self, token_id: str) -> list[TokenHistoryEntry]:
        query: Any = self.tokens.document(token_id).collection("history")
        return [
            TokenHistoryEntry.model_validate(from_doc(d.to_dict()))
            async for d in counted_stream(query.order_by("n"))
        ]

    async def get_execution(self, execution_id: str) -> TransitionExecution | None:
        snap = await counted_get(self.executions.document(execution_id))
        if not snap.exists:
            return None
        return TransitionExecution.model_validate(from_doc(snap.to_dict()))

    async def list_executions_for_token(self, token_id: str) -> list[TransitionExecution]:
        # One equality filter (no composite index); ordered here.
        query = self.executions.where(filter=firestore.FieldFilter("token_id", "==", token_id))
        found = [
            TransitionExecution.model_validate(from_doc(d.to_dict()))
            async for d in counted_stream(query)
        ]
        return sorted(found, key=lambda e: (e.started_at, e.execution_id))
