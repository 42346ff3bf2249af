"""In-memory Pub/Sub, Cloud Storage and Cloud Tasks fakes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class PublishedMessage:
    topic: str
    data: bytes
    attributes: dict[str, str]
    message_id: str


@dataclass
class InMemoryEventBus:
    """Keeps every published message, in order, per topic."""

    published: list[PublishedMessage] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        message_id = str(next(self._ids))
        self.published.append(PublishedMessage(topic, data, dict(attributes), message_id))
        return message_id

    def on(self, topic: str) -> list[PublishedMessage]:
        return [m for m in self.published if m.topic == topic]


@dataclass
class InMemoryBlobStore:
    """Objects in a dict keyed by ``gs://`` URI."""

    objects: dict[str, bytes] = field(default_factory=dict)

    async def put(self, bucket: str, name: str, data: bytes, content_type: str) -> str:
        uri = f"gs://{bucket}/{name}"
        self.objects[uri] = data
        return uri

    async def get(self, uri: str) -> bytes | None:
        return self.objects.get(uri)


@dataclass
class ScheduledTask:
    queue: str
    url: str
    body: bytes
    at: datetime
    name: str


@dataclass
class InMemoryTaskQueue:
    """Records scheduled tasks; tests fire them by hand."""

    tasks: list[ScheduledTask] = field(default_factory=list)

    async def schedule(
        self, queue: str, url: str, body: bytes, at: datetime, *, name: str | None = None
    ) -> str:
        task_name = name or f"task-{len(self.tasks) + 1}"
        self.tasks.append(ScheduledTask(queue, url, body, at, task_name))
        return task_name
