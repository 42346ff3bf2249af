"""Run events streamed to watchers (seed 004 ``AgentStreamEvent``), stored in order under a run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import Field, JsonValue, TypeAdapter

from cloudagents.domain.base import Persisted
from cloudagents.domain.runs import ToolCallRecord


class _Event(Persisted):
    run_id: str
    seq: int = Field(default=0, ge=0, description="the run step that produced the event")
    id: str = Field(default="", description="sortable id within the run: {seq:06d}-{phase}{n:04d}")
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))


class ContentChunk(_Event):
    type: Literal["content_chunk"] = "content_chunk"
    chunk: str


class ThinkingStatus(_Event):
    type: Literal["thinking"] = "thinking"
    status: str


class ToolCallEvent(_Event):
    type: Literal["tool_call"] = "tool_call"
    call_id: str
    tool_name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)


class ToolResultEvent(_Event):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    tool_name: str
    result: JsonValue = None
    is_error: bool = False


class HandoffEvent(_Event):
    type: Literal["handoff"] = "handoff"
    offer_id: str
    required_capabilities: list[str] = Field(default_factory=list)
    status: str = "offered"


class ApprovalRequested(_Event):
    """A tool call waits for a person (written with the step that made it)."""

    type: Literal["approval_requested"] = "approval_requested"
    approval_id: str
    call_id: str
    tool_name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)
    risk: str = "low"
    expires_at: datetime
    approvers: list[str] = Field(default_factory=list)


class Completed(_Event):
    type: Literal["completed"] = "completed"
    exit: str
    final_response: str = ""
    total_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Failed(_Event):
    type: Literal["failed"] = "failed"
    exit: str
    error: str


RunEvent = Annotated[
    ContentChunk
    | ThinkingStatus
    | ToolCallEvent
    | ToolResultEvent
    | HandoffEvent
    | ApprovalRequested
    | Completed
    | Failed,
    Field(discriminator="type"),
]
RUN_EVENT_ADAPTER: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)
TERMINAL_EVENT_TYPES = frozenset({"completed", "failed"})


def event_id(seq: int, phase: str, n: int) -> str:
    """Event ids sort in the order events happen: streamed chunks of a step (phase ``a``), then
    the step's committed events (``b``), then its tool results (``c``), then the next step."""
    return f"{seq:06d}-{phase}{n:04d}"


def tool_result_event(record: ToolCallRecord) -> ToolResultEvent:
    """The ``tool_result`` event of a saved (``done``) tool call: not written on its own but
    read from the tool-call document (run version 6), so saving the result is its event."""
    return ToolResultEvent(
        run_id=record.run_id,
        seq=record.seq,
        id=event_id(record.seq, "c", record.index),
        timestamp=record.finished_at or datetime.now(UTC),
        call_id=record.call.id,
        tool_name=record.call.name,
        result=record.result if record.result_uri is None else {"uri": record.result_uri},
        is_error=record.is_error,
    )
