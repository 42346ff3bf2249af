"""How a run ends: ``LoopExit`` and ``LoopResult`` (seed 000)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, JsonValue

from cloudagents.domain.base import Model


class LoopExit(StrEnum):
    """Why a run stopped."""

    SATISFIED = "SATISFIED"
    MAX_ITERS = "MAX_ITERS"
    ERROR = "ERROR"
    GUARDRAIL_BLOCK = "GUARDRAIL_BLOCK"
    HANDOFF = "HANDOFF"
    CANCELLED = "CANCELLED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    APPROVAL_TIMEOUT = "APPROVAL_TIMEOUT"  # an approval expired under ``on_timeout: halt``


class LoopResult(Model):
    """The outcome of a run, stored on the finished run's document."""

    exit: LoopExit
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    iterations: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    tool_calls: int = Field(default=0, ge=0)
    errors: list[str] = Field(default_factory=list)
    cost_usd: float = Field(default=0.0, ge=0)


class RunProgress(Model):
    """Counters of a run, carried from step to step (and stored on the run document)."""

    iterations: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    tool_calls: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    errors: list[str] = Field(default_factory=list)

    def result(self, exit: LoopExit, payload: dict[str, Any] | None = None) -> LoopResult:
        return LoopResult(
            exit=exit,
            payload=payload or {},
            iterations=self.iterations,
            total_tokens=self.total_tokens,
            tool_calls=self.tool_calls,
            errors=list(self.errors),
            cost_usd=round(self.cost_usd, 8),
        )

    def with_reason(self, exit: LoopExit, reason: str) -> RunProgress:
        """These counters with ``reason`` among the errors when ``exit`` is a failure.

        Every exit but ``SATISFIED`` and ``HANDOFF`` is one (seed 000: "check ``result.errors``
        for diagnostics"); a handoff is the run passing its work on, not an error. A reason
        already listed is not added again.
        """
        if exit in (LoopExit.SATISFIED, LoopExit.HANDOFF) or reason in self.errors:
            return self
        return self.model_copy(update={"errors": [*self.errors, reason]})

    def stopped(self, exit: LoopExit, reason: str) -> LoopResult:
        """The result of a run that stopped with ``exit`` for ``reason``: the reason is in
        ``payload["reason"]`` and, unless the exit is a handoff, in ``errors``."""
        return self.with_reason(exit, reason).result(exit, {"reason": reason})
