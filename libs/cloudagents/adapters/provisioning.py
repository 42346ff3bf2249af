"""Creating and checking the workspace's Pub/Sub and Cloud Storage resources, on clients that
``bootstrap`` built: the local stack creates everything on the emulators; ``DistributedAgent``
creates what is missing on the emulators and names what is missing in production."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2

from cloudagents.domain.errors import ConfigurationError
from cloudagents.topology import DeadLetterSink, PushSubscription, Topology

log = logging.getLogger(__name__)


def create_topology(
    topology: Topology,
    service_urls: Mapping[str, str],
    *,
    publisher: Any,
    subscriber: Any,
    storage: Any,
) -> None:
    """Topics, push subscriptions (dead-letter + retry policy), the dead-letter sinks (push, no
    dead-letter policy), pull subscriptions and the buckets of ``topology``. Idempotent: existing
    resources are kept."""
    project = topology.project
    for topic in topology.topics:
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(name=publisher.topic_path(project, topic.name))

    def push(sub: PushSubscription | DeadLetterSink) -> dict[str, Any]:
        return {
            "name": subscriber.subscription_path(project, sub.name),
            "topic": publisher.topic_path(project, sub.topic),
            "push_config": {"push_endpoint": service_urls[sub.service].rstrip("/") + sub.path},
            "ack_deadline_seconds": sub.ack_deadline_seconds,
            "retry_policy": {
                "minimum_backoff": duration_pb2.Duration(seconds=sub.minimum_backoff_seconds),
                "maximum_backoff": duration_pb2.Duration(seconds=sub.maximum_backoff_seconds),
            },
        }

    requests = [
        {
            **push(sub),
            "dead_letter_policy": {
                "dead_letter_topic": publisher.topic_path(project, sub.dead_letter_topic),
                "max_delivery_attempts": sub.max_delivery_attempts,
            },
        }
        for sub in topology.subscriptions
    ]
    requests += [push(sink) for sink in topology.dead_letter_sinks]  # no dead-letter policy
    for request in requests:
        with contextlib.suppress(gexc.AlreadyExists):
            subscriber.create_subscription(request=request)
    for name, topic_name in topology.pull_subscriptions:
        with contextlib.suppress(gexc.AlreadyExists):
            subscriber.create_subscription(
                name=subscriber.subscription_path(project, name),
                topic=publisher.topic_path(project, topic_name),
            )
    for bucket in topology.buckets:
        with contextlib.suppress(gexc.Conflict):
            storage.create_bucket(bucket.name)


def ensure_resources(
    project: str,
    topics: Iterable[str],
    bucket: str,
    *,
    publisher: Any,
    storage: Any,
    create_topics: bool,
    create_bucket: bool,
    hint: str,
) -> None:
    """Each topic and the bucket exist. Missing ones are created where allowed (the emulators)
    and are otherwise a ``ConfigurationError`` naming them and ``hint``. An identity that may
    publish but not read a topic (or bucket) is let through: using it will tell."""
    for topic in topics:
        path = publisher.topic_path(project, topic)
        try:
            publisher.get_topic(topic=path)
        except gexc.NotFound as exc:
            if not create_topics:
                raise ConfigurationError(f"Pub/Sub topic {path} does not exist. {hint}") from exc
            with contextlib.suppress(gexc.AlreadyExists):
                publisher.create_topic(name=path)
        except (gexc.PermissionDenied, gexc.Forbidden):
            log.debug("cannot check topic %s; assuming it exists", path)
    try:
        storage.get_bucket(bucket)
    except gexc.NotFound as exc:
        if not create_bucket:
            raise ConfigurationError(
                f"Cloud Storage bucket gs://{bucket} does not exist. {hint}"
            ) from exc
        with contextlib.suppress(gexc.Conflict):
            storage.create_bucket(bucket)
    except (gexc.PermissionDenied, gexc.Forbidden):
        log.debug("cannot check bucket %s; assuming it exists", bucket)


def ensure_pull_subscriptions(
    project: str,
    pairs: Iterable[tuple[str, str]],
    *,
    publisher: Any,
    subscriber: Any,
    create: bool,
    hint: str,
    ack_deadline_seconds: int = 60,
) -> None:
    """Each (subscription, topic) pair exists: created where allowed, else a
    ``ConfigurationError`` naming what is missing and ``hint``."""
    for subscription, topic in pairs:
        topic_path = publisher.topic_path(project, topic)
        sub_path = subscriber.subscription_path(project, subscription)
        try:
            subscriber.get_subscription(subscription=sub_path)
            continue
        except gexc.NotFound as exc:
            if not create:
                raise ConfigurationError(
                    f"Pub/Sub subscription {sub_path} (on {topic_path}) does not exist. {hint}"
                ) from exc
        except (gexc.PermissionDenied, gexc.Forbidden):
            log.debug("cannot check subscription %s; assuming it exists", sub_path)
            continue
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(name=topic_path)
        with contextlib.suppress(gexc.AlreadyExists):
            subscriber.create_subscription(
                request={
                    "name": sub_path,
                    "topic": topic_path,
                    "ack_deadline_seconds": ack_deadline_seconds,
                }
            )
