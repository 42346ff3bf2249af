"""Start the four real emulators, talk to each through the Google client libraries, stop them.

Each emulator is a real process (two JVMs among them); the tests check that they answer, that the
client libraries reach them through the variables of ``EmulatorStack.env()``, and that ``stop()``
frees the ports and leaves no process of their groups behind.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloudagents.local import emulators as em

pytestmark = pytest.mark.timeout(120)

PROJECT = "demo-emulators"
LOCATION = "us-central1"
QUEUE = "wakeups"

_MISSING = [
    what
    for what, ok in (
        (
            "gcloud + java + cloud-firestore-emulator",
            em.gcloud_emulator_available("cloud-firestore-emulator"),
        ),
        ("gcloud + java + pubsub-emulator", em.gcloud_emulator_available("pubsub-emulator")),
    )
    if not ok
]
needs_gcloud = pytest.mark.skipif(
    bool(_MISSING), reason=f"emulator binaries not installed: {', '.join(_MISSING)}"
)


# --------------------------------------------------------------------------------------------
# A local HTTP server standing in for the services that Pub/Sub pushes and Cloud Tasks call
# --------------------------------------------------------------------------------------------


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers}


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


class Sink:
    """Records every POST (header names lower-cased); answers with the next status queued for its path (default 200)."""

    def __init__(self) -> None:
        self.requests: queue.Queue[Received] = queue.Queue()
        self.statuses: dict[str, list[int]] = {}
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?", 1)[0]
                sink.requests.put(
                    Received(time.monotonic(), self.path, _lower(self.headers.items()), body)
                )
                planned = sink.statuses.get(path) or [200]
                status = planned.pop(0) if len(planned) > 1 else planned[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def wait_for(self, path: str, timeout: float = 10.0) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no request to {path} within {timeout} s")
            try:
                got = self.requests.get(timeout=remaining)
            except queue.Empty:
                continue
            if got.path.split("?", 1)[0] == path:
                return got

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


# --------------------------------------------------------------------------------------------
# The stack shared by the client tests
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[em.EmulatorStack]:
    if _MISSING:
        pytest.skip(f"emulator binaries not installed: {', '.join(_MISSING)}")
    started = time.monotonic()
    s = em.start_stack(PROJECT, tmp_path_factory.mktemp("emulators"), queue_names=[QUEUE])
    print(f"stack ready in {time.monotonic() - started:.1f} s:", end=" ")
    print(", ".join(f"{p.name} {p.ready_seconds:.1f} s" for p in s.processes))
    yield s
    s.stop()
    assert all(not em.process_group_members(p.pgid) for p in s.processes)


@pytest.fixture
def env(stack: em.EmulatorStack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    variables = stack.env()
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    return variables


def test_env_points_at_the_emulators(stack: em.EmulatorStack) -> None:
    env = stack.env()
    assert env == {
        "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{stack.firestore.port}",
        "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{stack.pubsub.port}",
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{stack.storage.port}",
        "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{stack.tasks.port}",
        "GOOGLE_CLOUD_PROJECT": PROJECT,
    }
    assert len({p.port for p in stack.processes}) == 4
    for process in stack.processes:
        assert process.running()
        assert process.log_path.is_file()


def test_firestore_write_and_read(env: dict[str, str]) -> None:
    from google.cloud import firestore

    db = firestore.Client(project=PROJECT)
    ref = db.collection("runs").document("run-1")
    ref.set({"status": "running", "steps": [1, 2], "meta": {"agent": "a"}})
    assert ref.get().to_dict() == {"status": "running", "steps": [1, 2], "meta": {"agent": "a"}}
    query = db.collection("runs").where(filter=firestore.FieldFilter("status", "==", "running"))
    found = [d.id for d in query.stream()]
    assert found == ["run-1"]


def test_storage_bucket_and_object(env: dict[str, str]) -> None:
    from google.cloud import storage

    client = storage.Client()
    bucket = client.create_bucket("demo-artifacts")
    bucket.blob("runs/run-1/step-0.json").upload_from_string(
        b'{"ok": true}', content_type="application/json"
    )
    blob = client.bucket("demo-artifacts").blob("runs/run-1/step-0.json")
    assert blob.download_as_bytes() == b'{"ok": true}'
    assert [b.name for b in client.list_blobs("demo-artifacts", prefix="runs/")] == [
        "runs/run-1/step-0.json"
    ]


def test_pubsub_push_with_dead_letter_and_retry_policy(env: dict[str, str], sink: Sink) -> None:
    from google.cloud import pubsub_v1
    from google.protobuf import duration_pb2

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, "intents")
    dead = publisher.topic_path(PROJECT, "intents-dead")
    for name in (topic, dead):
        publisher.create_topic(name=name)
    subscription = subscriber.subscription_path(PROJECT, "intents-push")
    subscriber.create_subscription(
        request={
            "name": subscription,
            "topic": topic,
            "push_config": {"push_endpoint": sink.url("/push")},
            "ack_deadline_seconds": 10,
            "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": 5},
            "retry_policy": {
                "minimum_backoff": duration_pb2.Duration(seconds=1),
                "maximum_backoff": duration_pb2.Duration(seconds=10),
            },
        }
    )
    stored = subscriber.get_subscription(subscription=subscription)
    assert stored.dead_letter_policy.dead_letter_topic == dead
    assert stored.dead_letter_policy.max_delivery_attempts == 5
    assert stored.retry_policy.minimum_backoff.total_seconds() == 1

    message_id = publisher.publish(topic, b'{"run": "r1"}', kind="start", run_id="r1").result()
    push = sink.wait_for("/push")
    assert push.headers["content-type"].startswith("application/json")
    body = json.loads(push.body)
    assert body["subscription"] == subscription
    message = body["message"]
    assert base64.b64decode(message["data"]) == b'{"run": "r1"}'
    assert message["attributes"] == {"kind": "start", "run_id": "r1"}
    assert message["messageId"] == message["message_id"] == message_id
    assert "publishTime" in message and "publish_time" in message
    # Production adds deliveryAttempt when a dead-letter policy is set; emulator 0.8.20 does not.
    assert body.get("deliveryAttempt") in (None, 1)


def test_pubsub_dead_letters_after_max_delivery_attempts(env: dict[str, str]) -> None:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, "work")
    dead = publisher.topic_path(PROJECT, "work-dead")
    for name in (topic, dead):
        publisher.create_topic(name=name)
    dead_sub = subscriber.subscription_path(PROJECT, "work-dead-pull")
    work_sub = subscriber.subscription_path(PROJECT, "work-pull")
    subscriber.create_subscription(request={"name": dead_sub, "topic": dead})
    subscriber.create_subscription(
        request={
            "name": work_sub,
            "topic": topic,
            "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": 5},
        }
    )
    publisher.publish(topic, b"poison").result()
    attempts = []
    for _ in range(5):
        deadline = time.monotonic() + 5
        messages: list[Any] = []
        while not messages and time.monotonic() < deadline:  # a pull may come back empty
            pulled = subscriber.pull(subscription=work_sub, max_messages=1, timeout=5)
            messages = list(pulled.received_messages)
        [received] = messages
        attempts.append(received.delivery_attempt)
        subscriber.modify_ack_deadline(
            subscription=work_sub, ack_ids=[received.ack_id], ack_deadline_seconds=0
        )
    assert attempts == [1, 2, 3, 4, 5]
    # The emulator forwards to the dead-letter topic when it would deliver a 6th time.
    deadline = time.monotonic() + 5
    dead_letters: list[Any] = []
    while not dead_letters and time.monotonic() < deadline:
        again = subscriber.pull(subscription=work_sub, max_messages=1, return_immediately=True)
        assert not again.received_messages
        pulled = subscriber.pull(subscription=dead_sub, max_messages=1, return_immediately=True)
        dead_letters = list(pulled.received_messages)
    [dead_letter] = dead_letters
    assert dead_letter.message.data == b"poison"
    attributes = dict(dead_letter.message.attributes)
    assert attributes["CloudPubSubDeadLetterSourceSubscription"] == "work-pull"
    assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"


def _tasks_client(endpoint: str) -> Any:
    import grpc
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    channel = grpc.insecure_channel(endpoint)
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def test_tasks_http_task_honours_schedule_time_and_retries(env: dict[str, str], sink: Sink) -> None:
    from google.cloud import tasks_v2
    from google.protobuf import timestamp_pb2

    client = _tasks_client(env["CLOUD_TASKS_EMULATOR_HOST"])
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    queue_name = f"{parent}/queues/{QUEUE}"
    assert queue_name in [q.name for q in client.list_queues(parent=parent)]
    created = client.create_queue(parent=parent, queue={"name": f"{parent}/queues/made-by-api"})
    assert created.state == tasks_v2.Queue.State.RUNNING

    delay = 2.0
    eta = timestamp_pb2.Timestamp()
    eta.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay))
    created_at = time.monotonic()
    client.create_task(
        parent=queue_name,
        task={
            "name": f"{queue_name}/tasks/wake-run-1",
            "schedule_time": eta,
            "http_request": {
                "http_method": tasks_v2.HttpMethod.POST,
                "url": sink.url("/tasks/wake?run=1"),
                "headers": {"Content-Type": "application/json", "X-Run-Id": "run-1"},
                "body": b'{"run": "run-1"}',
            },
        },
    )
    sink.statuses["/tasks/flaky"] = [503, 200]
    client.create_task(parent=queue_name, task={"http_request": {"url": sink.url("/tasks/flaky")}})

    first = sink.wait_for("/tasks/flaky", timeout=5)
    retried = sink.wait_for("/tasks/flaky", timeout=5)
    assert first.headers["x-cloudtasks-taskretrycount"] == "0"
    assert retried.headers["x-cloudtasks-taskretrycount"] == "1"

    woke = sink.wait_for("/tasks/wake", timeout=delay + 5)
    assert delay - 0.3 <= woke.at - created_at <= delay + 1.5
    assert woke.path == "/tasks/wake?run=1"
    assert woke.body == b'{"run": "run-1"}'
    assert woke.headers["content-type"] == "application/json"
    assert woke.headers["x-run-id"] == "run-1"
    assert woke.headers["x-cloudtasks-taskname"] == "wake-run-1"
    assert woke.headers["x-cloudtasks-queuename"].rsplit("/", 1)[-1] == QUEUE
    assert float(woke.headers["x-cloudtasks-tasketa"]) == pytest.approx(eta.seconds, abs=1)


# --------------------------------------------------------------------------------------------
# Lifecycle: start, answer, stop, nothing left
# --------------------------------------------------------------------------------------------


@needs_gcloud
def test_stop_frees_ports_and_kills_whole_process_groups(tmp_path: Path) -> None:
    s = em.start_stack(PROJECT, tmp_path, queue_names=["q"])
    try:
        groups = {p.name: em.process_group_members(p.pgid) for p in s.processes}
        # gcloud's launcher plus the JVM (and, for Firestore, a bash wrapper) share a group.
        assert len(groups["firestore"]) >= 2
        assert len(groups["pubsub"]) >= 2
        for process in s.processes:
            assert not em.port_is_free(process.port), process.name
    finally:
        s.stop()
    for process in s.processes:
        assert process.process.returncode is not None, process.name
        assert em.process_group_members(process.pgid) == [], process.name
        holders = _listeners(process.port)
        # Freed: nobody listens, or (on a busy machine) an unrelated process got the port since.
        assert not set(holders) & set(groups[process.name]), (process.name, holders)
        for pid in holders:  # and not one of ours that left the group (its files are here)
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                assert str(tmp_path).encode() not in command, (process.name, pid, command)
        assert em.port_is_free(process.port) or holders, process.name
        for pid in groups[process.name]:
            assert not _alive(pid), f"{process.name}: pid {pid} survived stop()"
    s.stop()  # idempotent


def _listeners(port: int) -> list[int]:
    """PIDs of the processes with a socket listening on TCP ``port`` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_occupied_port_fails_fast_with_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(em.EmulatorError, match="already in use"):
            em.start_storage(tmp_path, port=port)
        assert time.monotonic() - started < 5


def test_storage_start_answers_and_stop(tmp_path: Path) -> None:
    with em.start_storage(tmp_path) as storage:
        assert em._http_says_ok(f"{storage.url}/")
        assert storage.log_path == tmp_path / "storage.log"
    assert em.port_is_free(storage.port)
    assert em.process_group_members(storage.pgid) == []


def test_tasks_venv_is_reused_when_requirements_unchanged() -> None:
    root = em.default_repo_root()
    executable = em.ensure_tasks_emulator_venv(root)
    started = time.monotonic()
    assert em.ensure_tasks_emulator_venv(root) == executable
    assert time.monotonic() - started < 2
    requirements = (root / "infra" / "tasks-emulator" / "requirements.txt").read_bytes()
    marker = root / ".venv-tasks" / ".cloudagents-requirements.sha256"
    assert marker.read_text().strip() == hashlib.sha256(requirements).hexdigest()
    assert "gcloud-tasks-emulator==" in requirements.decode()


def test_tasks_venv_is_created_and_resynced_when_requirements_change(tmp_path: Path) -> None:
    real_root = em.default_repo_root()
    uv = real_root / ".tools" / "uv" / "bin" / "uv"
    if not uv.exists():
        pytest.skip("uv not at .tools/uv (make install puts it there); pip would take ~15 s")
    (tmp_path / ".tools" / "uv" / "bin").mkdir(parents=True)
    (tmp_path / ".tools" / "uv" / "bin" / "uv").symlink_to(uv)
    requirements = tmp_path / "infra" / "tasks-emulator" / "requirements.txt"
    requirements.parent.mkdir(parents=True)
    requirements.write_bytes(
        (real_root / "infra" / "tasks-emulator" / "requirements.txt").read_bytes()
    )
    marker = tmp_path / ".venv-tasks" / ".cloudagents-requirements.sha256"

    executable = em.ensure_tasks_emulator_venv(tmp_path)
    assert executable == tmp_path / ".venv-tasks" / "bin" / "gcloud-tasks-emulator"
    assert executable.is_file()
    first = marker.read_text()

    requirements.write_text(requirements.read_text() + "# changed\n")
    assert em.ensure_tasks_emulator_venv(tmp_path) == executable
    assert marker.read_text() != first
    assert marker.read_text().strip() == hashlib.sha256(requirements.read_bytes()).hexdigest()
