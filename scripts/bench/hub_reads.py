"""Firestore reads per hour of watching a run: one stream polling per viewer (before) and the
api's ``EventHub`` (after), for one viewer and for 50 viewers of one run.

``python -m scripts.bench.hub_reads`` prints a table and one BENCH-RESULT line.

How it counts: the in-memory run store, wrapped to count what the Firestore adapter would be
billed (``adapters/firestore/ops.py``): a ``get_run`` is one read; an ``events`` query is one
read per document returned and at least one. The hour is simulated: the event loop runs on a
virtual clock (a timer fires at once and moves the clock to its deadline), so an hour of
polling is measured in full, not extrapolated, in a few seconds of wall time.

"before" is the loop each stream ran before the hub: ``RunEventFollower.poll()`` every 0.2 s,
the run document read every 1 s while nothing is new. "after" is the hub with its default
``HubSettings``.

Scenarios: *waiting* (the run waits for a long tool call: ``waiting_tools`` with one call
pending, no events for the hour); *queued* (nobody picks the run up: ``queued``, no events);
*active* (one content chunk written every second for the hour).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import selectors
import types
from collections.abc import Callable, Coroutine
from typing import Any

from scripts.bench.common import emit

from cloudagents import metrics
from cloudagents.bootstrap import get_deps, reset_deps
from cloudagents.domain.events import ContentChunk, RunEvent, event_id
from cloudagents.domain.runs import PendingItem, RunRecord, RunStatus
from cloudagents.runtime import follow, hub
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.follow import RunEventFollower
from cloudagents.runtime.hub import EventHub

HOUR = 3600.0
OLD_POLL_SECONDS = 0.2
OLD_RUN_CHECK_SECONDS = 1.0


class _InstantSelector(selectors.DefaultSelector):
    """Never waits: a wait for ``timeout`` moves the virtual clock on by ``timeout``."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is not None and timeout > 0:
            self.now += timeout
        return super().select(0)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when every task waits on a timer."""

    def __init__(self) -> None:
        self.selector = _InstantSelector()
        super().__init__(self.selector)

    def time(self) -> float:
        return self.selector.now


class CountingRuns:
    """The run store, counting the reads Firestore would bill for ``get_run`` and ``events``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_run(self, run_id: str) -> RunRecord | None:
        metrics.count("firestore.read")
        found: RunRecord | None = await self.inner.get_run(run_id)
        return found

    async def events(self, run_id: str, *, after: str | None = None) -> list[RunEvent]:
        found: list[RunEvent] = await self.inner.events(run_id, after=after)
        metrics.count("firestore.read", max(len(found), 1))
        return found


async def _deps() -> Deps:
    os.environ.update(
        CLOUDAGENTS_BACKEND="memory",
        GOOGLE_CLOUD_PROJECT="bench-project",
        CLOUDAGENTS_WORKSPACE="agents",
        CLOUDAGENTS_API_TOKENS="bench=bench-token-0123456789",
    )
    reset_deps()
    deps = await get_deps("api")
    deps.runs = CountingRuns(deps.runs)
    return deps


async def _prepare(deps: Deps, scenario: str) -> str:
    run_id = f"bench-{scenario}"
    await deps.runs.create_run(RunRecord(run_id=run_id, agent_id="bench", source="bench"), [])
    if scenario == "waiting":
        run = await deps.runs.get_run(run_id)
        assert run is not None
        deps.runs.inner.runs[run_id] = run.model_copy(  # type: ignore[attr-defined]
            update={
                "status": RunStatus.WAITING_TOOLS,
                "seq": 1,
                "pending": [PendingItem(kind="tool_call", id="c0")],
            }
        )
    elif scenario == "active":
        deps.runs.inner.runs[run_id] = deps.runs.inner.runs[run_id].model_copy(  # type: ignore[attr-defined]
            update={"status": RunStatus.RUNNING}
        )
    return run_id


async def _writer(deps: Deps, run_id: str) -> None:
    """One content chunk a second, as a model streaming slowly for the whole hour would."""
    n = 0
    while True:
        await asyncio.sleep(1.0)
        chunk = ContentChunk(run_id=run_id, seq=0, id=event_id(0, "a", n), chunk="x")
        await deps.runs.inner.add_events(run_id, [chunk])  # type: ignore[attr-defined]
        n += 1


async def _old_viewer(deps: Deps, run_id: str, received: list[int]) -> None:
    follower = RunEventFollower(deps, run_id, run_check_seconds=OLD_RUN_CHECK_SECONDS)
    while not follower.finished:
        received[0] += len(await follower.poll())
        await asyncio.sleep(OLD_POLL_SECONDS)


async def _hub_viewer(event_hub: EventHub, run_id: str, received: list[int]) -> None:
    async for _ in event_hub.subscribe(run_id):
        received[0] += 1


async def measure(scenario: str, approach: str, viewers: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = types.SimpleNamespace(monotonic=loop.time)
    hub.time, follow.time = clock, clock  # type: ignore[assignment]
    deps = await _deps()
    run_id = await _prepare(deps, scenario)
    metrics.reset()
    received = [0]
    event_hub = EventHub(deps)
    make: Callable[[], Coroutine[Any, Any, None]]
    if approach == "before":
        make = lambda: _old_viewer(deps, run_id, received)  # noqa: E731
    else:
        make = lambda: _hub_viewer(event_hub, run_id, received)  # noqa: E731
    tasks = [asyncio.create_task(make()) for _ in range(viewers)]
    if scenario == "active":
        tasks.append(asyncio.create_task(_writer(deps, run_id)))
    started = loop.time()
    await asyncio.sleep(HOUR)
    elapsed = loop.time() - started
    reads = metrics.snapshot().get("firestore.read", 0)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return {
        "scenario": scenario,
        "approach": approach,
        "viewers": viewers,
        "reads_per_hour": round(reads * HOUR / elapsed),
        "events_delivered": received[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--scenarios", nargs="+", default=["waiting", "queued", "active"])
    args = parser.parse_args()
    rows = []
    for scenario in args.scenarios:
        for viewers in args.viewers:
            for approach in ("before", "after"):
                loop = VirtualClockLoop()
                try:
                    rows.append(loop.run_until_complete(measure(scenario, approach, viewers)))
                finally:
                    loop.close()
    print(f"{'scenario':<9} {'viewers':>7} {'before':>10} {'after':>8}  reads per hour")
    for i in range(0, len(rows), 2):
        before, after = rows[i], rows[i + 1]
        per_viewer = [r["events_delivered"] // r["viewers"] for r in (before, after)]
        print(
            f"{before['scenario']:<9} {before['viewers']:>7} "
            f"{before['reads_per_hour']:>10,} {after['reads_per_hour']:>8,}"
            f"  (events delivered per viewer: {per_viewer[0]} / {per_viewer[1]})"
        )
    emit({"name": "hub reads per hour", "rows": rows})


if __name__ == "__main__":
    main()
