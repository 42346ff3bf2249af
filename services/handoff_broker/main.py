"""handoff_broker: push endpoint for ``{ws}-handoff`` and the Cloud Tasks expiry callback."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from cloudagents.bootstrap import get_deps
from cloudagents.domain.handoffs import OfferMessage
from cloudagents.runtime.broker import HandoffBroker
from cloudagents.runtime.push import PushMessage, handle_push, handle_task, parse_json_model


@functions_framework.aio.http
async def handoff_broker(request: Request) -> Response:
    deps = await get_deps("handoff_broker")
    broker = HandoffBroker(deps)
    if request.url.path == deps.topology.queues[0].path and request.method == "POST":

        async def expire(body: bytes) -> str:  # fired early: a TransientError, retried
            return await broker.handle_expiry(parse_json_model(OfferMessage, body).offer_id)

        return await handle_task(request, deps, expire)

    async def apply(message: PushMessage) -> str:
        return await broker.handle_offer(parse_json_model(OfferMessage, message.data).offer_id)

    return await handle_push(request, deps, request.url.path, apply)
