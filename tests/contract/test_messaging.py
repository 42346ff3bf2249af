"""``EventBus``, ``BlobStore`` and ``TaskQueue``: the fakes against Pub/Sub, Cloud Storage and
Cloud Tasks on their emulators."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from cloudagents.ports.bus import BlobStore
from tests.contract.conftest import BUCKET, QUEUE, BusHarness, TaskHarness, new_id

pytestmark = pytest.mark.contract


# --------------------------------------------------------------------------------------------
# EventBus
# --------------------------------------------------------------------------------------------


async def test_publish_returns_an_id_and_delivers_data_and_attributes(
    bus_harness: BusHarness,
) -> None:
    topic = new_id("topic")
    await bus_harness.prepare(topic)
    sent = [
        (json.dumps({"run_id": "r1", "seq": 0}).encode(), {"run_id": "r1", "kind": "step"}),
        (b"\x00binary\xff", {}),
        (b"third", {"ordering": "3"}),
    ]
    ids = await asyncio.gather(*(bus_harness.bus.publish(topic, d, a) for d, a in sent))
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == len(ids)

    received = await bus_harness.received(topic, count=len(sent))
    by_id = {r.message_id: r for r in received}
    assert set(by_id) == set(ids)
    for message_id, (data, attributes) in zip(ids, sent, strict=True):
        assert by_id[message_id].data == data
        assert by_id[message_id].attributes == attributes


async def test_published_messages_stay_on_their_topic(bus_harness: BusHarness) -> None:
    first, second = new_id("topic"), new_id("topic")
    await asyncio.gather(bus_harness.prepare(first), bus_harness.prepare(second))
    one = await bus_harness.bus.publish(first, b"one", {})
    two = await bus_harness.bus.publish(second, b"two", {})
    assert [(r.message_id, r.data) for r in await bus_harness.received(first, 1)] == [(one, b"one")]
    assert [(r.message_id, r.data) for r in await bus_harness.received(second, 1)] == [
        (two, b"two")
    ]


# --------------------------------------------------------------------------------------------
# BlobStore
# --------------------------------------------------------------------------------------------


async def test_put_returns_a_gs_uri_and_get_round_trips(blob_store: BlobStore) -> None:
    name = f"runs/{new_id('run')}/tool_results/000000-000.txt"
    data = b'{"rows": [1, 2, 3]}\x00\xff' + bytes(range(256))
    uri = await blob_store.put(BUCKET, name, data, "application/octet-stream")
    assert uri == f"gs://{BUCKET}/{name}"
    assert await blob_store.get(uri) == data

    await blob_store.put(BUCKET, name, b"replaced", "text/plain")
    assert await blob_store.get(uri) == b"replaced"


async def test_get_of_a_missing_object_is_none(blob_store: BlobStore) -> None:
    await blob_store.put(BUCKET, new_id("exists"), b"x", "text/plain")
    assert await blob_store.get(f"gs://{BUCKET}/{new_id('missing')}.json") is None


# --------------------------------------------------------------------------------------------
# TaskQueue
# --------------------------------------------------------------------------------------------


async def test_schedule_returns_a_name_and_posts_the_body_at_the_time(
    task_harness: TaskHarness,
) -> None:
    at = datetime.now(UTC) + timedelta(seconds=1)
    named_path, unnamed_path = f"/expire/{new_id('n')}", f"/expire/{new_id('u')}"
    task_id = new_id("expire")
    named_body = json.dumps({"offer_id": "offer-1"}).encode()
    unnamed_body = json.dumps({"offer_id": "offer-2"}).encode()

    named = await task_harness.queue.schedule(
        QUEUE, task_harness.base_url + named_path, named_body, at, name=task_id
    )
    assert named.endswith(task_id)
    unnamed = await task_harness.queue.schedule(
        QUEUE, task_harness.base_url + unnamed_path, unnamed_body, at
    )
    assert isinstance(unnamed, str) and unnamed
    assert unnamed != named

    for path, body in ((named_path, named_body), (unnamed_path, unnamed_body)):
        delivery = await task_harness.delivered(path)
        assert delivery is not None, f"no POST to {path}"
        assert delivery.body == body
        # Not before its time (allowing for clock granularity).
        assert delivery.at >= at - timedelta(milliseconds=200)
