"""Cost per step: every billable operation of K runs, counted by the adapters, priced.

``python -m scripts.bench.cost --runs K`` runs in the environment of a started local stack (its
emulator variables). All five services run IN THIS PROCESS, each app (``create_asgi_app``, as
functions-framework builds it) on its own uvicorn server on a free loopback port, under their
own workspace (``benchcost``: its own topics and push subscriptions, created here), so the
emulators push to them exactly as they push to Cloud Run, and ``cloudagents.metrics`` (counted
inside the Firestore, Pub/Sub, Cloud Storage and Cloud Tasks adapters) sees every operation of a
run: the ``POST /runs``, the intent, every step, tool call, snapshot and audit record. The bench
waits for the runs through its own Firestore client (uncounted), then for the message flow to go
quiet, and divides by the steps.

The model call itself is excluded (the agent is ``scripted``); so are Cloud Run compute, network
egress, storage at rest and Firestore index-entry reads. See ``PRICES`` for the rates and the
assumptions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
import uuid
from collections import Counter
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from functions_framework.aio import create_asgi_app
from scripts.bench.common import STEPS, USER_MESSAGE, cloudagents_agent, emit, progress

from cloudagents import metrics
from cloudagents.bootstrap import get_deps, reset_deps
from cloudagents.local.emulators import free_ports
from cloudagents.local.stack import create_topology
from cloudagents.topology import SERVICES, Topology, build_topology

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = "benchcost"

# List prices in USD, as of 2026-11-22 (the date this table was written), from the Google Cloud
# pricing pages for each product (Firestore Standard edition, Pub/Sub, Cloud Storage Standard
# class, Cloud Tasks). Free tiers are ignored: a deployment running millions of steps is past them.
PRICES: dict[str, dict[str, Any]] = {
    "firestore.read": {
        "usd": 0.06 / 100_000,
        "unit": "document read",
        "note": "$0.06 per 100k (the rate issue 7 gives for us-central1; it is also the nam5 "
        "multi-region rate; Google's location table lists regional us-central1 at $0.03)",
    },
    "firestore.write": {
        "usd": 0.18 / 100_000,
        "unit": "document write",
        "note": "$0.18 per 100k (regional us-central1: $0.09)",
    },
    "firestore.delete": {
        "usd": 0.02 / 100_000,
        "unit": "document delete",
        "note": "$0.02 per 100k (regional us-central1: $0.01); TTL deletes of audit_log records "
        "are billed as deletes",
    },
    "pubsub.bytes": {
        "usd": 40.0 / 2**40,
        "unit": "byte of publish or delivery throughput",
        "note": "$40 per TiB; at least 1000 bytes per publish request and per push request; "
        "assumed one message per publish request (the publisher may batch a step's messages, "
        "which would bill less)",
    },
    "gcs.class_a": {
        "usd": 0.005 / 1_000,
        "unit": "Class A operation (object write)",
        "note": "$0.005 per 1k, Standard storage in a region",
    },
    "gcs.class_b": {
        "usd": 0.0004 / 1_000,
        "unit": "Class B operation (object read)",
        "note": "$0.0004 per 1k",
    },
    "tasks.create": {
        "usd": 0.40 / 1_000_000,
        "unit": "Cloud Tasks billable operation",
        "note": "$0.40 per million after the first million a month",
    },
}
PUBSUB_MIN_BYTES = 1000
PRICES_DATE = "2026-11-22"


def create_queues(topology: Any) -> None:
    """The bench workspace's Cloud Tasks queues (the stack's emulator was started with its own
    workspace's queues only); existing ones are kept."""
    from google.api_core import exceptions as gexc

    from cloudagents.bootstrap import tasks_client

    client = tasks_client()
    parent = f"projects/{topology.project}/locations/{topology.location}"
    for queue in topology.queues:
        with contextlib.suppress(gexc.AlreadyExists):
            client.create_queue(parent=parent, queue={"name": f"{parent}/queues/{queue.name}"})


def forget_push_subscriptions(topology: Any) -> None:
    """Delete the bench workspace's push subscriptions left by an earlier run on this stack:
    they push to that run's ports (creating the topology keeps existing subscriptions)."""
    from google.api_core import exceptions as gexc

    from cloudagents.bootstrap import subscriber_client

    subscriber = subscriber_client()
    for sub in [*topology.subscriptions, *topology.dead_letter_sinks]:
        with contextlib.suppress(gexc.NotFound):
            subscriber.delete_subscription(
                subscription=subscriber.subscription_path(topology.project, sub.name)
            )


class CountingBus:
    """Wraps the Pub/Sub adapter to record each message's topic and billable size."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.by_topic: Counter[str] = Counter()
        self.bytes_by_topic: Counter[str] = Counter()

    async def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        message_id: str = await self.inner.publish(topic, data, attributes)
        # Billable volume: data + attribute keys and values + 20 bytes of timestamp + message id.
        size = len(data) + sum(len(k) + len(v) for k, v in attributes.items())
        size += 20 + len(message_id)
        self.by_topic[topic] += 1
        self.bytes_by_topic[topic] += size
        return message_id


class CountingAudit:
    """Counts audit records: Firestore's TTL deletes each one later (a billed delete)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.records = 0

    async def record_audit(self, record: Any) -> None:
        await self.inner.record_audit(record)
        self.records += 1

    async def list_audit(self, limit: int = 100) -> Any:
        return await self.inner.list_audit(limit)


def consumers_per_topic(topology: Topology) -> Counter[str]:
    """Subscriptions per topic (push and pull): each receives every message once."""
    consumers: Counter[str] = Counter()
    for sub in topology.subscriptions:
        consumers[sub.topic] += 1
    for _name, topic in topology.pull_subscriptions:
        consumers[topic] += 1
    return consumers


async def serve(apps: dict[str, Any], ports: dict[str, int]) -> list[uvicorn.Server]:
    servers = []
    for name, app in apps.items():
        config = uvicorn.Config(
            app, host="127.0.0.1", port=ports[name], log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        servers.append(server)
        asyncio.get_running_loop().create_task(server.serve())
    deadline = time.monotonic() + 30
    while not all(s.started for s in servers):
        if time.monotonic() > deadline:
            raise RuntimeError("the in-process services did not start")
        await asyncio.sleep(0.05)
    return servers


async def wait_finished(db: Any, run_ids: list[str], within: float) -> list[dict[str, Any]]:
    """Each run's document once finished, read with an uncounted Firestore client."""
    deadline = time.monotonic() + within
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(run_ids):
        for run_id in run_ids:
            if run_id in done:
                continue
            snap = await db.collection("agent_runs").document(run_id).get()
            data = snap.to_dict() if snap.exists else None
            if data and data.get("status") == "finished":
                done[run_id] = data
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(run_ids) - len(done)} runs did not finish in {within}s")
        await asyncio.sleep(0.1)
    return [done[r] for r in run_ids]


async def wait_quiet(bus: CountingBus, quiet: float = 2.0, within: float = 30.0) -> None:
    """Until no operation has been counted for ``quiet`` seconds (last snapshots, audits)."""
    deadline = time.monotonic() + within
    last = (metrics.snapshot(), sum(bus.by_topic.values()))
    since = time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = (metrics.snapshot(), sum(bus.by_topic.values()))
        if now != last:
            last, since = now, time.monotonic()


def price(per_step: dict[str, float], pubsub_bytes_per_step: float) -> dict[str, Any]:
    """Dollars per million steps, by line."""
    million = 1_000_000
    lines = {
        "firestore.read": per_step["firestore.read"] * PRICES["firestore.read"]["usd"],
        "firestore.write": per_step["firestore.write"] * PRICES["firestore.write"]["usd"],
        "firestore.write.live": per_step["firestore.write.live"] * PRICES["firestore.write"]["usd"],
        "firestore.delete": per_step["firestore.delete"] * PRICES["firestore.delete"]["usd"],
        "pubsub": pubsub_bytes_per_step * PRICES["pubsub.bytes"]["usd"],
        "gcs.write": per_step["gcs.write"] * PRICES["gcs.class_a"]["usd"],
        "gcs.read": per_step["gcs.read"] * PRICES["gcs.class_b"]["usd"],
        "tasks.create": per_step["tasks.create"] * PRICES["tasks.create"]["usd"],
    }
    usd = {k: v * million for k, v in lines.items()}
    regional = (
        per_step["firestore.read"] * 0.03 / 100_000
        + (per_step["firestore.write"] + per_step["firestore.write.live"]) * 0.09 / 100_000
        + per_step["firestore.delete"] * 0.01 / 100_000
    ) * million
    return {
        "usd_per_million_steps": usd,
        "total_usd_per_million_steps": sum(usd.values()),
        "firestore_usd_per_million_steps_at_regional_rates": regional,
    }


_LIBS = str(ROOT / "libs" / "cloudagents")
_ADAPTERS = str(ROOT / "libs" / "cloudagents" / "adapters")
_UNCOUNTED_FRAMES = ("metrics.py", "ops.py")


def call_site() -> str:
    """Where an operation comes from: the adapter method that made it and the first caller
    outside the adapters (``stores.get_run <- executor.handle_step``)."""
    frame = sys._getframe(2)
    adapter = caller = ""
    while frame is not None and not caller:
        path = frame.f_code.co_filename
        name = frame.f_code.co_qualname.replace(".<locals>", "")
        if (
            path.startswith(_LIBS)
            and not path.endswith(_UNCOUNTED_FRAMES)
            and not name.endswith(("comp>", "<genexpr>"))
        ):
            where = f"{Path(path).stem}.{name}"
            if path.startswith(_ADAPTERS):
                adapter = adapter or where
            else:
                caller = where
        frame = frame.f_back
    return f"{adapter or '?'} <- {caller or '?'}"


class AttributedCounter(Counter[str]):
    """``metrics.OPERATIONS``, also counting by the service whose request made the operation
    and by call site (``call_site``)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_service: dict[str, Counter[str]] = {}
        self.by_site: dict[str, Counter[str]] = {}

    def __setitem__(self, key: str, value: int) -> None:
        delta = value - self.get(key, 0)
        self.by_service.setdefault(SERVICE.get(), Counter())[key] += delta
        site = f"{SERVICE.get()}: {call_site()}"
        self.by_site.setdefault(key, Counter())[site] += delta
        super().__setitem__(key, value)

    def clear(self) -> None:
        super().clear()
        self.by_service.clear()
        self.by_site.clear()


SERVICE: ContextVar[str] = ContextVar("bench_service", default="bench")


def attributed(name: str, app: Any) -> Any:
    """The ASGI app, with ``SERVICE`` set to ``name`` while it handles a request."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        token = SERVICE.set(name)
        try:
            await app(scope, receive, send)
        finally:
            SERVICE.reset(token)

    return wrapped


class Harness:
    """The five services in this process, against the emulators, with counting wrappers."""

    def __init__(self, project: str) -> None:
        self.project = project
        location = os.environ.get("CLOUDAGENTS_LOCATION", "us-central1")
        self.topology = build_topology(project, WORKSPACE, location)
        self.ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.token = secrets.token_urlsafe(24)
        self.counter = AttributedCounter()
        self.servers: list[uvicorn.Server] = []

    async def start(self) -> None:
        os.environ.update(
            {
                "CLOUDAGENTS_WORKSPACE": WORKSPACE,
                "CLOUDAGENTS_BACKEND": "gcp",
                "CLOUDAGENTS_BROKER_URL": self.urls["handoff_broker"],
                "CLOUDAGENTS_API_URL": self.urls["api"],
                "CLOUDAGENTS_API_TOKENS": f"bench={self.token}",
                "CLOUDAGENTS_PUSH_AUTH": "off",
                "CLOUDAGENTS_TRACE_EXPORTER": "none",
                # Wake-up tasks come back to this bench's executor, not to the stack's.
                "CLOUDAGENTS_WAKE_URL": self.urls["run_executor"],
            }
        )
        await asyncio.to_thread(forget_push_subscriptions, self.topology)
        await asyncio.to_thread(create_topology, self.topology, self.urls)
        await asyncio.to_thread(create_queues, self.topology)
        metrics.OPERATIONS = self.counter
        reset_deps()
        deps = await get_deps("bench-cost")
        self.bus = CountingBus(deps.bus)
        self.audit = CountingAudit(deps.audit)
        deps.bus = self.bus
        deps.audit = self.audit
        apps = {
            name: attributed(name, create_asgi_app(name, str(ROOT / "services" / name / "main.py")))
            for name in SERVICES
        }
        self.servers = await serve(apps, self.ports)
        from google.cloud import firestore

        self.db = firestore.AsyncClient(project=self.project)
        headers = {"Authorization": f"Bearer {self.token}"}
        self.api = httpx.AsyncClient(base_url=self.urls["api"], headers=headers, timeout=30)

    async def stop(self) -> None:
        await self.api.aclose()
        for server in self.servers:
            server.should_exit = True
        await asyncio.sleep(0.5)
        with contextlib.suppress(Exception):
            self.db.close()

    async def batch(self, runs: int, steps: int) -> dict[str, Any]:
        """Register a fresh agent, then count everything ``runs`` sequential runs do."""
        agent_id = f"bench-cost-{uuid.uuid4().hex[:6]}"
        created = await self.api.post("/agents", json=cloudagents_agent(agent_id, steps))
        created.raise_for_status()
        await wait_quiet(self.bus, quiet=1.0)
        metrics.reset()
        self.bus.by_topic.clear()
        self.bus.bytes_by_topic.clear()
        self.audit.records = 0
        run_ids = []
        for i in range(runs):
            body = {"agent_id": agent_id, "message": USER_MESSAGE}
            response = await self.api.post("/runs", json=body)
            response.raise_for_status()
            run_ids.append(response.json()["run_id"])
            await wait_finished(self.db, run_ids[-1:], within=120)
            progress(f"cost: {steps}-step run {i + 1}/{runs} finished")
        finished = await wait_finished(self.db, run_ids, within=10)
        await wait_quiet(self.bus)
        return self.tally(finished, runs, steps)

    def tally(self, finished: list[dict[str, Any]], runs: int, steps: int) -> dict[str, Any]:
        bus, audit = self.bus, self.audit
        exits = Counter(str((run.get("result") or {}).get("exit")) for run in finished)
        iterations = sum(int((run.get("result") or {}).get("iterations", 0)) for run in finished)
        counted = Counter(metrics.snapshot())
        total_steps = runs * steps
        consumers = consumers_per_topic(self.topology)
        publishes = sum(bus.by_topic.values())
        deliveries = sum(n * consumers[topic] for topic, n in bus.by_topic.items())
        # Billable bytes: each publish request and each push/pull delivery at least 1000 bytes.
        billable = 0.0
        for topic, n in bus.by_topic.items():
            mean_size = bus.bytes_by_topic[topic] / n
            billable += n * max(mean_size, PUBSUB_MIN_BYTES) * (1 + consumers[topic])
        per_step = {
            "firestore.read": counted["firestore.read"] / total_steps,
            "firestore.write": counted["firestore.write"] / total_steps,
            # Live event documents (streamed chunks, the "calling model" status), counted apart
            # as designs/cost.md does, billed as writes.
            "firestore.write.live": counted["firestore.write.live"] / total_steps,
            # Nothing deletes on the hot path; each audit record is deleted later by its TTL.
            "firestore.delete": (counted["firestore.delete"] + audit.records) / total_steps,
            "pubsub.publish": publishes / total_steps,
            "pubsub.delivery": deliveries / total_steps,
            "gcs.write": counted["gcs.write"] / total_steps,
            "gcs.read": counted["gcs.read"] / total_steps,
            "tasks.create": counted["tasks.create"] / total_steps,
        }
        by_service = {
            service: {op: n / total_steps for op, n in sorted(ops.items()) if n}
            for service, ops in sorted(self.counter.by_service.items())
        }
        by_site = {
            op: {site: n / total_steps for site, n in sites.most_common() if n}
            for op, sites in sorted(self.counter.by_site.items())
            if op in ("firestore.read", "firestore.write", "firestore.write.live")
        }
        return {
            "runs": runs,
            "steps_per_run": steps,
            "exits": dict(exits),
            "model_calls": iterations,
            "counted": dict(counted),
            "audit_records": audit.records,
            "publishes_by_topic": dict(bus.by_topic),
            "mean_message_bytes": {t: bus.bytes_by_topic[t] / n for t, n in bus.by_topic.items()},
            "consumers_per_topic": {t: consumers[t] for t in bus.by_topic},
            "per_step": per_step,
            "per_step_by_service": {k: v for k, v in by_service.items() if v},
            "per_step_by_call_site": by_site,
            "pubsub_billable_bytes_per_step": billable / total_steps,
            **price(per_step, billable / total_steps),
        }


async def measure(runs: int, steps: int, long_steps: int) -> dict[str, Any]:
    harness = Harness(os.environ["GOOGLE_CLOUD_PROJECT"])
    await harness.start()
    try:
        result = await harness.batch(runs, steps)
        longer = await harness.batch(1, long_steps) if long_steps else None
    finally:
        await harness.stop()
    result["prices"] = PRICES
    result["prices_date"] = PRICES_DATE
    if longer is not None:
        result["longer_run"] = {
            "steps_per_run": long_steps,
            "per_step": longer["per_step"],
            "per_step_by_service": longer["per_step_by_service"],
            "per_step_by_call_site": longer["per_step_by_call_site"],
            "total_usd_per_million_steps": longer["total_usd_per_million_steps"],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument(
        "--long-steps", type=int, default=2 * STEPS, help="one longer run: how cost grows (0: no)"
    )
    parser.add_argument(
        "--sites", action="store_true", help="also print reads and writes per step by call site"
    )
    args = parser.parse_args()
    result = asyncio.run(measure(args.runs, args.steps, args.long_steps))
    if args.sites:
        print_sites(result)
    emit(result)


def print_sites(result: dict[str, Any]) -> None:
    """Reads and writes per step by service and call site, to stderr (stdout is the result)."""
    runs = [(result["steps_per_run"], result)]
    if result.get("longer_run"):
        runs.append((result["longer_run"]["steps_per_run"], result["longer_run"]))
    for steps, part in runs:
        per_step = part["per_step"]
        print(
            f"== {steps}-step run: per step "
            + ", ".join(
                f"{op} {per_step[op]:.2f}"
                for op in (
                    "firestore.read",
                    "firestore.write",
                    "firestore.write.live",
                    "pubsub.publish",
                    "tasks.create",
                    "gcs.write",
                )
            ),
            file=sys.stderr,
        )
        for op, sites in part["per_step_by_call_site"].items():
            print(f"  {op}", file=sys.stderr)
            for site, n in sites.items():
                print(f"    {n:6.2f}  {site}", file=sys.stderr)


if __name__ == "__main__":
    main()
