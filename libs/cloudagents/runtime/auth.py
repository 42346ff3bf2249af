"""Who is calling, and may they: the api's callers and the push endpoints' senders.

api: with ``CLOUDAGENTS_API_TOKENS`` (``principal=token`` pairs, comma separated) a bearer token
names the caller; on Cloud Run without tokens, Cloud Run's IAM has already checked the caller's
Google identity token, and the principal is the token's verified e-mail. An agent's
``allowed_callers`` (``*``, or principals such as ``alice`` or ``user:alice@example.com``) say
who may start its runs (seed 004's execution permissions).

Push and task endpoints: production verifies the OIDC token Pub/Sub and Cloud Tasks attach.
``CLOUDAGENTS_PUSH_AUTH=off`` turns that off, and is honoured only on the emulators (which send
no token) or the in-memory backend.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from cloudagents.domain.agents import AgentDefinition
from cloudagents.settings import Settings


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    id: str
    via: str


class AuthError(Exception):
    """401 (who are you?) or 403 (not you)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_tokens(entries: tuple[str, ...]) -> dict[str, str]:
    """``{token: principal}`` from ``principal=token`` entries (a bare token is ``token-N``)."""
    tokens: dict[str, str] = {}
    for n, entry in enumerate(entries, start=1):
        principal, sep, token = entry.partition("=")
        if not sep:
            principal, token = f"token-{n}", entry
        if len(token) < 16:
            raise ValueError(f"api token for {principal!r} is shorter than 16 characters")
        tokens[token] = principal
    return tokens


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _verify_google_token(token: str, audience: str | None) -> dict[str, Any]:
    from google.auth.transport import requests as google_requests
    from google.oauth2 import id_token

    claims: dict[str, Any] = id_token.verify_oauth2_token(  # type: ignore[no-untyped-call]
        token, google_requests.Request(), audience=audience
    )
    return claims


# Set by the run viewer (``/ui``) for the streams a browser opens without headers.
TOKEN_COOKIE = "cloudagents_token"


async def authenticate(
    request: Request, settings: Settings, *, query_token: bool = False
) -> Principal:
    """The api caller, or ``AuthError(401)``. With ``query_token`` (only the SSE stream routes:
    a browser's ``EventSource`` cannot send headers) ``?token=``, or else the ``cloudagents_token``
    cookie the run viewer sets, counts as the bearer token when there is no ``Authorization``
    header; it names the same principals and is never logged. The cookie is honoured on those
    read-only GET routes alone (and on WebSockets from the api's own origin,
    ``streaming.as_http_request``), so a page on another site cannot act with it (no CSRF)."""
    token = bearer(request)
    if token is None and query_token:
        token = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or None
    if settings.api_tokens:
        known = parse_tokens(settings.api_tokens)
        if token is not None:
            for candidate, principal in known.items():
                # Bytes: compare_digest refuses str with non-ASCII characters (a 500 otherwise).
                if secrets.compare_digest(token.encode(), candidate.encode()):
                    return Principal(principal, "token")
        raise AuthError(401, "missing or invalid bearer token")
    if os.environ.get("K_SERVICE"):
        if token is None:
            raise AuthError(401, "missing identity token")
        try:
            claims = await asyncio.to_thread(_verify_google_token, token, settings.api_audience)
        except ValueError as exc:
            raise AuthError(401, f"invalid identity token: {exc}") from exc
        email = str(claims.get("email", ""))
        kind = "serviceAccount" if email.endswith("gserviceaccount.com") else "user"
        return Principal(f"{kind}:{email}", "google")
    raise AuthError(401, "authentication is not configured: set CLOUDAGENTS_API_TOKENS")


def may_start(principal: Principal, agent: AgentDefinition) -> bool:
    allowed = agent.allowed_callers
    return "*" in allowed or principal.id in allowed


def push_auth_disabled(settings: Settings) -> bool:
    """Only the emulators (which send no OIDC token) and the memory backend may turn it off."""
    return settings.push_auth == "off" and (settings.on_emulators or settings.backend == "memory")


async def verify_push(request: Request, settings: Settings) -> None:
    """Check the OIDC token of a Pub/Sub push or Cloud Tasks call; ``AuthError`` if wrong."""
    if push_auth_disabled(settings):
        return
    token = bearer(request)
    if token is None:
        raise AuthError(401, "push request without an OIDC token")
    audience = settings.push_audience or str(request.base_url).rstrip("/")
    try:
        claims = await asyncio.to_thread(_verify_google_token, token, audience)
    except ValueError as exc:
        raise AuthError(401, f"invalid push token: {exc}") from exc
    senders = settings.push_service_accounts
    if senders and claims.get("email") not in senders:
        raise AuthError(403, f"push token from {claims.get('email')!r}, not an allowed sender")
