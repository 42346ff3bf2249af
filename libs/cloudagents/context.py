"""Context snapshots: a run's recent messages in ``gs://{project}-agent-context``, and restoring
a conversation from one (what a handoff transfers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pydantic import Field

from cloudagents.domain.base import Persisted
from cloudagents.domain.messages import Message
from cloudagents.domain.runs import RunRecord, SnapshotPointer, snapshot_object_name
from cloudagents.ports.bus import BlobStore

# How many steps back ``latest_snapshot`` looks for a snapshot object before the run's newest.
SNAPSHOT_PROBES = 4


class ContextSnapshot(Persisted):
    """The JSON object stored for one snapshot."""

    run_id: str
    agent_id: str
    seq: int
    message_count: int
    messages: list[Message]
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


async def save_snapshot(blobs: BlobStore, bucket: str, snapshot: ContextSnapshot) -> str:
    """Write the snapshot and return its ``gs://`` URI (same name for the same seq: idempotent)."""
    data = snapshot.model_dump_json().encode()
    name = snapshot_object_name(snapshot.run_id, snapshot.seq)
    return await blobs.put(bucket, name, data, "application/json")


async def load_snapshot(blobs: BlobStore, uri: str) -> ContextSnapshot:
    """Read a snapshot; raises ``LookupError`` if the object is missing."""
    data = await blobs.get(uri)
    if data is None:
        raise LookupError(f"no context snapshot at {uri}")
    return ContextSnapshot.model_validate(json.loads(data))


async def restore(blobs: BlobStore, uri: str) -> list[Message]:
    """The conversation a snapshot holds, ready to continue from."""
    return (await load_snapshot(blobs, uri)).messages


async def latest_snapshot(
    blobs: BlobStore, bucket: str, run: RunRecord, *, probes: int = SNAPSHOT_PROBES
) -> SnapshotPointer | None:
    """The run's newest context snapshot: the object of its last step (``run.seq``) if the
    snapshotter has written it, else of the step before, and so on (``probes`` steps back, no
    earlier than a pointer the run document holds from before version 6). Nothing is written
    per snapshot but the object: it is found here, by ``GET /runs/{id}``, when asked."""
    floor = run.snapshot.seq if run.snapshot is not None else 0
    for seq in range(run.seq, max(floor, run.seq - probes), -1):
        uri = f"gs://{bucket}/{snapshot_object_name(run.run_id, seq)}"
        data = await blobs.get(uri)
        if data is not None:
            found = ContextSnapshot.model_validate(json.loads(data))
            return SnapshotPointer(uri=uri, seq=seq, message_count=found.message_count)
    return run.snapshot
