"""The executor's transcript cache: a step reads only what was added since the last one."""

from __future__ import annotations

from cloudagents.adapters.memory.stores import InMemoryRunStore
from cloudagents.domain.messages import Message
from cloudagents.domain.runs import RunRecord
from cloudagents.runtime.executor import TranscriptCache


class CountingStore(InMemoryRunStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, int]] = []  # (start, messages returned)

    async def messages(self, run_id: str, *, start: int = 0) -> list[Message]:
        found = await super().messages(run_id, start=start)
        self.reads.append((start, len(found)))
        return found


def text(i: int) -> Message:
    return Message(role="user", content=f"m{i}")


async def grow(store: CountingStore, run_id: str, count: int) -> RunRecord:
    store.transcripts[run_id].extend(text(100 + i) for i in range(count))
    run = store.runs[run_id]
    store.runs[run_id] = run.model_copy(update={"message_count": run.message_count + count})
    return store.runs[run_id]


async def test_each_read_after_the_first_fetches_only_new_messages() -> None:
    store, cache = CountingStore(), TranscriptCache()
    assert await store.create_run(RunRecord(run_id="r1", agent_id="a"), [text(0), text(1)])
    first = await cache.read(store, store.runs["r1"])
    assert [m.content for m in first] == ["m0", "m1"]
    run = await grow(store, "r1", 3)
    second = await cache.read(store, run)
    assert [m.content for m in second] == ["m0", "m1", "m100", "m101", "m102"]
    assert store.reads == [(0, 2), (2, 3)]
    second.append(text(999))  # the caller's list is its own
    assert len(await cache.read(store, run)) == 5


async def test_a_prefix_that_disagrees_with_the_run_is_read_again_in_full() -> None:
    store, cache = CountingStore(), TranscriptCache()
    assert await store.create_run(RunRecord(run_id="r2", agent_id="a"), [text(0)])
    await cache.read(store, store.runs["r2"])
    # Another process says the run has 3 messages, but the store is behind that count:
    stale = store.runs["r2"].model_copy(update={"message_count": 3})
    await grow(store, "r2", 1)
    transcript = await cache.read(store, stale)
    assert [m.content for m in transcript] == ["m0", "m100"]
    assert store.reads[-1] == (0, 2)  # fell back to a full read


async def test_the_cache_holds_at_most_max_runs() -> None:
    store, cache = CountingStore(), TranscriptCache(max_runs=2)
    for i in range(3):
        assert await store.create_run(RunRecord(run_id=f"r{i}", agent_id="a"), [text(i)])
        await cache.read(store, store.runs[f"r{i}"])
    store.reads.clear()
    await cache.read(store, store.runs["r0"])  # evicted: read from the start
    await cache.read(store, store.runs["r2"])  # kept, and complete: no read at all
    assert store.reads == [(0, 1)]


async def test_what_a_step_committed_here_is_kept_so_the_next_step_reads_nothing() -> None:
    store, cache = CountingStore(), TranscriptCache()
    assert await store.create_run(RunRecord(run_id="c1", agent_id="a"), [text(0)])
    await cache.read(store, store.runs["c1"])
    run = await grow(store, "c1", 2)  # the step's commit, as the store has it
    cache.committed("c1", run.message_count, [text(100), text(101)])
    store.reads.clear()
    assert [m.content for m in await cache.read(store, run)] == ["m0", "m100", "m101"]
    assert store.reads == []
    # Not the prefix just before them (another instance committed a step in between): not kept,
    # and the next read finds what is missing.
    run = await grow(store, "c1", 2)
    cache.committed("c1", run.message_count + 1, [text(7)])
    assert len(await cache.read(store, run)) == 5 and store.reads == [(3, 2)]
