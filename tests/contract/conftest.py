"""The same suites over every adapter of a port: the in-memory fake and the real one on emulators.

Every test takes a store (or harness) fixture parametrized over ``BACKENDS``; the ``emulator``
variant needs the four emulators, started once by ``emulator_stack`` (only if an emulator test
is selected) and stopped when the last contract test is done. The fixture is package-scoped, not
session-scoped, so the emulators and their environment variables do not outlive this suite in a
full run; with the session-scoped event loop that is still "once per run" for this package.
Tests use fresh uuid-based ids, so the shared emulators need no cleanup between tests.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from unittest.mock import patch

import pytest

from cloudagents.adapters.cloud_tasks import CloudTasksQueue
from cloudagents.adapters.firestore.budgets import FirestoreCostLedger, FirestoreRateLimiter
from cloudagents.adapters.firestore.stores import (
    FirestoreAgentStore,
    FirestoreDeadLetterStore,
    FirestoreHandoffStore,
    FirestoreRunStore,
)
from cloudagents.adapters.gcs import GcsBlobStore
from cloudagents.adapters.memory.budgets import InMemoryCostLedger, InMemoryRateLimiter
from cloudagents.adapters.memory.messaging import (
    InMemoryBlobStore,
    InMemoryEventBus,
    InMemoryTaskQueue,
)
from cloudagents.adapters.memory.stores import (
    InMemoryAgentStore,
    InMemoryDeadLetterStore,
    InMemoryHandoffStore,
    InMemoryRunStore,
)
from cloudagents.adapters.pubsub import PubSubEventBus
from cloudagents.bootstrap import (
    firestore_client,
    publisher_client,
    storage_client,
    tasks_client,
)
from cloudagents.domain.errors import TransientError
from cloudagents.domain.events import ToolCallEvent
from cloudagents.domain.handoffs import HandoffOffer
from cloudagents.domain.messages import Message, ToolCall
from cloudagents.domain.results import LoopExit, RunProgress
from cloudagents.domain.runs import (
    OutboxMessage,
    PendingItem,
    RunRecord,
    RunStatus,
    ToolCallRecord,
)
from cloudagents.domain.steps import StepCommit
from cloudagents.local.emulators import EmulatorStack, start_stack
from cloudagents.ports.budgets import CostLedger, RateLimiter
from cloudagents.ports.bus import BlobStore, EventBus, TaskQueue
from cloudagents.ports.stores import (
    AgentStore,
    DeadLetterStore,
    HandoffStore,
    RunStore,
)

PROJECT = "contract-project"
LOCATION = "us-central1"
QUEUE = "contract-queue"
BUCKET = "contract-bucket"
BACKENDS = ["memory", "emulator"]

T = TypeVar("T")


def xfail_on(
    backend: str,
    which: str,
    reason: str,
    request: pytest.FixtureRequest,
    *,
    raises: type[BaseException] | tuple[type[BaseException], ...] | None = None,
) -> None:
    """Expect this test to fail on ``which`` backend only: a known adapter bug, see ``reason``."""
    if backend == which:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason, raises=raises))


CONTENTION = "Failed to commit transaction"


class ContentionRetried(UserWarning):
    """Some racing calls lost to transaction contention and had to be redelivered."""


async def race(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` concurrently and return their results in order.

    A call that loses to contention on Firestore (the adapter raises ``TransientError`` once
    every transaction attempt has lost; the emulator resolves lock conflicts by timing out, so it
    loses races more often than production) is run again on its own, the way Pub/Sub would redeliver the
    message whose handler failed. The promises checked on the results (one winner, nothing
    applied twice) must hold either way.
    """
    results = await asyncio.gather(*(call() for call in calls), return_exceptions=True)
    settled: list[T] = []
    redelivered = 0
    for call, result in zip(calls, results, strict=True):
        if isinstance(result, TransientError) or (
            isinstance(result, ValueError) and CONTENTION in str(result)
        ):
            redelivered += 1
            settled.append(await call())
        elif isinstance(result, BaseException):
            raise result
        else:
            settled.append(result)
    if redelivered:
        warnings.warn(
            f"{redelivered} of {len(calls)} racing calls gave up on Firestore contention "
            "(every transaction attempt lost) and were run again, as Pub/Sub would redeliver them",
            ContentionRetried,
            stacklevel=2,
        )
    return settled


def new_id(prefix: str) -> str:
    """A fresh id (lowercase, valid as an agent id too)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# --------------------------------------------------------------------------------------------
# The emulators and the clients over them (once for this package, only when needed)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def emulator_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorStack]:
    log_dir = tmp_path_factory.mktemp("contract-emulators")
    stack = start_stack(
        PROJECT,
        log_dir,
        location=LOCATION,
        queue_names=[QUEUE],
        tasks_max_retries=3,
        tasks_quiet=True,
    )
    try:
        with patch.dict(os.environ, stack.env()):
            yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="package")
async def firestore_db(emulator_stack: EmulatorStack) -> AsyncIterator[Any]:
    """The async Firestore client, built inside the (session-scoped) running loop."""
    db = firestore_client(PROJECT)
    yield db
    db.close()


@pytest.fixture(scope="package")
def pubsub_clients(emulator_stack: EmulatorStack) -> Iterator[tuple[Any, Any]]:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    publisher = publisher_client()
    subscriber = pubsub_v1.SubscriberClient()
    yield publisher, subscriber
    subscriber.close()
    publisher.stop()


@pytest.fixture(scope="package")
def gcs_client(emulator_stack: EmulatorStack) -> Any:
    client = storage_client(PROJECT)
    client.create_bucket(BUCKET)
    return client


@dataclass
class ReceivedTask:
    path: str
    body: bytes
    headers: dict[str, str]
    at: datetime


@dataclass
class TaskServer:
    """A local HTTP server recording the POSTs the Cloud Tasks emulator dispatches."""

    url: str
    received: list[ReceivedTask] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, path: str, timeout: float) -> ReceivedTask | None:
        def found() -> ReceivedTask | None:
            return next((r for r in self.received if r.path == path), None)

        with self.arrived:
            self.arrived.wait_for(found, timeout=timeout)
            return found()


@pytest.fixture(scope="package")
def task_server() -> Iterator[TaskServer]:
    server_ref: list[TaskServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            record = ReceivedTask(self.path, body, dict(self.headers.items()), datetime.now(UTC))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            state = server_ref[0]
            with state.arrived:
                state.received.append(record)
                state.arrived.notify_all()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = TaskServer(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    server_ref.append(state)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------------------------
# Stores, parametrized over the backends
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _db(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("firestore_db")


@pytest.fixture
def run_store(backend: str, request: pytest.FixtureRequest) -> RunStore:
    if backend == "memory":
        return InMemoryRunStore()
    return FirestoreRunStore(_db(request))


@pytest.fixture
def handoff_store(run_store: RunStore, request: pytest.FixtureRequest) -> HandoffStore:
    """Shares the backend of ``run_store`` (offers are written by step commits)."""
    if isinstance(run_store, InMemoryRunStore):
        return InMemoryHandoffStore(run_store)
    return FirestoreHandoffStore(_db(request))


@pytest.fixture
def agent_store(backend: str, request: pytest.FixtureRequest) -> AgentStore:
    if backend == "memory":
        return InMemoryAgentStore()
    return FirestoreAgentStore(_db(request))


@pytest.fixture
def dead_letter_store(backend: str, request: pytest.FixtureRequest) -> DeadLetterStore:
    if backend == "memory":
        return InMemoryDeadLetterStore()
    return FirestoreDeadLetterStore(_db(request))


@pytest.fixture
def cost_ledger(backend: str, request: pytest.FixtureRequest) -> CostLedger:
    if backend == "memory":
        return InMemoryCostLedger()
    return FirestoreCostLedger(_db(request))


@pytest.fixture
def rate_limiter(backend: str, request: pytest.FixtureRequest) -> RateLimiter:
    if backend == "memory":
        return InMemoryRateLimiter()
    return FirestoreRateLimiter(_db(request))


# --------------------------------------------------------------------------------------------
# Messaging harnesses: the adapter plus a way to see what it really did
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    data: bytes
    attributes: dict[str, str]
    message_id: str


class BusHarness:
    """``bus`` publishes; ``prepare`` makes ``topic`` receivable; ``received`` reads it back."""

    def __init__(self, bus: EventBus, subscriber: Any = None, publisher: Any = None) -> None:
        self.bus = bus
        self.subscriber = subscriber
        self.publisher = publisher

    async def prepare(self, topic: str) -> None:
        if self.publisher is None:
            return
        topic_path = self.publisher.topic_path(PROJECT, topic)
        sub_path = self.subscriber.subscription_path(PROJECT, f"{topic}-sub")
        await asyncio.to_thread(self.publisher.create_topic, name=topic_path)
        await asyncio.to_thread(
            self.subscriber.create_subscription, name=sub_path, topic=topic_path
        )

    async def received(self, topic: str, count: int, within: float = 10.0) -> list[Delivered]:
        if isinstance(self.bus, InMemoryEventBus):
            return [Delivered(m.data, m.attributes, m.message_id) for m in self.bus.on(topic)]
        sub_path = self.subscriber.subscription_path(PROJECT, f"{topic}-sub")
        found: list[Delivered] = []
        deadline = asyncio.get_running_loop().time() + within
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            response = await asyncio.to_thread(
                self.subscriber.pull, subscription=sub_path, max_messages=10, timeout=5.0
            )
            ack_ids = []
            for item in response.received_messages:
                message = item.message
                found.append(Delivered(message.data, dict(message.attributes), message.message_id))
                ack_ids.append(item.ack_id)
            if ack_ids:
                await asyncio.to_thread(
                    self.subscriber.acknowledge, subscription=sub_path, ack_ids=ack_ids
                )
        return found


@pytest.fixture
def bus_harness(backend: str, request: pytest.FixtureRequest) -> BusHarness:
    if backend == "memory":
        return BusHarness(InMemoryEventBus())
    publisher, subscriber = request.getfixturevalue("pubsub_clients")
    return BusHarness(PubSubEventBus(publisher, PROJECT), subscriber, publisher)


@pytest.fixture
def blob_store(backend: str, request: pytest.FixtureRequest) -> BlobStore:
    if backend == "memory":
        return InMemoryBlobStore()
    return GcsBlobStore(request.getfixturevalue("gcs_client"))


@dataclass(frozen=True)
class Delivery:
    body: bytes
    at: datetime


class TaskHarness:
    """``queue`` schedules; ``delivered`` waits for the POST to ``path``.

    The fake only records tasks (tests fire them by hand), so for it a delivery is the recorded
    task, "arriving" at its scheduled time.
    """

    def __init__(self, queue: TaskQueue, server: TaskServer | None = None) -> None:
        self.queue = queue
        self.server = server
        self.base_url = server.url if server else "http://127.0.0.1:9"

    async def delivered(self, path: str, within: float = 10.0) -> Delivery | None:
        if isinstance(self.queue, InMemoryTaskQueue):
            found = [t for t in self.queue.tasks if t.url == self.base_url + path]
            return Delivery(found[0].body, found[0].at) if found else None
        assert self.server is not None
        record = await asyncio.to_thread(self.server.wait_for, path, within)
        return Delivery(record.body, record.at) if record else None


@pytest.fixture
def task_harness(backend: str, request: pytest.FixtureRequest) -> TaskHarness:
    if backend == "memory":
        return TaskHarness(InMemoryTaskQueue())
    request.getfixturevalue("emulator_stack")
    server: TaskServer = request.getfixturevalue("task_server")
    return TaskHarness(CloudTasksQueue(tasks_client(), PROJECT, LOCATION), server)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def user(text: str) -> Message:
    return Message(role="user", content=text)


def make_run(
    *, run_id: str | None = None, agent_id: str | None = None, created_at: datetime | None = None
) -> RunRecord:
    return RunRecord(
        run_id=run_id or new_id("run"),
        agent_id=agent_id or new_id("agent"),
        created_at=created_at or datetime.now(UTC),
    )


def progress(iterations: int = 1, tokens: int = 10) -> RunProgress:
    return RunProgress(iterations=iterations, total_tokens=tokens)


def tool_record(run_id: str, seq: int, index: int) -> ToolCallRecord:
    call = ToolCall(id=f"call_{index}", name="calculator", arguments={"expression": f"{index}+1"})
    return ToolCallRecord(
        run_id=run_id, seq=seq, index=index, call=call, idempotency_key=f"{run_id}:{seq}:{index}"
    )


def wake_message(run_id: str, seq: int) -> OutboxMessage:
    return OutboxMessage(topic="steps", data={"run_id": run_id, "seq": seq})


def tool_step(run: RunRecord, seq: int, calls: int) -> StepCommit:
    """Step ``seq`` of ``run``: the model asked for ``calls`` tool calls; the run waits on them."""
    records = [tool_record(run.run_id, seq, i) for i in range(calls)]
    reply = Message(role="assistant", tool_calls=[r.call for r in records])
    return StepCommit(
        run_id=run.run_id,
        expected_seq=seq,
        new_messages=[reply],
        status=RunStatus.WAITING_TOOLS,
        progress=progress(iterations=seq + 1),
        pending=[PendingItem(kind="tool_call", id=r.doc_id) for r in records],
        tool_calls=records,
        outbox=[
            OutboxMessage(topic="tools", data={"run_id": run.run_id, "seq": seq, "index": i})
            for i in range(calls)
        ],
        events=[
            ToolCallEvent(
                run_id=run.run_id,
                seq=seq,
                id=f"{seq:06d}-b{i:04d}",
                call_id=r.call.id,
                tool_name=r.call.name,
                arguments=r.call.arguments,
            )
            for i, r in enumerate(records)
        ],
    )


async def waiting_run(store: RunStore, calls: int) -> RunRecord:
    """A new run that committed step 0 and waits (at seq 1) on ``calls`` tool calls."""
    run = make_run()
    assert await store.create_run(run, [user("hello")])
    after = await store.commit_step(tool_step(run, 0, calls))
    assert after is not None
    return after


def make_offer(
    source_run_id: str,
    *,
    expires_in: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
) -> HandoffOffer:
    now = now or datetime.now(UTC)
    return HandoffOffer(
        offer_id=new_id("offer"),
        source_run_id=source_run_id,
        source_agent="source-agent",
        required_capabilities=["billing", "refunds"],
        message="please take over",
        created_at=now,
        expires_at=now + expires_in,
    )


async def run_with_offer(
    runs: RunStore, *, expires_in: timedelta = timedelta(minutes=5)
) -> tuple[RunRecord, HandoffOffer]:
    """A run that finished its first step by offering a handoff (the way the executor does)."""
    run = make_run()
    assert await runs.create_run(run, [user("transfer me")])
    offer = make_offer(run.run_id, expires_in=expires_in)
    commit = StepCommit(
        run_id=run.run_id,
        expected_seq=0,
        new_messages=[Message(role="assistant", content="handing off")],
        status=RunStatus.FINISHED,
        progress=progress(),
        result=progress().result(LoopExit.HANDOFF, {"offer_id": offer.offer_id}),
        handoff_offer=offer,
        outbox=[OutboxMessage(topic="handoff", data={"offer_id": offer.offer_id})],
    )
    after = await runs.commit_step(commit)
    assert after is not None
    return after, offer
