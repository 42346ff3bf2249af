"""Conversations: runs that remember. ``conversations/{id}`` holds the turns of the runs that
named it (``messages/{i:06d}``: each run's user message, then its final answer) and which run
holds it now; a run in a conversation starts from its last ``CONVERSATION_WINDOW`` messages.
One run at a time: a second run of a busy conversation is refused (the api: 409) or, from an
intent, redelivered until the first has finished (serialised)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from cloudagents.domain.base import Persisted
from cloudagents.domain.errors import TransientError
from cloudagents.domain.runs import utcnow

CONVERSATION_WINDOW = 20
# A claim whose run was never created (its creator died between claim and create) is stale
# after this long.
UNSTARTED_CLAIM_SECONDS = 120.0
CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"


class ConversationRecord(Persisted):
    """``conversations/{conversation_id}``."""

    conversation_id: str = Field(pattern=CONVERSATION_ID_PATTERN)
    agent_id: str | None = None
    message_count: int = Field(default=0, ge=0)
    active_run_id: str | None = Field(default=None, description="the run holding it, if any")
    runs: list[str] = Field(default_factory=list, description="its runs, oldest first (last 100)")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ConversationBusy(TransientError):
    """Another unfinished run holds the conversation."""

    def __init__(self, conversation_id: str, run_id: str) -> None:
        super().__init__(f"conversation {conversation_id!r} is busy with run {run_id!r}")
        self.conversation_id = conversation_id
        self.run_id = run_id


def holder_done(record: ConversationRecord, holder_finished: bool | None, now: datetime) -> bool:
    """Whether the conversation's holder has let go in effect: its run is finished, or it never
    started and the claim is old. ``holder_finished``: ``None`` when the run does not exist."""
    if holder_finished is None:
        return (now - record.updated_at).total_seconds() > UNSTARTED_CLAIM_SECONDS
    return holder_finished


def claimed(
    record: ConversationRecord | None,
    conversation_id: str,
    *,
    run_id: str,
    agent_id: str,
    holder_finished: bool,
    now: datetime,
) -> ConversationRecord | None:
    """The conversation after ``run_id`` claims it, ``None`` if it already holds it; raises
    ``ConversationBusy`` while an unfinished run holds it (``holder_finished``: the holder is
    finished or gone, its claim is stale). Both stores apply this rule."""
    if record is None:
        return ConversationRecord(
            conversation_id=conversation_id,
            agent_id=agent_id,
            message_count=1,
            active_run_id=run_id,
            runs=[run_id],
            created_at=now,
            updated_at=now,
        )
    if record.active_run_id == run_id or run_id in record.runs:
        return None  # a repeated claim (a redelivered intent) of the run's own
    if record.active_run_id is not None and not holder_finished:
        raise ConversationBusy(conversation_id, record.active_run_id)
    return record.model_copy(
        update={
            "message_count": record.message_count + 1,
            "active_run_id": run_id,
            "runs": [*record.runs, run_id][-100:],
            "updated_at": now,
        }
    )


def released(
    record: ConversationRecord, run_id: str, reply: bool, now: datetime
) -> ConversationRecord:
    """The conversation after its run finished (its answer appended if ``reply``)."""
    return record.model_copy(
        update={
            "message_count": record.message_count + (1 if reply else 0),
            "active_run_id": None if record.active_run_id == run_id else record.active_run_id,
            "updated_at": now,
        }
    )
