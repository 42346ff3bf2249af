"""Pull subscriptions on the Pub/Sub emulator: what a test sees of the messages a run published."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1  # type: ignore[attr-defined]


def pull_subscription(project: str, topic: str) -> str:
    """A fresh pull subscription on ``topic`` (created first if needed); returns its path."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    with contextlib.suppress(gexc.AlreadyExists):
        publisher.create_topic(name=topic_path)
    path = subscriber.subscription_path(project, f"{topic}-test-{uuid.uuid4().hex[:6]}")
    subscriber.create_subscription(name=path, topic=topic_path)
    return str(path)


def pull(subscription: str, count: int, timeout: float = 10.0, *, linger: float = 0.0) -> list[Any]:
    """At least ``count`` messages (acknowledged), or what came in ``timeout``; with ``linger``,
    also what comes that long after the ``count``-th (a duplicate would)."""
    subscriber = pubsub_v1.SubscriberClient()
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    lingering = False
    while time.monotonic() < deadline:
        if len(received) >= count and not lingering:
            if not linger:
                break
            deadline, lingering = min(deadline, time.monotonic() + linger), True
        if lingering:
            # Polls that return at once: the emulator holds an empty waiting pull for about
            # 4 s, which made every linger of 1 s cost 4 (8 s of each parity scenario).
            response = subscriber.pull(
                request={
                    "subscription": subscription,
                    "max_messages": 10,
                    "return_immediately": True,
                },
                timeout=5,
            )
            if not response.received_messages:
                time.sleep(0.1)
        else:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 10}, timeout=5
            )
        if response.received_messages:
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
        received.extend(m.message for m in response.received_messages)
    return received
