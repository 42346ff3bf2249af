"""Immutable function versions keyed by content hash, name aliases, and execution records."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ConfigDict, Field, JsonValue

from cloudagents.domain.base import Model, Persisted
from cloudagents.domain.messages import ToolSpec
from cloudagents.domain.policy import RiskLevel
from cloudagents.domain.runs import utcnow
from cloudagents.functions.config import FunctionConfig
from cloudagents.sandbox.results import ErrorKind, LimitName

EXECUTION_RETENTION_DAYS = 90
"""How long an execution record is kept (``ExecutionRecord.expire_at``, a Firestore TTL)."""
# The interpreter line the sandbox runs (Debian's /usr/bin/python3, python:3.11-slim's).
SANDBOX_PYTHON = "3.11"

ExitKind = Literal["ok", "invalid_arguments", "invalid_output", "not_found"] | ErrorKind


class FunctionVersion(Persisted):
    """One immutable version of a stored function. ``hash`` is the SHA-256 of everything else
    that decides what the call does or what the model is told: source, entry point, Python
    version, allowed imports, limits (the whole config) and schemas, plus the description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hash: str
    name: str
    code: str
    entry: str
    description: str
    input_schema: dict[str, JsonValue]
    output_schema: dict[str, JsonValue] | None
    config: FunctionConfig
    python_version: str = SANDBOX_PYTHON
    imports: list[str] = Field(default_factory=list)
    """Top-level modules the code imports (all on ``config.allowed_imports``)."""
    created_at: datetime = Field(default_factory=utcnow)

    @staticmethod
    def content_hash(
        *,
        code: str,
        entry: str,
        description: str,
        input_schema: dict[str, Any],
        output_schema: dict[str, Any] | None,
        config: FunctionConfig,
        python_version: str = SANDBOX_PYTHON,
    ) -> str:
        canonical = json.dumps(
            {
                "code": code,
                "entry": entry,
                "description": description,
                "input_schema": input_schema,
                "output_schema": output_schema,
                "config": config.model_dump(mode="json"),
                "python_version": python_version,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def tool_spec(self, *, risk_level: RiskLevel = "medium") -> ToolSpec:
        """How the model is told about this function: it is offered like any other tool.

        Medium risk by default: the code is the author's, not the platform's.
        """
        return ToolSpec(
            name=self.name,
            description=self.description,
            parameters=self.input_schema,
            risk_level=risk_level,
        )

    @property
    def ref(self) -> str:
        """``name@hash``: what a run pins so a redelivered run executes the same code."""
        return f"{self.name}@{self.hash}"


class FunctionAlias(Persisted):
    """A function name: a mutable pointer to its current version, with the history of versions."""

    name: str
    current: str
    history: list[str] = Field(default_factory=list)
    """Version hashes in the order they became current (the last is ``current``)."""
    updated_at: datetime = Field(default_factory=utcnow)


class ExecutionRecord(Persisted):
    """One execution of a stored function (seed 002's execution history)."""

    function: str
    version_hash: str
    exit_kind: ExitKind
    duration_ms: float
    output_bytes: int
    limits_hit: list[LimitName] = Field(default_factory=list)
    run_id: str | None = None
    tool_call_id: str | None = None
    agent: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    expire_at: datetime = Field(
        default_factory=lambda: utcnow() + timedelta(days=EXECUTION_RETENTION_DAYS),
        description="Firestore's TTL policy on function_executions deletes the record after this",
    )


class FunctionOutcome(Model):
    """What ``FunctionStore.run_function`` returns: the value, or a typed error for the model."""

    ok: bool
    value: JsonValue = None
    error_kind: ExitKind | None = None
    message: str = ""
    version_hash: str | None = None
    duration_ms: float = 0.0
    limits_hit: list[LimitName] = Field(default_factory=list)
