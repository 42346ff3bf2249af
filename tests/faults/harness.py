"""The machinery of the fault-injection suite: the stack, a duplicating push proxy, a service
supervisor, and the counters read back from Firestore.

Nothing here reaches into the services: faults are injected from outside (duplicate publishes,
replayed push requests, killed processes, crash points set through the environment) and the
outcome is counted from what the services wrote to Firestore and Cloud Storage.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import re
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cloudagents.adapters.firestore import steps as step_docs
from cloudagents.local.stack import LocalStack, StackState

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "faults-project"
WORKSPACE = "faults"
TOOL_MODULES = "cloudagents.builtin_tools,tests.faults.fault_tools"
LEDGER = "fault_ledger"
# A waiting run's wake-up comes this soon (production: 60 s), so recoveries fit in the suite.
WAKE_SECONDS = 10
# Tools-per-minute windows are this long here (production: 60 s), so a backlog of rate-limited
# calls crosses many windows in seconds.
RATE_WINDOW_SECONDS = 10
# The api's principals: the first is the suite's own; alice and bob decide approvals.
APPROVER_TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef"}


def scale() -> str:
    """``default`` (the normal ``pytest``) or ``long`` (``make faults``: FAULTS_SCALE=long)."""
    return "long" if os.environ.get("FAULTS_SCALE", "").lower() == "long" else "default"


def sized(default: int, long: int) -> int:
    return long if scale() == "long" else default


# --------------------------------------------------------------------------------------------
# The stack


class FaultStack:
    """A ``LocalStack`` with the suite's tools loaded, and the clients the tests use."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.local = LocalStack(
            project=PROJECT,
            workspace=WORKSPACE,
            log_dir=log_dir,
            extra_env={
                "CLOUDAGENTS_TOOL_MODULES": TOOL_MODULES,
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
                ),
                # Spans are not what this suite measures; writing them costs CPU on 2 cores.
                "CLOUDAGENTS_TRACE_EXPORTER": "none",
                # A tool call's lease = its timeout (10 s for the paying tools) + this: a call
                # whose delivery was killed is taken over that much later.
                "CLOUDAGENTS_TOOL_LEASE_GRACE_SECONDS": "5",
                "CLOUDAGENTS_WAKE_SECONDS": str(WAKE_SECONDS),
                "CLOUDAGENTS_RATE_WINDOW_SECONDS": str(RATE_WINDOW_SECONDS),
                "CLOUDAGENTS_API_TOKENS": ",".join(
                    [
                        "faults=faults-token-0123456789abcdef",
                        *(f"{who}={token}" for who, token in APPROVER_TOKENS.items()),
                    ]
                ),
            },
        )
        self._saved_env: dict[str, str] = {}
        self.state: StackState | None = None
        self.db: Any = None
        self.publisher: Any = None
        self.subscriber: Any = None
        self.api: httpx.Client | None = None
        self.original_endpoints: dict[str, str] = {}

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> FaultStack:
        self._saved_env = dict(os.environ)
        self.state = self.local.start()
        from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]

        self.db = firestore.Client(project=PROJECT)
        self.publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.005)
        )
        self.subscriber = pubsub_v1.SubscriberClient()
        self.api = httpx.Client(
            base_url=self.state.api_url,
            timeout=60.0,
            headers={"Authorization": f"Bearer {self.state.api_token}"},
        )
        for sub in self.local.topology.subscriptions:
            self.original_endpoints[sub.name] = (
                self.local.services[sub.service].url.rstrip("/") + sub.path
            )
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.api is not None:
                self.api.close()
        self.local.stop()
        os.environ.clear()
        os.environ.update(self._saved_env)

    # helpers -----------------------------------------------------------------------------
    @property
    def topology(self) -> Any:
        return self.local.topology

    def topic(self, role: str) -> str:
        return str(self.topology.topic(role))

    def topic_path(self, topic: str) -> str:
        return str(self.publisher.topic_path(PROJECT, topic))

    def publish(self, topic: str, data: bytes, **attributes: str) -> str:
        future = self.publisher.publish(self.topic_path(topic), data, **attributes)
        return str(future.result(timeout=60))

    def publish_many(self, items: Iterable[tuple[str, bytes]]) -> list[str]:
        futures = [self.publisher.publish(self.topic_path(t), d) for t, d in items]
        return [str(f.result(timeout=60)) for f in futures]

    def register(self, definition: dict[str, Any]) -> None:
        assert self.api is not None
        response = self.api.post("/agents", json=definition)
        assert response.status_code == 201, response.text

    def start_http(self, agent_id: str, message: str, run_id: str) -> None:
        assert self.api is not None
        response = self.api.post(
            "/runs", json={"agent_id": agent_id, "message": message, "run_id": run_id}
        )
        assert response.status_code == 202, response.text

    def intent(self, run_id: str, agent_id: str, message: str) -> bytes:
        from cloudagents.domain.intents import IntentionMessage

        return (
            IntentionMessage.for_run(
                run_id=run_id, agent_id=agent_id, message=message, source_agent="faults"
            )
            .model_dump_json()
            .encode()
        )

    def set_push_endpoint(self, subscription: str, url: str) -> None:
        path = self.subscriber.subscription_path(PROJECT, subscription)
        self.subscriber.modify_push_config(
            request={"subscription": path, "push_config": {"push_endpoint": url}}
        )

    def restore_push_endpoints(self) -> None:
        for name, url in self.original_endpoints.items():
            self.set_push_endpoint(name, url)

    # reading runs ------------------------------------------------------------------------
    def snapshot(self, run_id: str) -> dict[str, Any] | None:
        """The run's newest context snapshot pointer, as ``GET /runs/{id}`` finds it in the
        bucket (since run version 6 no run document holds it)."""
        pointer: dict[str, Any] | None = self.api.get(f"/runs/{run_id}").json()["snapshot"]
        return pointer

    def run_docs(self, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        refs = [self.db.collection("agent_runs").document(r) for r in run_ids]
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(refs), 300):
            for snap in self.db.get_all(refs[i : i + 300]):
                if snap.exists:
                    found[snap.id] = snap.to_dict()
        return found

    def wait_finished(
        self,
        run_ids: Iterable[str],
        timeout: float,
        *,
        follow_handoffs: bool = True,
        poll: float = 0.5,
    ) -> dict[str, dict[str, Any]]:
        """Wait until every run (and, with ``follow_handoffs``, every handoff target run) is
        finished; returns the run documents, or raises naming the runs that did not finish."""
        wanted = set(run_ids)
        started = time.monotonic()
        deadline = started + timeout
        report = started + 30
        while True:
            docs = self.run_docs(wanted)
            if time.monotonic() > report:
                report += 30
                states = Counter(str((d.get("status"), d.get("seq"))) for d in docs.values())
                print(
                    f"[faults] {time.monotonic() - started:.0f}s: {len(wanted)} runs {dict(states)}",
                    file=sys.stderr,
                    flush=True,
                )
            if follow_handoffs:
                children = {c for d in docs.values() for c in d.get("child_run_ids") or []}
                if children - wanted:
                    wanted |= children
                    continue
            unfinished = sorted(
                r for r in wanted if (docs.get(r) or {}).get("status") != "finished"
            )
            orphans = sorted(
                r
                for r, d in docs.items()
                if follow_handoffs
                and d.get("status") == "finished"
                and (d.get("result") or {}).get("exit") == "HANDOFF"
                and not d.get("child_run_ids")
            )
            if not unfinished and not orphans:
                return docs
            if time.monotonic() > deadline:
                detail = {r: (docs.get(r) or {}).get("status", "missing") for r in unfinished}
                raise AssertionError(
                    f"{len(unfinished)} runs not finished after {timeout}s, {len(orphans)} "
                    f"handoffs without a target run: {dict(list(detail.items())[:10])} "
                    f"{orphans[:10]}"
                )
            time.sleep(poll)

    def sub(self, run_id: str, collection: str) -> list[dict[str, Any]]:
        ref = self.db.collection("agent_runs").document(run_id).collection(collection)
        return [d.to_dict() | {"_id": d.id} for d in ref.stream()]

    def model_calls(self, run_id: str) -> list[dict[str, Any]]:
        """The run's model call documents, each with ``applied`` as the store reads it: named
        by its step's interaction record (version 2), or marked on the call's own document (the
        layout before it)."""
        named = {i.get("applied_model_call") for i in self.interactions(run_id)}
        return [
            c | {"applied": bool(c.get("applied")) or c.get("attempt_id") in named}
            for c in self.sub(run_id, "model_calls")
        ]

    def transcript(self, run_id: str) -> list[dict[str, Any]]:
        """The run's messages as the store reads them: its step documents, and the previous
        layout's message documents (``adapters/firestore/steps.py``)."""
        found = step_docs.transcript(self.sub(run_id, "steps"), self.sub(run_id, "messages"))
        return [{"i": i, **m.model_dump(mode="json")} for i, m in enumerate(found)]

    def interactions(self, run_id: str) -> list[dict[str, Any]]:
        from google.cloud import firestore

        query = self.db.collection("interactions").where(
            filter=firestore.FieldFilter("run_id", "==", run_id)
        )
        legacy = [d.to_dict() for d in query.stream()]
        found = step_docs.interactions(self.sub(run_id, "steps"), legacy)
        return [i.model_dump(mode="json") for i in found]

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's events as the store reads them (live ones, and those in step documents)."""
        found = step_docs.events(self.sub(run_id, "steps"), self.sub(run_id, "events"))
        return [e.model_dump(mode="json") for e in found]

    def ledger(self, tool: str | None = None) -> list[dict[str, Any]]:
        from google.cloud import firestore

        query: Any = self.db.collection(LEDGER)
        if tool:
            query = query.where(filter=firestore.FieldFilter("tool", "==", tool))
        return [d.to_dict() for d in query.stream()]

    def locked_documents(self, run_id: str) -> list[str]:
        """Documents of the run that a plain write cannot touch (the emulator answers
        ``409 Transaction lock timeout`` after 2 s): a lock some transaction has not released.
        The probe rewrites one field with its current value."""
        from google.api_core import exceptions as gexc

        run_ref = self.db.collection("agent_runs").document(run_id)
        refs = [run_ref, *(d.reference for d in run_ref.collection("tool_calls").stream())]
        locked = []
        for ref in refs:
            snap = ref.get()
            if not snap.exists:
                continue
            try:
                ref.update({"status": snap.get("status")})
            except gexc.Aborted:
                locked.append(ref.path)
        return locked

    def spend(self, agent_ids: Iterable[str]) -> float:
        """USD in the sharded cost ledger of these agents, all days (``budgets/{agent}:{day}``
        has no fields of its own: only its ``shards`` sub-collection)."""
        agents = set(agent_ids)
        total = 0.0
        for day_doc in self.db.collection("budgets").list_documents():
            if day_doc.id.rsplit(":", 1)[0] in agents:
                for shard in day_doc.collection("shards").stream():
                    total += float(shard.to_dict().get("usd", 0.0))
        return total

    def service_log(self, name: str) -> str:
        return Path(self.local.services[name].log_path).read_text(errors="replace")

    def woken_runs(self) -> dict[str, list[str]]:
        """Run id -> what its wake-ups did (the executor logs each recovery as "run woken")."""
        woken: dict[str, list[str]] = defaultdict(list)
        for line in self.service_log("run_executor").splitlines():
            if '"run woken"' in line:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    woken[entry["run_id"]].append(entry["status"])
        return dict(woken)

    def dead_letter_docs(self, run_ids: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(run_ids)
        return [
            d.to_dict()
            for d in self.db.collection("dead_letters").stream()
            if (d.to_dict() or {}).get("run_id") in wanted
        ]

    def parked(self, subscription: str) -> int:
        """Messages Pub/Sub moved to ``subscription``'s dead-letter topic (they are kept by the
        ``-dead-letter-pull`` subscription); pulled and acknowledged."""
        path = self.subscriber.subscription_path(PROJECT, f"{subscription}-dead-letter-pull")
        response = self.subscriber.pull(
            request={"subscription": path, "max_messages": 100}, timeout=10
        )
        if response.received_messages:
            self.subscriber.acknowledge(
                request={
                    "subscription": path,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
        return len(response.received_messages)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def normalise(value: Any, run_id: str, placeholder: str = "RUN") -> Any:
    """``value`` with this run's id replaced, so transcripts of two runs compare."""
    text = json.dumps(value, sort_keys=True)
    return json.loads(text.replace(run_id, placeholder))


# --------------------------------------------------------------------------------------------
# Firestore's documented storage size of a document
# https://cloud.google.com/firestore/docs/storage-size


def _string_size(text: str) -> int:
    return len(text.encode("utf-8")) + 1


def value_size(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 8
    if isinstance(value, dt.datetime):
        return 8
    if isinstance(value, str):
        return _string_size(value)
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(_string_size(str(k)) + value_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(value_size(v) for v in value)
    if hasattr(value, "latitude"):
        return 16
    if hasattr(value, "path"):  # a DocumentReference
        return document_name_size(str(value.path))
    return _string_size(str(value))


def document_name_size(path: str) -> int:
    """``agent_runs/r1/messages/000001`` -> the size of its full name, per the formula."""
    return sum(_string_size(part) for part in path.split("/")) + 16


def document_size(path: str, data: dict[str, Any]) -> int:
    return document_name_size(path) + value_size(data) + 32


# --------------------------------------------------------------------------------------------
# A push proxy: every push delivery of selected subscriptions goes through it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ProxyStats:
    deliveries: Counter[str] = field(default_factory=Counter)  # message id -> pushes received
    forwarded: int = 0
    dropped: int = 0
    replays: int = 0
    republished: int = 0
    redelivered: int = 0
    abandoned: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    responses: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))


def logical_key(data: bytes) -> str:
    """What makes two messages the same logical message: their JSON without ``timestamp``
    (the broker re-publishes a claimed offer's intent with a fresh timestamp each time)."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return hashlib.sha256(data).hexdigest()
    if isinstance(value, dict):
        value.pop("timestamp", None)
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _push_envelope(body: bytes) -> tuple[str, bytes, dict[str, str]]:
    """A Pub/Sub push body's message id, data and attributes (the whole body as data if it is
    not an envelope)."""
    try:
        envelope = json.loads(body)
        message = envelope.get("message", {})
        message_id = str(message.get("messageId") or message.get("message_id") or "")
        return (
            message_id,
            base64.b64decode(message.get("data") or ""),
            message.get("attributes") or {},
        )
    except (ValueError, AttributeError):
        return "", body, {}


def _push_data(body: bytes) -> bytes:
    return _push_envelope(body)[1]


class PushProxy:
    """A tiny HTTP server in a thread that Pub/Sub pushes to instead of the services.

    ``POST /{subscription}`` is forwarded to the subscription's real endpoint. With
    ``duplicate=True`` each logical message (first sight of its payload on a subscription) is
    delivered two or three times in all: handler-level replays of the same push body (some
    concurrent with the first delivery, some after it) and a duplicate publish of the same data
    to the same topic (attribute ``faultdup=1``; such copies and payloads seen before are
    forwarded once). The proxy answers 2xx only if every copy it forwarded was acknowledged.
    """

    def __init__(self, stack: FaultStack, *, duplicate: bool, seed: int = 1) -> None:
        self.stack = stack
        self.duplicate = duplicate
        self.random = random.Random(seed)
        self.stats = ProxyStats()
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.max_redeliveries = 60
        self.takeover = True
        # drop(subscription, data) -> True: acknowledge the push without delivering it (lost).
        self.drop: Any = None
        self.concurrent_share = 0.25  # of duplicated messages whose replays race the first copy
        self._redelivering: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._background_limit = asyncio.Semaphore(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.topics = {s.name: s.topic for s in stack.topology.subscriptions}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None

    # asgi ----------------------------------------------------------------------------------
    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._client = httpx.AsyncClient(
                        timeout=httpx.Timeout(620.0, connect=5.0),
                        limits=httpx.Limits(max_connections=400, max_keepalive_connections=100),
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._client is not None:
                        await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        subscription = scope["path"].strip("/")
        status, payload = await self.handle(subscription, body)
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _forward(self, subscription: str, body: bytes) -> tuple[int, dict[str, Any]]:
        assert self._client is not None
        target = self.stack.original_endpoints[subscription]
        try:
            response = await self._client.post(
                target, content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            return 503, {"status": "proxy-error", "error": type(exc).__name__}
        try:
            payload = response.json()
        except ValueError:
            payload = {"status": "non-json", "text": response.text[:200]}
        with self.lock:
            self.stats.forwarded += 1
            self.stats.statuses[response.status_code] += 1
        return response.status_code, payload

    async def handle(self, subscription: str, body: bytes) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._handle(subscription, body)
        finally:
            with self.lock:
                self.in_flight -= 1

    async def _handle(self, subscription: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if subscription not in self.topics:
            return 404, {"error": f"unknown subscription {subscription}"}
        message_id, data, attributes = _push_envelope(body)
        if self._dropped(subscription, data):
            return 200, {"status": "dropped-by-proxy"}
        key = subscription + ":" + logical_key(data)
        with self.lock:
            self.stats.deliveries[message_id] += 1
            first_sight = key not in self.seen and attributes.get("faultdup") != "1"
            self.seen.add(key)
            copies = self.random.choice((2, 3)) if (self.duplicate and first_sight) else 1
            concurrent = self.random.random() < self.concurrent_share
            republish = copies == 3 or (copies == 2 and self.random.random() < 0.5)
        if republish:
            self._republish(subscription, data, attributes)
        replays = copies - 1 - (1 if republish else 0)
        with self.lock:
            self.stats.replays += replays
        now = 1 + (replays if concurrent else 0)
        if not self.takeover:
            results = await asyncio.gather(
                *(self._deliver(subscription, message_id, body) for _ in range(now))
            )
            worst = max(results, key=lambda r: r[0])
            return worst if worst[0] >= 300 else results[0]
        for _ in range(now):
            self._spawn(self._deliver(subscription, message_id, body))
        for _ in range(replays if not concurrent else 0):
            self._spawn(self._later(subscription, message_id, body))
        return 200, {"status": "accepted-by-proxy"}

    async def _deliver(
        self, subscription: str, message_id: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Forward one copy. Without ``takeover`` the service's answer goes back to Pub/Sub as
        is (and Pub/Sub redelivers a 5xx). With ``takeover`` (the default) the proxy has already
        acknowledged the push and delivers in the background, redelivering a 5xx itself: the
        emulator pushes each subscription from very few threads, so a slow or nacked push
        would hold back the whole subscription (real Pub/Sub pushes many messages at once)."""
        async with self._background_limit:
            status, payload = await self._forward(subscription, body)
        self._record(message_id, status, payload)
        if status >= 300 and self.takeover:
            self._spawn(self._redeliver(subscription, message_id, body))
        return status, payload

    async def _redeliver(self, subscription: str, message_id: str, body: bytes) -> None:
        """Redeliver until acknowledged, as Pub/Sub does: one loop per message (a replayed copy
        of a message that is already being redelivered adds nothing), exponential backoff with
        full jitter (copies that failed together must not retry in lockstep)."""
        key = f"{subscription}/{message_id}"
        with self.lock:
            if key in self._redelivering:
                return
            self._redelivering.add(key)
        try:
            ceiling = 0.5
            for _ in range(self.max_redeliveries):
                await asyncio.sleep(self.random.uniform(0.05, ceiling))
                ceiling = min(ceiling * 2, 30.0)
                if self._dropped(subscription, _push_data(body)):
                    return  # a redelivery is a delivery: the drop rule applies to it too
                with self.lock:
                    self.stats.redelivered += 1
                async with self._background_limit:
                    status, payload = await self._forward(subscription, body)
                self._record(message_id, status, payload)
                if status < 300:
                    return
            with self.lock:
                self.stats.abandoned.append(message_id)
        finally:
            with self.lock:
                self._redelivering.discard(key)

    def _dropped(self, subscription: str, data: bytes) -> bool:
        """Whether ``drop`` loses this delivery (acknowledged, never forwarded). Asked for every
        delivery, the proxy's own redeliveries of a failed push included: a redelivery that
        skipped it would recover a message the test means to be recovered only by a wake-up."""
        if self.drop is None or not self.drop(subscription, data):
            return False
        with self.lock:
            self.stats.dropped += 1
        return True

    async def _later(self, subscription: str, message_id: str, body: bytes) -> None:
        """A replay of a message the service already acknowledged, a little later."""
        await asyncio.sleep(self.random.uniform(0.3, 2.0))
        await self._deliver(subscription, message_id, body)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def busy(self) -> bool:
        return bool(self._background) or self.in_flight > 0

    def _record(self, message_id: str, status: int, payload: dict[str, Any]) -> None:
        with self.lock:
            self.stats.responses[message_id].append({"code": status, **payload})

    def _republish(self, subscription: str, data: bytes, attributes: dict[str, str]) -> None:
        topic = self.topics[subscription]
        attrs = {**{str(k): str(v) for k, v in attributes.items()}, "faultdup": "1"}
        self.stack.publisher.publish(self.stack.topic_path(topic), data, **attrs)
        with self.lock:
            self.stats.republished += 1

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> PushProxy:
        import uvicorn

        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("push proxy did not start")
            time.sleep(0.05)
        return self

    def route(self, subscriptions: Iterable[str]) -> None:
        for name in subscriptions:
            self.stack.set_push_endpoint(name, f"{self.url}/{name}")

    def stop(self) -> None:
        self.stack.restore_push_endpoints()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


@contextlib.contextmanager
def proxied(stack: FaultStack, *, duplicate: bool, seed: int = 1) -> Iterator[PushProxy]:
    proxy = PushProxy(stack, duplicate=duplicate, seed=seed).start()
    try:
        proxy.route(stack.original_endpoints)
        yield proxy
    finally:
        proxy.stop()


# --------------------------------------------------------------------------------------------
# The supervisor: restarts any service that died


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def process_dead(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    state = _process_state(pid)
    return state is None or state in ("Z", "X")


CRASH_LINE = re.compile(r"cloudagents: injected crash at ([a-z_.]+)")


class Supervisor:
    """A thread that restarts every service whose process died (``LocalStack.restart_service``)
    and counts the injected crashes the services logged."""

    def __init__(self, stack: FaultStack, *, interval: float = 0.25) -> None:
        self.stack = stack
        self.interval = interval
        self.restarts: Counter[str] = Counter()
        self.kills: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._log_offsets: dict[str, int] = {}
        self.crashes: Counter[str] = Counter()
        self.crashes_by_service: Counter[str] = Counter()

    def start(self) -> Supervisor:
        for name, service in self.stack.local.services.items():
            self._log_offsets[name] = Path(service.log_path).stat().st_size
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._scan_logs()

    def kill(self, name: str) -> None:
        """SIGKILL a whole service (any line); the loop brings it back."""
        import signal

        with self._lock:
            pid = self.stack.local.services[name].pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self.kills[name] += 1

    def _scan_logs(self) -> None:
        for name, service in self.stack.local.services.items():
            path = Path(service.log_path)
            offset = self._log_offsets.get(name, 0)
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            self._log_offsets[name] = offset + len(chunk)
            for match in CRASH_LINE.finditer(chunk.decode(errors="replace")):
                self.crashes[match.group(1)] += 1
                self.crashes_by_service[name] += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            for name in list(self.stack.local.services):
                with self._lock:
                    service = self.stack.local.services[name]
                    if not process_dead(service.pid):
                        continue
                    try:
                        self.stack.local.restart_service(name)
                        self.restarts[name] += 1
                    except Exception as exc:  # keep supervising; the test reports it
                        self.errors.append(f"{name}: {exc}")
            self._scan_logs()
            self._stop.wait(self.interval)
