"""``StepCommit``: everything one step of a run writes, as the engine plans it
(``engine/plan.py``) and a run store applies it (``RunStore.commit_step``)."""

from __future__ import annotations

from pydantic import Field

from cloudagents.domain.approvals import ApprovalRecord
from cloudagents.domain.base import Model
from cloudagents.domain.events import RunEvent
from cloudagents.domain.handoffs import HandoffOffer
from cloudagents.domain.messages import Message
from cloudagents.domain.results import LoopResult, RunProgress
from cloudagents.domain.runs import (
    Interaction,
    OutboxMessage,
    PendingItem,
    RunRecord,
    RunStatus,
    ToolCallRecord,
    utcnow,
)


class StepCommit(Model):
    """Everything one step changes, applied atomically if the run is still at ``expected_seq``."""

    run_id: str
    expected_seq: int
    new_messages: list[Message] = Field(default_factory=list)
    status: RunStatus
    progress: RunProgress
    pending: list[PendingItem] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    result: LoopResult | None = None
    outbox: list[OutboxMessage] = Field(default_factory=list)
    interaction: Interaction | None = None
    events: list[RunEvent] = Field(default_factory=list)
    handoff_offer: HandoffOffer | None = None
    conversation_reply: Message | None = Field(
        default=None, description="a finishing run's answer, appended to its conversation"
    )
    approvals: list[ApprovalRecord] = Field(
        default_factory=list, description="the approval documents of the step's gated calls"
    )
    applied_model_call: str | None = Field(
        default=None, description="the model call whose reply this step applies"
    )

    def applied_to(self, run: RunRecord) -> RunRecord:
        """The run document after this commit (validated: a bad commit raises, writes nothing)."""
        return RunRecord.model_validate(
            {
                **run.model_dump(),
                "seq": run.seq + 1,
                "status": self.status,
                "progress": self.progress,
                "message_count": run.message_count + len(self.new_messages),
                "pending": list(self.pending),
                "outbox": list(self.outbox),
                "result": self.result,
                "handoff_offer_id": (
                    self.handoff_offer.offer_id if self.handoff_offer else run.handoff_offer_id
                ),
                # A step that offers a handoff opens it; the broker moves it on from there.
                "handoff_status": "open" if self.handoff_offer else run.handoff_status,
                "updated_at": utcnow(),
            }
        )
