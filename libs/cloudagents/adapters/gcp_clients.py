"""Builds the Google Cloud clients (once per process) and the adapters over them.

On the emulators the clients find ``FIRESTORE_EMULATOR_HOST``, ``PUBSUB_EMULATOR_HOST`` and
``STORAGE_EMULATOR_HOST`` themselves; Cloud Tasks has no such variable in its client, so
``CLOUD_TASKS_EMULATOR_HOST`` selects an insecure gRPC channel here.
"""

from __future__ import annotations

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
