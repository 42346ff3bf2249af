"""``FunctionRepository``: immutable versions, aliases with history, executions newest first.

The Firestore variant keeps large code in the bucket (the GCS emulator) and bounds the alias
history; what a caller sees is the same as in memory.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from cloudagents.adapters.firestore.functions import (
    FUNCTIONS,
    INLINE_CODE_LIMIT,
    VERSIONS,
    FirestoreFunctionRepository,
)
from cloudagents.functions.config import FunctionConfig
from cloudagents.functions.errors import FunctionNotFound
from cloudagents.functions.repository import FunctionRepository, InMemoryFunctionRepository
from cloudagents.functions.store import FunctionStore
from cloudagents.functions.versions import ExecutionRecord, FunctionVersion
from cloudagents.ports.bus import BlobStore
from cloudagents.sandbox import Sandbox
from tests.contract.conftest import BUCKET, new_id, race

pytestmark = pytest.mark.contract


@pytest.fixture
def function_repository(
    backend: str, blob_store: BlobStore, request: pytest.FixtureRequest
) -> FunctionRepository:
    if backend == "memory":
        return InMemoryFunctionRepository()
    return FirestoreFunctionRepository(request.getfixturevalue("firestore_db"), blob_store, BUCKET)


def make_version(
    name: str, body: str = "return 1", imports: tuple[str, ...] = (), **overrides: Any
) -> FunctionVersion:
    # The name is in the code: the hash does not cover the name, and the emulator is shared.
    fields: dict[str, Any] = {
        "code": f"def run():\n    # {name}\n    {body}\n",
        "entry": "run",
        "description": f"{name} does a thing",
        "input_schema": {"type": "object", "properties": {}},
        "output_schema": None,
        # Explicit imports: the default factory's list is not sorted the way validation sorts it,
        # so a default config read back from a document would not compare equal.
        "config": FunctionConfig(allowed_imports=["json", "math"]),
    }
    fields.update(overrides)
    return FunctionVersion(
        hash=FunctionVersion.content_hash(**fields), name=name, imports=list(imports), **fields
    )


async def test_a_stored_version_round_trips(function_repository: FunctionRepository) -> None:
    name = new_id("fn")
    version = make_version(
        name,
        input_schema={
            "type": "object",
            "properties": {"xs": {"type": "array", "items": {"type": "array"}}},
            "required": ["xs"],
        },
        output_schema={"type": "integer"},
        imports=("math",),
    )
    assert await function_repository.get_version(version.hash) is None
    assert await function_repository.get_alias(name) is None

    await function_repository.save_version(version)
    assert await function_repository.get_version(version.hash) == version

    alias = await function_repository.point_alias(name, version.hash)
    assert (alias.name, alias.current, alias.history) == (name, version.hash, [version.hash])
    assert await function_repository.get_alias(name) == alias
    assert name in [a.name for a in await function_repository.list_aliases()]


async def test_versions_are_immutable_and_history_is_in_order(
    function_repository: FunctionRepository,
) -> None:
    name = new_id("fn")
    first = make_version(name, "return 1")
    await function_repository.save_version(first)
    # The same hash again (here with another created_at) changes nothing.
    await function_repository.save_version(
        first.model_copy(update={"created_at": first.created_at + timedelta(days=1)})
    )
    assert await function_repository.get_version(first.hash) == first
    await function_repository.point_alias(name, first.hash)
    again = await function_repository.point_alias(name, first.hash)
    assert again.history == [first.hash]

    second = make_version(name, "return 2")
    await function_repository.save_version(second)
    moved = await function_repository.point_alias(name, second.hash)
    assert (moved.current, moved.history) == (second.hash, [first.hash, second.hash])
    back = await function_repository.point_alias(name, first.hash)
    assert (back.current, back.history) == (first.hash, [first.hash, second.hash, first.hash])
    assert await function_repository.get_alias(name) == back
    assert await function_repository.get_version(first.hash) == first
    assert await function_repository.get_version(second.hash) == second


async def test_name_at_hash_resolves_through_the_alias_history(
    function_repository: FunctionRepository,
) -> None:
    store = FunctionStore(function_repository, Sandbox())
    name = new_id("fn")
    first, second = make_version(name, "return 1"), make_version(name, "return 2")
    for version in (first, second):
        await function_repository.save_version(version)
        await function_repository.point_alias(name, version.hash)

    assert await store.get_function(name) == second
    assert await store.get_function(f"{name}@{first.hash}") == first
    assert await store.get_function(f"{name}@{first.hash[:8].upper()}") == first
    assert await store.get_function(second.ref) == second
    assert await store.versions(name) == [first, second]
    with pytest.raises(FunctionNotFound):
        await store.get_function(f"{name}@{first.hash[:7]}")  # shorter than 8
    with pytest.raises(FunctionNotFound):
        await store.get_function(f"{name}@{'0' * 64}")
    with pytest.raises(FunctionNotFound):
        await store.get_function(new_id("missing"))
    # A hash of another function is not a version of this one.
    other = make_version(new_id("fn"))
    await function_repository.save_version(other)
    await function_repository.point_alias(other.name, other.hash)
    with pytest.raises(FunctionNotFound):
        await store.get_function(f"{name}@{other.hash}")


async def test_large_code_goes_through_the_bucket(
    backend: str,
    function_repository: FunctionRepository,
    blob_store: BlobStore,
    request: pytest.FixtureRequest,
) -> None:
    name = new_id("fn")
    filler = "x = 1  # é\n" * (INLINE_CODE_LIMIT // 10)
    version = make_version(name, code=f"{filler}def run():\n    return x\n")
    assert len(version.code.encode("utf-8")) > INLINE_CODE_LIMIT

    await function_repository.save_version(version)
    await function_repository.save_version(version)
    assert await function_repository.get_version(version.hash) == version

    if backend == "emulator":
        db = request.getfixturevalue("firestore_db")
        ref = db.collection(FUNCTIONS).document(name).collection(VERSIONS).document(version.hash)
        stored = (await ref.get()).to_dict()
        uri = f"gs://{BUCKET}/functions/{name}/{version.hash}.py"
        assert (stored["code"], stored["code_uri"]) == ("", uri)
        assert await blob_store.get(uri) == version.code.encode("utf-8")


async def test_executions_are_listed_per_function_and_per_agent_newest_first(
    function_repository: FunctionRepository,
) -> None:
    f1, f2 = new_id("fn"), new_id("fn")
    a1, a2 = new_id("agent"), new_id("agent")
    start = datetime.now(UTC)
    records = [
        ExecutionRecord(
            function=function,
            version_hash="h" * 64,
            exit_kind="ok" if i % 2 == 0 else "timeout",
            duration_ms=float(i),
            output_bytes=i,
            limits_hit=[] if i % 2 == 0 else ["wall_clock"],
            run_id=f"run-{i}",
            tool_call_id=f"call-{i}",
            agent=agent,
            started_at=start + timedelta(milliseconds=i),
        )
        for i, (function, agent) in enumerate(
            [(f1, a1), (f2, a1), (f1, a2), (f1, a1), (f2, a2), (f1, a1)]
        )
    ]
    for record in records:
        await function_repository.record_execution(record)
    newest_first = list(reversed(records))

    def ids(found: list[ExecutionRecord]) -> list[str | None]:
        return [r.run_id for r in found]

    assert await function_repository.executions(function=f1) == [
        r for r in newest_first if r.function == f1
    ]
    assert ids(await function_repository.executions(agent=a2)) == ["run-4", "run-2"]
    assert ids(await function_repository.executions(function=f1, agent=a1)) == [
        "run-5",
        "run-3",
        "run-0",
    ]
    assert ids(await function_repository.executions(function=f1, limit=2)) == ["run-5", "run-3"]
    assert ids(await function_repository.executions(agent=a1, limit=1)) == ["run-5"]
    assert await function_repository.executions(function=new_id("none")) == []
    everything = await function_repository.executions(limit=1000)
    assert [r for r in everything if r.function in (f1, f2)] == newest_first


async def test_racing_stores_keep_both_versions_and_end_on_one(
    function_repository: FunctionRepository,
) -> None:
    name = new_id("fn")
    versions = [make_version(name, f"return {i}") for i in range(4)]

    async def store(version: FunctionVersion) -> None:
        await function_repository.save_version(version)
        await function_repository.point_alias(name, version.hash)

    for _ in range(2):
        await race([partial(store, v) for v in versions])

    for version in versions:
        assert await function_repository.get_version(version.hash) == version
    alias = await function_repository.get_alias(name)
    assert alias is not None
    assert alias.current in {v.hash for v in versions}
    assert set(alias.history) == {v.hash for v in versions}
    assert alias.history[-1] == alias.current
    assert all(a != b for a, b in zip(alias.history, alias.history[1:], strict=False))


async def test_firestore_bounds_the_alias_history(
    backend: str, blob_store: BlobStore, request: pytest.FixtureRequest
) -> None:
    if backend == "memory":
        pytest.skip("the in-memory history is unbounded")
    repository = FirestoreFunctionRepository(
        request.getfixturevalue("firestore_db"), blob_store, BUCKET, history_limit=3
    )
    name = new_id("fn")
    versions = [make_version(name, f"return {i}") for i in range(5)]
    for version in versions:
        await repository.save_version(version)
        await repository.point_alias(name, version.hash)
    alias = await repository.get_alias(name)
    assert alias is not None
    assert alias.history == [v.hash for v in versions[2:]]
    assert alias.current == versions[-1].hash
    # Versions that fell out of the history are still stored.
    assert await repository.get_version(versions[0].hash) == versions[0]


async def test_the_same_content_under_two_names_returns_the_first_saved(
    function_repository: FunctionRepository,
) -> None:
    # The hash does not cover the name: the port's lookup by hash alone finds the first one.
    first, second = new_id("fn"), new_id("fn")
    code = f"def run():\n    # {first} {second}\n    return 1\n"
    one = make_version(first, code=code, description="shared")
    two = make_version(second, code=code, description="shared")
    assert one.hash == two.hash
    for version in (one, two):
        await function_repository.save_version(version)
        await function_repository.point_alias(version.name, version.hash)
    assert await function_repository.get_version(one.hash) == one
    alias = await function_repository.get_alias(second)
    assert alias is not None
    assert alias.current == one.hash
