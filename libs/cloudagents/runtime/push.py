"""Pub/Sub push envelopes in, HTTP statuses out: the one place that maps outcomes to acks.

2xx acknowledges. A permanent error (bad payload, unknown run) is recorded in ``dead_letters``
with the original message and acknowledged, so it stops looping. Anything else is a 5xx: Pub/Sub
redelivers with the subscription's backoff and, past its attempts, routes to the dead-letter
topic.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from opentelemetry import context as otel_context
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from cloudagents.domain.base import newer_schema
from cloudagents.domain.errors import PermanentMessageError, TransientError
from cloudagents.domain.runs import AuditRecord, DeadLetter
from cloudagents.runtime.auth import AuthError, verify_push
from cloudagents.runtime.deps import Deps
from cloudagents.telemetry import context_from, tracer

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 1_000_000
MAX_KEPT_BYTES = 256_000
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class PushMessage:
    """A decoded push delivery."""

    subscription: str
    message_id: str
    data: bytes
    attributes: dict[str, str]
    delivery_attempt: int | None


def decode_envelope(body: bytes) -> PushMessage:
    """Parse a push request body; raises ``PermanentMessageError`` on anything malformed."""
    try:
        envelope = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PermanentMessageError(f"push body is not JSON: {exc}") from exc
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        raise PermanentMessageError("push body has no 'message' object")
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise PermanentMessageError(f"message data is not base64: {exc}") from exc
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise PermanentMessageError("message attributes are not an object")
    attempt = envelope.get("deliveryAttempt")
    return PushMessage(
        subscription=str(envelope.get("subscription", "")),
        message_id=str(message.get("messageId") or message.get("message_id") or ""),
        data=data,
        attributes={str(k): str(v) for k, v in attributes.items()},
        delivery_attempt=attempt if isinstance(attempt, int) else None,
    )


def parse_json_model(model: type[M], data: bytes) -> M:
    """Validate a message body as ``model``. Every failure is permanent except a body from a
    newer release (``schema_version`` past ours): that is retryable, so a rolling deploy never
    dead-letters live traffic."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise PermanentMessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentMessageError(f"message data is not valid UTF-8: {exc}") from exc
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        if newer_schema(exc):
            raise TransientError(
                f"{model.__name__} from a newer release: {exc.errors()[0]['msg']}"
            ) from exc
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise PermanentMessageError(f"invalid {model.__name__}: {problems}") from exc


async def dead_letter(
    deps: Deps, *, source: str, reason: str, message: PushMessage | None, raw: bytes
) -> str:
    """Record a message that can never be applied; the id is stable for the same message."""
    message_id = message.message_id if message else None
    digest = hashlib.sha256(raw).hexdigest()[:16]
    letter_id = f"{source.rsplit('/', 1)[-1] or 'push'}-{message_id or digest}"
    original = message.data if message else raw
    run_id = run_id_of(original)
    if len(original) > MAX_KEPT_BYTES:
        # A Firestore document holds at most 1 MiB: keep the head of an oversized message.
        reason = f"{reason} (kept the first {MAX_KEPT_BYTES} of {len(original)} bytes)"
        original = original[:MAX_KEPT_BYTES]
    data = base64.b64encode(original).decode()
    await deps.dead_letters.record_dead_letter(
        DeadLetter(
            id=letter_id,
            source=source,
            reason=reason,
            message_id=message_id,
            run_id=run_id,
            data=data,
            attributes=message.attributes if message else {},
        )
    )
    return letter_id


async def record_parked(deps: Deps, message: PushMessage) -> str:
    """A message Pub/Sub gave up on, pushed from a dead-letter topic by its sink subscription
    (``topology.dead_letter_sinks``): recorded in ``dead_letters`` under the subscription it was
    delivered from (so a replay goes back there) with the run it names, then acknowledged."""
    name = message.subscription.rsplit("/", 1)[-1]
    sink = deps.topology.sink(name)
    source = (
        sink.source_subscription
        if sink is not None
        else message.attributes.get("CloudPubSubDeadLetterSourceSubscription", name)
    )
    attempts = message.attributes.get("CloudPubSubDeadLetterSourceDeliveryCount")
    reason = (
        f"Pub/Sub gave up after {attempts} delivery attempts"
        if attempts
        else "Pub/Sub gave up: every delivery attempt failed"
    )
    attributes = {
        k: v for k, v in message.attributes.items() if not k.startswith("CloudPubSubDeadLetter")
    }
    parked = PushMessage(source, message.message_id, message.data, attributes, None)
    letter = await dead_letter(deps, source=source, reason=reason, message=parked, raw=message.data)
    log.warning(
        "recorded a message Pub/Sub dead-lettered",
        extra={"fields": {"source": source, "id": letter, "run_id": run_id_of(message.data)}},
    )
    return "recorded"


def run_id_of(data: bytes) -> str | None:
    """The run a message body names, if it is a JSON object with a ``run_id`` string."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    run_id = value.get("run_id") if isinstance(value, dict) else None
    return run_id if isinstance(run_id, str) and 0 < len(run_id) <= 128 else None


async def handle_task(
    request: Request, deps: Deps, apply: Callable[[bytes], Awaitable[str]]
) -> JSONResponse:
    """A Cloud Tasks HTTP callback: 2xx done, 4xx never retried (a body that can never be
    applied), 5xx retried by Cloud Tasks."""
    try:
        await verify_push(request, deps.settings)
    except AuthError as error:
        return JSONResponse({"status": "rejected", "reason": error.reason}, error.status)
    try:
        return JSONResponse({"status": await apply(await request.body())})
    except PermanentMessageError as error:
        return JSONResponse({"status": "rejected", "reason": str(error)}, status_code=400)
    except TransientError as error:
        return JSONResponse({"status": "retry", "reason": str(error)}, status_code=503)


async def handle_push(
    request: Request,
    deps: Deps,
    route: str,
    apply: Callable[[PushMessage], Awaitable[str]],
) -> JSONResponse:
    """Decode, trace, apply and map the outcome to an ack (2xx) or a redelivery (5xx)."""
    if request.method == "GET" and request.url.path == "/healthz":
        return JSONResponse({"status": "ok"})
    if request.method != "POST":
        return JSONResponse({"error": "push endpoints take POST"}, status_code=405)
    try:
        await verify_push(request, deps.settings)
    except AuthError as exc:
        await deps.audit.record_audit(
            AuditRecord(
                id=f"push-{uuid.uuid4().hex}",
                action=f"push {route}",
                outcome="unauthenticated" if exc.status == 401 else "denied",
                status=exc.status,
                reason=exc.reason,
            )
        )
        return JSONResponse({"error": exc.reason}, status_code=exc.status)
    body = await request.body()
    message: PushMessage | None = None
    try:
        message = decode_envelope(body)
    except PermanentMessageError as error:
        letter = await dead_letter(deps, source=route, reason=str(error), message=None, raw=body)
        log.warning(
            "dead-lettered push body", extra={"fields": {"route": route, "reason": str(error)}}
        )
        return JSONResponse({"status": "dead-lettered", "id": letter, "reason": str(error)})
    token = otel_context.attach(context_from(message.attributes))
    try:
        with tracer.start_as_current_span(
            f"pubsub {route}",
            attributes={
                "messaging.system": "gcp_pubsub",
                "messaging.message.id": message.message_id,
                "messaging.destination.subscription.name": message.subscription,
            },
        ):
            outcome = await apply(message)
        return JSONResponse({"status": outcome})
    except PermanentMessageError as error:
        source = message.subscription or route
        letter = await dead_letter(
            deps, source=source, reason=str(error), message=message, raw=body
        )
        log.warning(
            "dead-lettered message",
            extra={
                "fields": {"route": route, "message_id": message.message_id, "reason": str(error)}
            },
        )
        return JSONResponse({"status": "dead-lettered", "id": letter, "reason": str(error)})
    except Exception as error:  # transient or unknown: ask Pub/Sub to redeliver
        log.exception(
            "push handler failed; asking for redelivery",
            extra={"fields": {"route": route, "message_id": message.message_id}},
        )
        return JSONResponse({"status": "retry", "error": f"{type(error).__name__}: {error}"}, 503)
    finally:
        otel_context.detach(token)
