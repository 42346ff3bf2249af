"""Messaging, blob and task ports: Pub/Sub, Cloud Storage and Cloud Tasks by role."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class EventBus(Protocol):
    """Publishes one message to a topic; returns the message id once the broker has it."""

    async def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str: ...


class BlobStore(Protocol):
    """Objects addressed as ``gs://bucket/name``."""

    async def put(self, bucket: str, name: str, data: bytes, content_type: str) -> str:
        """Write the object and return its ``gs://`` URI."""
        ...

    async def get(self, uri: str) -> bytes | None: ...


class TaskQueue(Protocol):
    """Schedules an HTTP POST of ``body`` to ``url`` at ``at`` (Cloud Tasks)."""

    async def schedule(
        self, queue: str, url: str, body: bytes, at: datetime, *, name: str | None = None
    ) -> str: ...
