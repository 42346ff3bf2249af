"""Builds the Google Cloud clients (once per process) and the adapters over them.

On the emulators the clients find ``FIRESTORE_EMULATOR_HOST``, ``PUBSUB_EMULATOR_HOST`` and
``STORAGE_EMULATOR_HOST`` themselves; Cloud Tasks has no such variable in its client, so
``CLOUD_TASKS_EMULATOR_HOST`` selects an insecure gRPC channel here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from typing import Any

from cloudagents.adapters.cloud_tasks import CloudTasksQueue
from cloudagents.adapters.firestore.budgets import FirestoreCostLedger, FirestoreRateLimiter
from cloudagents.adapters.firestore.stores import (
    FirestoreAgentStore,
    FirestoreAuditStore,
    FirestoreDeadLetterStore,
    FirestoreHandoffStore,
    FirestoreRunStore,
)
from cloudagents.adapters.gcs import GcsBlobStore
from cloudagents.adapters.pubsub import PubSubEventBus
from cloudagents.runtime.deps import Deps
from cloudagents.settings import Settings
from cloudagents.tools import ToolRegistry
from cloudagents.topology import Topology

log = logging.getLogger(__name__)
TERRAFORM_HINT = (
    "Topics and the bucket are created by Terraform (terraform/environments/*, generated from "
    "cloudagents.topology); apply it for this project and workspace, or set "
    "PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST to run against the local emulators, where "
    "they are created on first use."
)


def firestore_client(project: str) -> Any:
    from google.cloud import firestore

    return firestore.AsyncClient(project=project)


def publisher_client() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    # Flush quickly: a step's messages are few and latency matters more than batching.
    batch = pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.005)
    return pubsub_v1.PublisherClient(batch_settings=batch)


def storage_client(project: str) -> Any:
    from google.cloud import storage  # type: ignore[attr-defined]

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client(project=project)


def tasks_client() -> Any:
    from google.cloud import tasks_v2

    emulator = os.environ.get("CLOUD_TASKS_EMULATOR_HOST")
    if emulator:
        import grpc
        from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

        channel = grpc.insecure_channel(emulator)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    return tasks_v2.CloudTasksClient()


def build_gcp_deps(settings: Settings, topology: Topology, tools: ToolRegistry) -> Deps:
    db = firestore_client(settings.project)
    return Deps(
        settings=settings,
        topology=topology,
        runs=FirestoreRunStore(db),
        agents=FirestoreAgentStore(db),
        dead_letters=FirestoreDeadLetterStore(db),
        handoffs=FirestoreHandoffStore(db),
        audit=FirestoreAuditStore(db),
        bus=PubSubEventBus(publisher_client(), settings.project),
        blobs=GcsBlobStore(storage_client(settings.project)),
        tasks=CloudTasksQueue(
            tasks_client(), settings.project, settings.location, settings.tasks_service_account
        ),
        cost_ledger=FirestoreCostLedger(db),
        rate_limiter=FirestoreRateLimiter(db),
        tools=tools,
    )


def ensure_resources(
    publisher: Any, storage: Any, project: str, topics: tuple[str, ...], bucket: str
) -> None:
    """The topics and the bucket exist: created on the emulators (``PUBSUB_EMULATOR_HOST`` /
    ``STORAGE_EMULATOR_HOST`` set), a ``ConfigurationError`` naming the missing one otherwise."""
    from google.api_core import exceptions as gexc

    from cloudagents.domain.errors import ConfigurationError

    pubsub_emulator = bool(os.environ.get("PUBSUB_EMULATOR_HOST"))
    for topic in topics:
        path = publisher.topic_path(project, topic)
        try:
            publisher.get_topic(topic=path)
        except gexc.NotFound as exc:
            if not pubsub_emulator:
                raise ConfigurationError(
                    f"Pub/Sub topic {path} does not exist. {TERRAFORM_HINT}"
                ) from exc
            with contextlib.suppress(gexc.AlreadyExists):
                publisher.create_topic(name=path)
        except (gexc.PermissionDenied, gexc.Forbidden):
            # A publish-only identity may not read topics: publishing will tell.
            log.debug("cannot check topic %s; assuming it exists", path)
    try:
        storage.get_bucket(bucket)
    except gexc.NotFound as exc:
        if not os.environ.get("STORAGE_EMULATOR_HOST"):
            raise ConfigurationError(
                f"Cloud Storage bucket gs://{bucket} does not exist. {TERRAFORM_HINT}"
            ) from exc
        with contextlib.suppress(gexc.Conflict):
            storage.create_bucket(bucket)
    except (gexc.PermissionDenied, gexc.Forbidden):
        log.debug("cannot check bucket %s; assuming it exists", bucket)


async def close_clients(publisher: Any, storage: Any) -> None:
    """Flush the publisher's pending messages and release both clients."""
    await asyncio.to_thread(publisher.stop)
    with contextlib.suppress(Exception):
        storage.close()


async def close_firestore(db: Any) -> None:
    """Close an async Firestore client's channel (in the event loop it was built in)."""
    with contextlib.suppress(Exception):
        closing = db._firestore_api.transport.close()
        if inspect.isawaitable(closing):
            await closing
