"""The audit trail of the api's decisions: who was allowed, denied or not authenticated, for
which action (``POST /runs``) and target; written by the routes, the use cases they call, the
WebSocket handshakes and GraphQL."""

from __future__ import annotations

import uuid
from typing import Literal

from starlette.requests import HTTPConnection

from cloudagents.domain.runs import AuditRecord
from cloudagents.runtime.auth import Principal
from cloudagents.runtime.deps import Deps

Outcome = Literal["allowed", "denied", "unauthenticated"]


def action_of(request: HTTPConnection) -> str:
    """The audited action: the request's method and path (``GET`` for a WebSocket handshake)."""
    method = request.scope.get("method", "GET")
    return f"{method} {request.url.path}"


async def audit(
    deps: Deps,
    action: str,
    principal: Principal | None,
    outcome: Outcome,
    status: int,
    target: str | None,
    reason: str,
) -> None:
    await deps.audit.record_audit(
        AuditRecord(
            id=f"{deps.clock().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}",
            action=action,
            outcome=outcome,
            status=status,
            principal=principal.id if principal else None,
            target=target,
            reason=reason,
        )
    )
