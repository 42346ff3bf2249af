"""The context snapshotter: writes a run's recent messages to the bucket after each step."""

from __future__ import annotations

from collections import OrderedDict

from cloudagents.context import ContextSnapshot, save_snapshot
from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.messages import Message
from cloudagents.domain.runs import RunRecord, SnapshotMessage, SnapshotPointer
from cloudagents.faults import crash_point
from cloudagents.runtime.deps import Deps


class ContextSnapshotter:
    """Applies ``{ws}-snapshots`` messages; the object name is per seq, so replays overwrite."""

    def __init__(self, deps: Deps, *, max_runs: int = 64) -> None:
        self.deps = deps
        self.max_runs = max_runs
        # run id -> (the number of messages the window ends at, the window): messages are
        # append-only and numbered, so a later snapshot of the run here reads only the messages
        # added since (about two a step) instead of the whole window.
        self._windows: OrderedDict[str, tuple[int, list[Message]]] = OrderedDict()

    async def _window(self, run: RunRecord, limit: int) -> list[Message]:
        """The run's last ``limit`` messages (of ``run.message_count``)."""
        end, known = self._windows.pop(run.run_id, (0, []))
        count = run.message_count
        if known and end <= count and count - end <= limit:
            added = await self.deps.runs.messages(run.run_id, start=end) if count > end else []
            window = [*known, *added[: count - end]][-limit:]
            if len(added) < count - end:
                window = await self.deps.runs.recent_messages(run.run_id, limit)
        else:
            window = await self.deps.runs.recent_messages(run.run_id, limit)
        self._windows[run.run_id] = (count, window)
        while len(self._windows) > self.max_runs:
            self._windows.popitem(last=False)
        return window

    async def handle(self, message: SnapshotMessage) -> str:
        run = await self.deps.runs.get_run(message.run_id)
        if run is None:
            raise PermanentMessageError(f"unknown run {message.run_id!r}")
        if run.snapshot is not None and run.snapshot.seq >= message.seq:
            return "already-snapshotted"
        limit = self.deps.settings.snapshot_messages
        messages = await self._window(run, limit)
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
