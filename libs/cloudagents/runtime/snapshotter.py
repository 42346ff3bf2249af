"""The context snapshotter: writes a run's recent messages to the bucket after each step."""

from __future__ import annotations

from cloudagents.context import ContextSnapshot, save_snapshot
from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.runs import SnapshotMessage, SnapshotPointer
from cloudagents.faults import crash_point
from cloudagents.runtime.deps import Deps


class ContextSnapshotter:
    """Applies ``{ws}-snapshots`` messages; the object name is per seq, so replays overwrite."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def handle(self, message: SnapshotMessage) -> str:
        run = await self.deps.runs.get_run(message.run_id)
        if run is None:
            raise PermanentMessageError(f"unknown run {message.run_id!r}")
        if run.snapshot is not None and run.snapshot.seq >= message.seq:
            return "already-snapshotted"
        limit = self.deps.settings.snapshot_messages
        messages = await self.deps.runs.recent_messages(run.run_id, limit)
        snapshot = ContextSnapshot(
            run_id=run.run_id,
            agent_id=run.agent_id,
            seq=message.seq,
            message_count=run.message_count,
            messages=messages,
        )
        uri = await save_snapshot(self.deps.blobs, self.deps.topology.context_bucket, snapshot)
        crash_point("snapshotter.after_write")
        pointer = SnapshotPointer(uri=uri, seq=message.seq, message_count=run.message_count)
        updated = await self.deps.runs.set_snapshot(run.run_id, pointer)
        return "snapshotted" if updated else "superseded"
