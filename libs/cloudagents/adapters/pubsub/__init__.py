"""Pub/Sub adapter."""

from __future__ import annotations

import asyncio
from typing import Any

from cloudagents.metrics import count


class PubSubEventBus:
    """Publishes with the Pub/Sub publisher client; topic names become topic paths."""

    def __init__(self, publisher: Any, project: str) -> None:
        self.publisher = publisher
        self.project = project

    async def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        path = self.publisher.topic_path(self.project, topic)
        future = self.publisher.publish(path, data, **attributes)
        message_id: str = await asyncio.wrap_future(future)
        count("pubsub.publish")
        return message_id
