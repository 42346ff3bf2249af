"""Streaming pull with flow control: messages of a subscription handed to an asyncio handler.

The subscriber client calls back on its own threads; each message is run as a coroutine on the
event loop the puller was started in, and acknowledged when the handler returns True (nacked
when it returns False or raises). ``max_messages`` caps the messages held at once (handed out and
not yet acknowledged): a worker's capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from typing import Any

from google.cloud import pubsub_v1  # type: ignore[attr-defined]

log = logging.getLogger(__name__)

Handler = Callable[[bytes, Mapping[str, str]], Coroutine[Any, Any, bool]]


class StreamingPull:
    """One streaming pull on ``subscription`` (a full path), started with ``start()``."""

    def __init__(
        self, subscriber: Any, subscription: str, handler: Handler, *, max_messages: int
    ) -> None:
        self.subscriber = subscriber
        self.subscription = subscription
        self.handler = handler
        self.max_messages = max_messages
        self._future: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[Future[bool]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        flow = pubsub_v1.types.FlowControl(max_messages=self.max_messages)
        self._future = self.subscriber.subscribe(
            self.subscription, callback=self._deliver, flow_control=flow
        )

    def _deliver(self, message: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            message.nack()
            return
        try:
            future: Future[bool] = asyncio.run_coroutine_threadsafe(
                self.handler(bytes(message.data), dict(message.attributes)), loop
            )
        except RuntimeError:  # the loop stopped between the check and the call
            message.nack()
            return
        self._running.add(future)

        def settle(done: Future[bool]) -> None:
            self._running.discard(done)
            if done.cancelled():
                return  # the worker was stopped abruptly: let the ack deadline lapse
            error = done.exception()
            if error is not None:
                log.warning("handler failed on %s: %r", self.subscription, error)
                message.nack()
            elif done.result():
                message.ack()
            else:
                message.nack()

        future.add_done_callback(settle)

    async def stop(self) -> None:
        """Stop pulling (messages in flight are neither acknowledged nor nacked here)."""
        future, self._future = self._future, None
        if future is not None:
            future.cancel()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(future.result, 10)
