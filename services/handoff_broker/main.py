"""handoff_broker: push endpoint for ``{ws}-handoff`` and the Cloud Tasks expiry callback."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudagents.bootstrap import get_deps
from cloudagents.domain.errors import PermanentMessageError, TransientError
from cloudagents.domain.handoffs import OfferMessage
from cloudagents.runtime.auth import AuthError, verify_push
from cloudagents.runtime.broker import HandoffBroker
from cloudagents.runtime.push import PushMessage, handle_push, parse_json_model


@functions_framework.aio.http
async def handoff_broker(request: Request) -> Response:
    deps = await get_deps("handoff_broker")
    broker = HandoffBroker(deps)
    if request.url.path == deps.topology.queues[0].path and request.method == "POST":
        try:
            await verify_push(request, deps.settings)
        except AuthError as error:
            return JSONResponse({"status": "rejected", "reason": error.reason}, error.status)
        try:
            offer = parse_json_model(OfferMessage, await request.body())
            return JSONResponse({"status": await broker.handle_expiry(offer.offer_id)})
        except PermanentMessageError as error:  # a 4xx stops Cloud Tasks retrying it
            return JSONResponse({"status": "rejected", "reason": str(error)}, status_code=400)
        except TransientError as error:  # fired early: Cloud Tasks retries on a 5xx
            return JSONResponse({"status": "retry", "reason": str(error)}, status_code=503)

    async def apply(message: PushMessage) -> str:
        return await broker.handle_offer(parse_json_model(OfferMessage, message.data).offer_id)

    return await handle_push(request, deps, request.url.path, apply)
