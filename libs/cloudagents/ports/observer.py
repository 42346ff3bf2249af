"""What an in-process run tells the outside world as it goes (persistence, events, logs)."""

from __future__ import annotations

from typing import Any

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.handoffs import HandoffTarget
from cloudagents.domain.messages import Message, ModelResponse, ToolCall
from cloudagents.domain.results import LoopResult, RunProgress
from cloudagents.engine.step import StepOutcome
from cloudagents.tools import ToolResult


class RunObserver:
    """No-op base: subclasses override what they record. ``DistributedAgent`` persists to GCP."""

    async def started(self, run_id: str, agent: AgentDefinition, messages: list[Message]) -> None:
        """The run exists; ``messages`` is its opening conversation."""

    async def chunk(self, run_id: str, text: str) -> None:
        """A streamed piece of the model's reply."""

    async def step(
        self,
        run_id: str,
        reply: ModelResponse,
        outcome: StepOutcome,
        progress: RunProgress,
        messages: list[Message],
    ) -> None:
        """One model call was made and decided on; ``messages`` is the transcript so far."""

    async def tool_called(self, run_id: str, call: ToolCall, result: ToolResult) -> None:
        """A tool ran (or was refused) and produced ``result``."""

    async def handoff(
        self, run_id: str, agent: AgentDefinition, target: HandoffTarget, messages: list[Message]
    ) -> dict[str, Any]:
        """The model asked for a handoff; returns the ``HANDOFF`` payload (e.g. the offer id)."""
        return {"handoff_target": target.model_dump(mode="json"), "offer_id": None}

    async def finished(self, run_id: str, result: LoopResult, messages: list[Message]) -> None:
        """The run ended with ``result``."""
