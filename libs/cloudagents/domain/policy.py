"""Budgets, guardrails and retry configuration (seed 000 ``Budget``, seed 004 retry config)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from cloudagents.domain.base import Model
from cloudagents.domain.errors import RETRYABLE_BY_DEFAULT, ModelErrorKind

RiskLevel = Literal["low", "medium", "high"]
RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


class Budget(Model):
    """Resource limits of an agent. ``None`` means unlimited.

    ``max_tools_per_minute`` and ``max_daily_cost`` are shared by every run of the agent on every
    instance; ``max_tokens_per_run`` and ``max_iterations`` apply to one run.
    """

    max_tokens_per_run: int | None = Field(default=None, gt=0)
    max_tools_per_minute: int | None = Field(default=None, gt=0)
    max_daily_cost: float | None = Field(default=None, ge=0)
    max_iterations: int = Field(default=10, gt=0, le=10_000)


class GuardrailConfig(Model):
    """Checks run on input before each model call, before each tool call, and on the final output.

    ``blocked_patterns`` are case-insensitive regular expressions (a plain word works); a tool whose
    risk is above ``risk_threshold`` is blocked.
    """

    enabled: bool = True
    risk_threshold: RiskLevel = "medium"
    blocked_patterns: list[str] = Field(default_factory=list)

    @field_validator("blocked_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"blocked pattern {pattern!r} is not a valid regex: {exc}"
                ) from exc
        return patterns


class RetryConfig(Model):
    """How model calls are retried (seed 004 ``AgentRetryConfig``)."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff_seconds: float = Field(default=1.0, ge=0, le=600)
    backoff_multiplier: float = Field(default=2.0, ge=1, le=10)
    retry_on_errors: list[ModelErrorKind] = Field(
        default_factory=lambda: list(RETRYABLE_BY_DEFAULT)
    )
