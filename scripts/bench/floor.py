"""The floor of the design: what one hop of a step cannot go below on these emulators.

One hop is a Firestore transaction (read one document, write it back) plus one Pub/Sub push
round trip (publish, then the emulator POSTs the message to a subscriber). We time both against
the running local stack's emulators, with the same client settings the adapters use (the
publisher flushes after 5 ms, ``cloudagents.bootstrap.publisher_client``), and a tiny
threaded HTTP receiver standing in for a service.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scripts.bench.common import summarize

from cloudagents.bootstrap import firestore_client, publisher_client
from cloudagents.local.emulators import free_port


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.arrived = threading.Event()
        self.arrived_at = 0.0


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        self.server.arrived_at = time.perf_counter()
        self.server.arrived.set()
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def firestore_transactions(project: str, n: int) -> list[float]:
    from google.cloud import firestore

    db = firestore_client(project)
    ref = db.collection("bench_floor").document(f"doc-{uuid.uuid4().hex[:8]}")
    await ref.set({"n": 0})

    @firestore.async_transactional
    async def bump(transaction: Any) -> None:
        snap = await ref.get(transaction=transaction)
        transaction.set(ref, {"n": (snap.to_dict() or {}).get("n", 0) + 1})

    timings = []
    for _ in range(n):
        started = time.perf_counter()
        await bump(db.transaction())
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def push_round_trips(project: str, n: int) -> list[float]:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    port = free_port()
    receiver = _Receiver(port)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    publisher = publisher_client()
    subscriber = pubsub_v1.SubscriberClient()
    suffix = uuid.uuid4().hex[:8]
    topic = publisher.topic_path(project, f"bench-floor-{suffix}")
    subscription = subscriber.subscription_path(project, f"bench-floor-{suffix}")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(
        request={
            "name": subscription,
            "topic": topic,
            "push_config": {"push_endpoint": f"http://127.0.0.1:{port}/push"},
            "ack_deadline_seconds": 60,
        }
    )
    timings = []
    try:
        for _ in range(n):
            receiver.arrived.clear()
            started = time.perf_counter()
            publisher.publish(topic, b'{"run_id":"floor","seq":0}').result(timeout=30)
            if not receiver.arrived.wait(timeout=30):
                raise TimeoutError("the Pub/Sub emulator did not push within 30 s")
            timings.append((receiver.arrived_at - started) * 1000)
    finally:
        with contextlib.suppress(Exception):
            subscriber.delete_subscription(subscription=subscription)
            publisher.delete_topic(topic=topic)
        receiver.shutdown()
        receiver.server_close()
    return timings


def measure(project: str, n: int = 40, warmup: int = 5) -> dict[str, Any]:
    txn = asyncio.run(firestore_transactions(project, n + warmup))[warmup:]
    push = push_round_trips(project, n + warmup)[warmup:]
    txn_s, push_s = summarize(txn), summarize(push)
    return {
        "firestore_transaction_ms": txn_s,
        "pubsub_push_round_trip_ms": push_s,
        "floor_ms": txn_s["median"] + push_s["median"],
    }
