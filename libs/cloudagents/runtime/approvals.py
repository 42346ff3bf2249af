"""Deciding and expiring approvals: what the api (``POST /runs/{id}/approvals/{approval_id}``),
the CLI, the wake-ups (``/tasks/wake`` with ``approval``) and the in-process approval callback
all call. The rules are ``engine/approvals.py``; each decision is one guarded write of the
approval, its tool call and its run (``RunStore.change_approval``).

A decision that dispatches the call first schedules a wake-up for it (``item``) a little
later, then commits, then publishes the tool message: if the process dies between the commit
and the publish, the wake-up dispatches the approved call, and the tool invoker's claim keeps
it to one execution however many dispatches arrive.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Literal

from pydantic import JsonValue

from cloudagents.domain.approvals import ApprovalDecision, ApprovalRecord, RememberScope
from cloudagents.domain.runs import AuditRecord, WakeUp
from cloudagents.engine import approvals
from cloudagents.engine.approvals import ApprovalChange, Refused
from cloudagents.engine.step import schema_problem
from cloudagents.faults import crash_point
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.executor import RunExecutor

log = logging.getLogger(__name__)


class ApprovalError(Exception):
    """A decision that cannot be applied: ``status`` is its HTTP answer."""

    def __init__(self, status: int, message: str, approval: ApprovalRecord | None = None):
        super().__init__(message)
        self.status = status
        self.approval = approval


class Approvals:
    """Decisions and expiries of approvals, over ``deps``."""

    def __init__(self, deps: Deps, executor: RunExecutor | None = None) -> None:
        self.deps = deps
        self.executor = executor or RunExecutor(deps)

    async def decide(
        self,
        run_id: str,
        approval_id: str,
        *,
        principal: str,
        verdict: Literal["approve", "reject"],
        reason: str = "",
        arguments: dict[str, JsonValue] | None = None,
        remember: RememberScope | None = None,
    ) -> ApprovalRecord:
        """Apply one principal's decision; raises ``ApprovalError`` (404, 403, 409, 422)."""
        current = await self.deps.runs.get_approval(run_id, approval_id)
        if current is None:
            raise ApprovalError(404, f"run {run_id!r} has no approval {approval_id!r}")
        if arguments is not None:
            if verdict != "approve":
                raise ApprovalError(422, "edited arguments come with approve, not reject")
            tool = self.deps.tools.get(current.tool)
            if tool is not None and (problem := schema_problem(tool.parameters, arguments)):
                raise ApprovalError(422, f"edited arguments for {current.tool}: {problem}")
        decision = ApprovalDecision(
            principal=principal,
            verdict=verdict,
            reason=reason,
            arguments=arguments,
            remember=remember,
            at=self.deps.clock(),
        )
        if verdict == "approve":
            # Before the commit: should this process die before it publishes the tool message,
            # this wake-up dispatches the approved call (it does nothing for a call not approved).
            await self.deps.schedule_wake(
                WakeUp(
                    run_id=run_id,
                    seq=current.seq + 1,
                    item=approval_id,
                    at=self.deps.clock() + timedelta(seconds=self.deps.settings.wake_seconds),
                )
            )
        change = await self._apply(run_id, approval_id, decision)
        what = "edited and approved" if arguments is not None else f"{verdict}d"
        if change.refused is not None:
            if change.written and change.approval.status == "expired":
                await self._audit(change.approval, None, "allowed", None, "expired")
            await self._audit(change.approval, principal, "denied", change.refused, what)
            raise ApprovalError(change.refused.status, change.refused.reason, change.approval)
        await self._audit(change.approval, principal, "allowed", None, what)
        return change.approval

    async def expire(self, run_id: str, approval_id: str) -> str:
        """The expiry task of an approval: expire it if still undecided at ``expires_at``."""
        change = await self._apply(run_id, approval_id, "expire")
        if change.refused is not None:
            return "decided" if change.approval.final else "not-yet"
        await self._audit(change.approval, None, "allowed", None, "expired")
        return "halted" if change.halt else "expired"

    async def _apply(
        self, run_id: str, approval_id: str, action: approvals.Action
    ) -> ApprovalChange:
        now = self.deps.clock()
        change = await self.deps.runs.change_approval(
            run_id,
            approval_id,
            lambda approval, run, call: approvals.change(approval, run, call, action, now),
        )
        if change is None:
            raise ApprovalError(404, f"run {run_id!r} has no approval {approval_id!r}")
        crash_point("approvals.after_decide")
        await self.deps.publish(change.publish)
        if change.approval.status == "expired" and change.approval.on_timeout == "halt":
            await self._halt(change.approval)
        return change

    async def _halt(self, approval: ApprovalRecord) -> None:
        """End the run ``APPROVAL_TIMEOUT`` if it still waits at the approval's step (a repeat
        of the expiry, after a crash here, finds it so and ends it then)."""
        run = await self.deps.runs.get_run(approval.run_id)
        if run is None or run.finished or run.seq != approval.seq + 1:
            return
        await self.executor.stop(run, approvals.halt_stop(approval))

    async def _audit(
        self,
        approval: ApprovalRecord,
        principal: str | None,
        outcome: Literal["allowed", "denied"],
        refused: Refused | None,
        what: str,
    ) -> None:
        detail = f"approval {approval.approval_id} of {approval.tool}: {what}"
        if refused is not None:
            detail += f" refused ({refused.reason})"
        elif approval.status != "pending":
            detail += f" -> {approval.status}"
        await self.deps.audit.record_audit(
            AuditRecord(
                id=f"{self.deps.clock().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}",
                action=f"approval {what}",
                outcome=outcome,
                status=refused.status if refused else 200,
                principal=principal,
                target=approval.run_id,
                reason=detail,
            )
        )
