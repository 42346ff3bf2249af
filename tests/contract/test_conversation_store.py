"""``RunStore``'s conversations on the fake and on Firestore: a claim appends the run's message;
a second unfinished run is refused; the holder's finishing commit appends its answer and lets go;
racing claims have one winner."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloudagents.domain.conversations import ConversationBusy
from cloudagents.domain.messages import Message
from cloudagents.domain.results import LoopExit, RunProgress
from cloudagents.domain.runs import RunRecord, RunStatus
from cloudagents.domain.steps import StepCommit
from cloudagents.ports.stores import RunStore
from tests.contract.conftest import new_id, race

pytestmark = pytest.mark.contract


def user(text: str) -> Message:
    return Message(role="user", content=text)


async def a_run(store: RunStore, conversation: str) -> RunRecord:
    run = RunRecord(
        run_id=new_id("run"),
        agent_id="chat",
        conversation_id=conversation,
        created_at=datetime.now(UTC),
    )
    assert await store.create_run(run, [user("hi")])
    return run


async def finish(store: RunStore, run: RunRecord, answer: str) -> None:
    progress = RunProgress(iterations=1)
    commit = StepCommit(
        run_id=run.run_id,
        expected_seq=0,
        status=RunStatus.FINISHED,
        progress=progress,
        result=progress.result(LoopExit.SATISFIED, {"answer": answer}),
        conversation_reply=Message(role="assistant", content=answer),
    )
    assert await store.commit_step(commit) is not None


async def test_claim_append_refuse_and_let_go(run_store: RunStore) -> None:
    conversation = new_id("conv")
    first = await a_run(run_store, conversation)
    claimed = await run_store.claim_conversation(
        conversation, run_id=first.run_id, agent_id="chat", message=user("one")
    )
    assert claimed.active_run_id == first.run_id and claimed.message_count == 1
    again = await run_store.claim_conversation(
        conversation, run_id=first.run_id, agent_id="chat", message=user("one")
    )
    assert again.message_count == 1  # the same run's repeat changes nothing
    second = await a_run(run_store, conversation)
    with pytest.raises(ConversationBusy, match=first.run_id):
        await run_store.claim_conversation(
            conversation, run_id=second.run_id, agent_id="chat", message=user("two")
        )
    await finish(run_store, first, "done one")
    after = await run_store.get_conversation(conversation)
    assert after is not None and after.active_run_id is None and after.message_count == 2
    await run_store.claim_conversation(
        conversation, run_id=second.run_id, agent_id="chat", message=user("two")
    )
    messages = await run_store.conversation_messages(conversation, last=10)
    assert [m.content for m in messages] == ["one", "done one", "two"]
    assert [m.content for m in await run_store.conversation_messages(conversation, last=2)] == [
        "done one",
        "two",
    ]


async def test_racing_claims_have_one_winner(run_store: RunStore) -> None:
    conversation = new_id("conv")
    runs = [await a_run(run_store, conversation) for _ in range(3)]

    async def claim(run: RunRecord) -> str:
        try:
            await run_store.claim_conversation(
                conversation, run_id=run.run_id, agent_id="chat", message=user(run.run_id)
            )
        except ConversationBusy:
            return "busy"
        return "won"

    outcomes = await race([lambda run=run: claim(run) for run in runs])  # type: ignore[misc]
    assert sorted(outcomes) == ["busy", "busy", "won"]
    stored = await run_store.get_conversation(conversation)
    assert stored is not None and stored.message_count == 1


async def test_conversations_listed_per_agent(run_store: RunStore) -> None:
    agent, other = new_id("agent"), new_id("agent")
    ids = []
    for who in (agent, agent, other):
        conversation = new_id("conv")
        run = await a_run(run_store, conversation)
        await run_store.claim_conversation(
            conversation, run_id=run.run_id, agent_id=who, message=user("hi")
        )
        ids.append(conversation)
    listed = await run_store.list_conversations_for_agent(agent)
    assert sorted(c.conversation_id for c in listed) == sorted(ids[:2])
    assert all(c.agent_id == agent for c in listed)
    assert [c.conversation_id for c in await run_store.list_conversations_for_agent(other)] == [
        ids[2]
    ]
    assert len(await run_store.list_conversations_for_agent(agent, limit=1)) == 1
    assert await run_store.list_conversations_for_agent(new_id("nobody")) == []
