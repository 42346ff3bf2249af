"""Human approval of risky tool calls: the policy an agent declares, and one document per gated
call (``approvals/{run_id}:{approval_id}``, the approval id being the tool call's
``{seq:06d}-{index:03d}``).

A call is gated when its tool's risk reaches the policy's ``threshold``, when the policy's
``tools`` rule for it says so (``always``, or a predicate registered with
``cloudagents.tools.approval_predicate`` over the arguments), or when the tool itself was made
with ``needs_approval``. A gated call waits as a pending item of kind ``approval`` while the
other calls of its step run; a decision or the expiry settles it (``engine/approvals.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from cloudagents.domain.base import Model, Persisted
from cloudagents.domain.policy import RiskLevel
from cloudagents.domain.runs import utcnow

ApprovalStatus = Literal["pending", "approved", "rejected", "expired"]
OnTimeout = Literal["deny", "halt"]
Verdict = Literal["approve", "reject"]
RememberScope = Literal["run", "agent"]
ANY_PRINCIPAL = "*"
ALWAYS = "always"
NEVER = "never"


class ApprovalPolicy(Model):
    """``AgentDefinition.approval``: which calls need a person, who may decide, for how long.

    ``threshold``: calls of tools at this risk or above need approval (``None``: only the tools
    named in ``tools`` or made with ``needs_approval``). ``tools``: per tool name, ``always``,
    ``never`` or the name of a registered predicate over the call's arguments. ``approvers``:
    principals who may decide (``*``: anyone allowed to read the run). ``quorum``: how many
    distinct approvers must approve (one rejection rejects). ``self_approval``: whether the
    principal who started the run may decide its calls. ``remember_seconds``: how long a
    ``remember: agent`` grant lasts."""

    threshold: RiskLevel | None = "high"
    timeout_seconds: float = Field(default=900.0, gt=0, le=7 * 24 * 3600)
    on_timeout: OnTimeout = "deny"
    approvers: list[str] = Field(default_factory=lambda: [ANY_PRINCIPAL], min_length=1)
    quorum: int = Field(default=1, ge=1, le=10)
    tools: dict[str, str] = Field(default_factory=dict)
    self_approval: bool = True
    remember_seconds: float = Field(default=24 * 3600.0, gt=0, le=90 * 24 * 3600)

    @field_validator("approvers")
    @classmethod
    def _approvers_named(cls, approvers: list[str]) -> list[str]:
        for principal in approvers:
            if not principal.strip() or len(principal) > 200:
                raise ValueError(f"approver {principal!r} is not a principal name")
        if len(set(approvers)) != len(approvers):
            raise ValueError("approvers lists a principal twice")
        return approvers

    @model_validator(mode="after")
    def _quorum_reachable(self) -> ApprovalPolicy:
        if ANY_PRINCIPAL not in self.approvers and self.quorum > len(self.approvers):
            raise ValueError(
                f"quorum {self.quorum} can never be reached by {len(self.approvers)} approver(s)"
            )
        return self

    def allows(self, principal: str | None) -> bool:
        return principal is not None and (
            ANY_PRINCIPAL in self.approvers or principal in self.approvers
        )


class ApprovalDecision(Model):
    """One principal's decision on one approval."""

    principal: str
    verdict: Verdict
    reason: str = Field(default="", max_length=2000)
    arguments: dict[str, JsonValue] | None = Field(
        default=None, description="edited arguments (approve only), checked against the schema"
    )
    remember: RememberScope | None = Field(
        default=None, description="approve later calls of the tool in this run or agent too"
    )
    at: datetime = Field(default_factory=utcnow)


class ApprovalRecord(Persisted):
    """``approvals/{run_id}:{approval_id}``: one gated tool call and what became of it."""

    CURRENT_SCHEMA_VERSION: ClassVar[int] = 1

    run_id: str
    approval_id: str = Field(description="the tool call's id within the run: {seq:06d}-{index:03d}")
    agent_id: str
    seq: int = Field(ge=0)
    index: int = Field(ge=0)
    tool: str
    call_id: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)
    risk: RiskLevel = "low"
    reason_required: str = Field(default="", description="why the call needs approval")
    status: ApprovalStatus = "pending"
    requested_at: datetime
    expires_at: datetime
    on_timeout: OnTimeout = "deny"
    approvers: list[str] = Field(default_factory=lambda: [ANY_PRINCIPAL])
    quorum: int = Field(default=1, ge=1)
    self_approval: bool = True
    remember_seconds: float = Field(default=24 * 3600.0, gt=0)
    started_by: str | None = Field(default=None, description="the principal who started the run")
    decisions: list[ApprovalDecision] = Field(default_factory=list)
    edited_arguments: dict[str, JsonValue] | None = None
    decided_by: list[str] = Field(default_factory=list)
    decision_reason: str = ""
    decided_at: datetime | None = None
    remember: RememberScope | None = None

    @property
    def doc_id(self) -> str:
        return approval_doc_id(self.run_id, self.approval_id)

    @property
    def final(self) -> bool:
        return self.status != "pending"


class ApprovalGrant(Persisted):
    """``approval_grants/{scope}:{key}:{tool}``: a remembered approval. ``run``: later calls of
    the tool in that run are not gated; ``agent``: in every run of that agent until
    ``expires_at``."""

    scope: RememberScope
    key: str = Field(description="the run id or the agent id")
    tool: str
    granted_by: list[str]
    approval: str = Field(description="the approval document that granted it")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime

    @property
    def doc_id(self) -> str:
        return grant_doc_id(self.scope, self.key, self.tool)


def approval_doc_id(run_id: str, approval_id: str) -> str:
    return f"{run_id}:{approval_id}"


def grant_doc_id(scope: RememberScope, key: str, tool: str) -> str:
    return f"{scope}:{key}:{tool}"


def grant_doc_ids(run_id: str, agent_id: str, tools: list[str]) -> list[str]:
    """The grants that could cover calls of ``tools`` in this run: the run's, then the agent's."""
    return [grant_doc_id("run", run_id, t) for t in tools] + [
        grant_doc_id("agent", agent_id, t) for t in tools
    ]
