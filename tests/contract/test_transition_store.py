"""``TransitionStore``: workflows round trip; a token moves only from the version it was read
at (of racing movers exactly one wins); history and ``list_executions_for_token``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloudagents.adapters.firestore.transitions import FirestoreTransitionStore
from cloudagents.adapters.memory.transitions import InMemoryTransitionStore
from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.transitions import (
    Firing,
    Token,
    TokenHistoryEntry,
    TransitionExecution,
)
from cloudagents.ports.transitions import TransitionStore
from cloudagents.runtime.transition_definitions import load_workflows
from tests.contract.conftest import new_id, race

pytestmark = pytest.mark.contract
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transitions" / "document_review.yaml"


@pytest.fixture
def transition_store(backend: str, request: pytest.FixtureRequest) -> TransitionStore:
    if backend == "memory":
        return InMemoryTransitionStore()
    return FirestoreTransitionStore(request.getfixturevalue("firestore_db"))


def a_token() -> Token:
    return Token(
        token_id=new_id("tok"),
        workflow_id="document-review",
        place="submitted",
        # Nested JSON, a list in a list and a key Firestore cannot hold as is.
        data={"content": "text", "nested": {"a": [1, [2, 3]]}, "__odd__": 1},
        metadata={"type": "report"},
    )


def execution(token: Token, attempt: int, at: datetime) -> TransitionExecution:
    return TransitionExecution(
        execution_id=f"{token.token_id}-a{attempt}",
        token_id=token.token_id,
        workflow_id=token.workflow_id,
        transition_id="ai_review",
        agent_id="content-reviewer",
        attempt=attempt,
        run_id=f"{token.token_id}-a{attempt}",
        input={"document_content": "text"},
        started_at=at,
    )


async def test_workflow_round_trips(transition_store: TransitionStore) -> None:
    [workflow] = load_workflows(EXAMPLE)
    workflow = workflow.model_copy(update={"id": new_id("wf")})
    await transition_store.put_workflow(workflow)
    assert await transition_store.get_workflow(workflow.id) == workflow
    assert workflow.id in [w.id for w in await transition_store.list_workflows()]
    assert await transition_store.get_workflow(new_id("missing")) is None


async def test_token_create_once_and_round_trip(transition_store: TransitionStore) -> None:
    token = a_token()
    assert await transition_store.create_token(token)
    assert not await transition_store.create_token(token.model_copy(update={"place": "x"}))
    assert await transition_store.get_token(token.token_id) == token


async def test_tokens_in_place_lists_the_workflows_tokens_in_that_place_only(
    transition_store: TransitionStore,
) -> None:
    """What a place agent added by a new definition is scheduled for: the workflow's tokens in
    the place now (a token moved out is not listed, nor one of another workflow or place)."""
    workflow_id = new_id("wf")
    here = [
        a_token().model_copy(update={"token_id": f"{workflow_id}-{n}", "workflow_id": workflow_id})
        for n in (2, 1, 3)
    ]
    elsewhere = here[0].model_copy(update={"token_id": f"{workflow_id}-other", "place": "done"})
    other_workflow = a_token()  # in the place, of another workflow
    for token in [*here, elsewhere, other_workflow]:
        assert await transition_store.create_token(token)
    found = await transition_store.tokens_in_place(workflow_id, "submitted")
    assert found == sorted(here, key=lambda t: t.token_id)
    assert [t.token_id for t in await transition_store.tokens_in_place(workflow_id, "done")] == [
        elsewhere.token_id
    ]
    # A token that moves out of the place is no longer listed there.
    moved = here[1].model_copy(update={"place": "done", "version": 2})
    assert await transition_store.update_token(moved, expected_version=1)
    assert [t.token_id for t in await transition_store.tokens_in_place(workflow_id, "done")] == [
        moved.token_id,
        elsewhere.token_id,
    ]
    assert len(await transition_store.tokens_in_place(workflow_id, "submitted")) == 2
    assert await transition_store.tokens_in_place(new_id("wf"), "submitted") == []


async def test_a_move_applies_only_at_the_expected_version(
    transition_store: TransitionStore,
) -> None:
    token = a_token()
    await transition_store.create_token(token)
    now = datetime.now(UTC)
    first = execution(token, 1, now)

    def moved(n: int) -> tuple[Token, TokenHistoryEntry]:
        after = token.model_copy(
            update={"place": f"p{n}", "version": 2, "history_count": 1, "data": {"n": n}}
        )
        entry = TokenHistoryEntry(
            token_id=token.token_id,
            n=1,
            transition_id="t",
            from_place="submitted",
            to_place=f"p{n}",
        )
        return after, entry

    async def mover(n: int) -> bool:
        after, entry = moved(n)
        return await transition_store.update_token(
            after, expected_version=1, history=entry, executions=[first]
        )

    results = await race([lambda n=n: mover(n) for n in range(4)])  # type: ignore[misc]
    assert sorted(results) == [False, False, False, True]
    winner = results.index(True)
    stored = await transition_store.get_token(token.token_id)
    assert stored is not None and stored.place == f"p{winner}" and stored.version == 2
    [entry] = await transition_store.history(token.token_id)
    assert entry.to_place == f"p{winner}"
    # A stale writer (version 1 again) changes nothing.
    assert not await mover(9)
    # Executions: listed per token, oldest first, updated in place.
    second = execution(token, 2, now + timedelta(seconds=1))
    done = first.model_copy(update={"status": "failed", "error": "rate_limit: x"})
    assert await transition_store.update_token(
        stored.model_copy(update={"version": 3}), expected_version=2, executions=[done, second]
    )
    listed = await transition_store.list_executions_for_token(token.token_id)
    assert [(e.attempt, e.status) for e in listed] == [(1, "failed"), (2, "running")]
    assert await transition_store.get_execution(second.execution_id) == second
    assert await transition_store.list_executions_for_token(new_id("other")) == []


async def test_a_waiting_retry_round_trips_and_its_start_is_claimed_once(
    transition_store: TransitionStore,
) -> None:
    """A retry waiting out its backoff (``firing.not_before``, execution ``scheduled``) is stored
    as is; of the task copies that claim its start at the same version, one wins."""
    token = a_token()
    await transition_store.create_token(token)
    now = datetime.now(UTC)
    second = execution(token, 2, now + timedelta(seconds=10)).model_copy(
        update={"status": "scheduled"}
    )
    firing = Firing(
        transition_id="ai_review",
        execution_id=second.execution_id,
        run_id=second.run_id,
        attempt=2,
        version=1,
        started_at=now,
        not_before=now + timedelta(seconds=10),
    )
    waiting = token.model_copy(update={"version": 2, "firing": firing})
    assert await transition_store.update_token(waiting, expected_version=1, executions=[second])
    assert await transition_store.get_token(token.token_id) == waiting
    assert await transition_store.get_execution(second.execution_id) == second
    started = second.model_copy(update={"status": "running"})
    claimed = waiting.model_copy(
        update={"version": 3, "firing": firing.model_copy(update={"not_before": None})}
    )

    async def claim() -> bool:
        return await transition_store.update_token(
            claimed, expected_version=2, executions=[started]
        )

    assert sorted(await race([claim, claim, claim])) == [False, False, True]
    stored = await transition_store.get_token(token.token_id)
    assert stored is not None and stored.firing is not None and stored.firing.not_before is None
    assert (await transition_store.get_execution(second.execution_id)) == started


async def test_a_value_firestore_cannot_hold_is_a_permanent_error(
    transition_store: TransitionStore, backend: str
) -> None:
    token = a_token().model_copy(update={"data": {"big": 2**70}})
    if backend == "memory":
        assert await transition_store.create_token(token)  # memory holds any JSON
        return
    with pytest.raises(PermanentMessageError, match="cannot be stored"):
        await transition_store.create_token(token)
