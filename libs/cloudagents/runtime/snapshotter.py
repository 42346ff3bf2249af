"""The context snapshotter: writes a run's recent messages to the bucket after each step."""

from __future__ import annotations

from collections import OrderedDict

from cloudagents.context import ContextSnapshot, save_snapshot
from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.messages import Message
from cloudagents.domain.runs import SnapshotMessage
from cloudagents.faults import crash_point
from cloudagents.runtime.deps import Deps


class ContextSnapshotter:
    """Applies ``{ws}-snapshots`` messages; the object name is per seq, so replays overwrite
    it with the same window. Nothing else is written: the newest object is found in the bucket
    (``context.latest_snapshot``), not pointed at from the run document."""

    def __init__(self, deps: Deps, *, max_runs: int = 64) -> None:
        self.deps = deps
        self.max_runs = max_runs
        # run id -> (the number of messages the window ends at, the window): messages are
        # append-only and numbered, so a later snapshot of the run here reads only the messages
        # added since (about two a step) instead of the whole window.
        self._windows: OrderedDict[str, tuple[int, list[Message]]] = OrderedDict()

    async def _window(self, run_id: str, count: int, limit: int) -> list[Message]:
        """The run's last ``limit`` messages of its first ``count``."""
        end, known = self._windows.pop(run_id, (0, []))
        window: list[Message] | None = None
        if known and end <= count and count - end <= limit:
            added = await self.deps.runs.messages(run_id, start=end) if count > end else []
            if len(added) >= count - end:
                window = [*known, *added[: count - end]][-limit:]
        if window is None:
            start = max(0, count - limit)
            window = (await self.deps.runs.messages(run_id, start=start))[: count - start]
        self._windows[run_id] = (count, window)
        while len(self._windows) > self.max_runs:
            self._windows.popitem(last=False)
        return window

    async def handle(self, message: SnapshotMessage) -> str:
        agent_id, count = message.agent_id, message.message_count
        if agent_id is None or count is None:  # sent by a release before: read the run
            run = await self.deps.runs.get_run(message.run_id)
            if run is None:
                raise PermanentMessageError(f"unknown run {message.run_id!r}")
            agent_id, count = run.agent_id, run.message_count
        limit = self.deps.settings.snapshot_messages
        messages = await self._window(message.run_id, count, limit)
        snapshot = ContextSnapshot(
            run_id=message.run_id,
            agent_id=agent_id,
            seq=message.seq,
            message_count=count,
            messages=messages,
        )
        await save_snapshot(self.deps.blobs, self.deps.topology.context_bucket, snapshot)
        crash_point("snapshotter.after_write")
        return "snapshotted"
