"""The push worker service's pieces without emulators: the dispatch choice per node type
(``graphs/dispatch.py``), the topology entries of push and pull node types, the settings, and
the graph worker's registry loading and routes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from cloudagents.domain.errors import ConfigurationError
from cloudagents.graphs.dispatch import NodeDispatch, PushNotConfigured, node_dispatch
from cloudagents.graphs.documents import SuperstepWake, TaskMessage
from cloudagents.graphs.push import load_registry
from cloudagents.graphs.superstep import NodeTask
from cloudagents.settings import Settings
from cloudagents.topology import (
    GRAPH_TASK_PATH,
    GRAPH_WAKE_PATH,
    build_topology,
    graph_task_queue,
    graph_wake_queue,
    parse_node_types,
)


class Sent:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.scheduled: list[tuple[str, str, bytes, datetime, str | None]] = []

    async def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        self.published.append((topic, data, attributes))
        return "m"

    async def schedule(
        self, queue: str, url: str, body: bytes, at: datetime, *, name: str | None = None
    ) -> str:
        self.scheduled.append((queue, url, body, at, name))
        return "t"


def task(node: str, step: int = 0) -> NodeTask:
    return NodeTask(task_id=f"{step:04d}-{node}", step=step, node=node, node_type=node)


def dispatch(sent: Sent, **options: Any) -> NodeDispatch:
    return NodeDispatch(
        "ws",
        publish=sent.publish,
        schedule=sent.schedule,
        push_node_types={"summarize"},
        worker_url="http://worker/",
        **options,
    )


async def test_push_node_types_go_to_their_queue_and_band_the_others_to_their_topic() -> None:
    sent = Sent()
    await dispatch(sent).send("wf-1", "high", [task("summarize"), task("research")])
    [(queue, url, body, _, name)] = sent.scheduled
    assert queue == "ws-graphhigh-summarize"
    assert url == "http://worker" + GRAPH_TASK_PATH
    assert name is None  # a re-dispatch must not be dropped as a duplicate name
    assert TaskMessage.model_validate_json(body).task.node == "summarize"
    [(topic, data, attributes)] = sent.published
    assert topic == "ws-graph_high-research"
    assert attributes == {"workflow_id": "wf-1", "task_id": "0000-research", "priority": "high"}
    assert TaskMessage.model_validate_json(data).workflow_id == "wf-1"


async def test_opening_a_superstep_with_a_push_task_schedules_its_wake_up_first() -> None:
    sent = Sent()
    await dispatch(sent, wake_after=5.0)("wf-1", "normal", [task("summarize", 3)])
    (wake_queue, wake_url, body, at, name), (queue, *_rest) = sent.scheduled
    assert (wake_queue, wake_url) == ("ws-graphwake", "http://worker" + GRAPH_WAKE_PATH)
    assert SuperstepWake.model_validate_json(body) == SuperstepWake(workflow_id="wf-1", step=3)
    assert name is not None and name.startswith("gwake-")
    assert (at - datetime.now(at.tzinfo)).total_seconds() > 5.0
    assert queue == "ws-graph-summarize"


async def test_a_pull_only_superstep_and_a_redispatch_schedule_no_wake_up() -> None:
    sent = Sent()
    nodes = dispatch(sent)
    await nodes("wf-1", "normal", [task("research")])
    await nodes.send("wf-1", "normal", [task("summarize")])
    assert [s[0] for s in sent.scheduled] == ["ws-graph-summarize"]
    assert [p[0] for p in sent.published] == ["ws-graph-research"]


async def test_copies_send_every_task_that_many_times() -> None:
    sent = Sent()
    await dispatch(sent, copies=2).send("wf", "low", [task("summarize"), task("research")])
    assert len(sent.scheduled) == 2 and len(sent.published) == 2


async def test_a_push_node_type_without_a_worker_url_is_a_clear_error() -> None:
    sent = Sent()
    nodes = NodeDispatch(
        "ws", publish=sent.publish, schedule=sent.schedule, push_node_types={"summarize"}
    )
    with pytest.raises(PushNotConfigured, match="CLOUDAGENTS_GRAPH_WORKER_URL"):
        await nodes.send("wf", "normal", [task("summarize")])


def test_settings_choose_the_push_node_types() -> None:
    env = {
        "GOOGLE_CLOUD_PROJECT": "p",
        "CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES": "summarize:4, agent",
        "CLOUDAGENTS_GRAPH_WORKER_URL": "https://worker",
        "CLOUDAGENTS_GRAPH_MODULES": "myapp.nodes,myapp.more",
        "CLOUDAGENTS_GRAPH_LEASE_SECONDS": "12",
    }
    settings = Settings.from_env(env)
    assert settings.graph_push_node_types == ("agent", "summarize")
    assert settings.graph_worker_url == "https://worker"
    assert settings.graph_modules == ("myapp.nodes", "myapp.more")
    assert settings.graph_lease_seconds == 12.0
    sent = Sent()
    nodes = node_dispatch(settings, sent.publish, sent.schedule)
    assert nodes.pushed("agent") and not nodes.pushed("research")
    with pytest.raises(ConfigurationError, match="capacity"):
        Settings.from_env({**env, "CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES": "a:0"})
    unset = node_dispatch(Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p"}), sent.publish, None)
    assert not unset.push_node_types


def test_parse_node_types() -> None:
    assert parse_node_types("a:4, b,") == {"a": 4, "b": None}
    assert parse_node_types(["x"]) == {"x": None}
    assert parse_node_types({"y": 2}) == {"y": 2}
    with pytest.raises(ValueError):
        parse_node_types("a:many")


def test_topology_has_a_queue_per_push_node_type_and_band_and_topics_per_pull_type() -> None:
    plain = build_topology("proj-123456", "agents")
    assert "graph_worker" not in {s.name for s in plain.services}
    assert plain.graph_wake_queue is None
    topology = build_topology(
        "proj-123456",
        "agents",
        graph_push_node_types={"summarize": 4},
        graph_pull_node_types=["research", "summarize"],
    )
    graph_queues = [q for q in topology.queues if q.node_type is not None]
    assert [q.name for q in graph_queues] == [
        "agents-graphhigh-summarize",
        "agents-graph-summarize",
        "agents-graphlow-summarize",
    ]
    assert {(q.service, q.path, q.max_concurrent_dispatches) for q in graph_queues} == {
        ("graph_worker", GRAPH_TASK_PATH, 4)
    }
    assert topology.graph_wake_queue is not None
    assert topology.graph_wake_queue.name == graph_wake_queue("agents")
    assert topology.graph_push_node_types == ("summarize",)
    # A type both pushed and pulled is pushed: only research gets topics.
    assert topology.graph_pull_node_types == ("research",)
    graph_topics = [t.name for t in topology.topics if t.role == "graph_nodes"]
    assert graph_topics == [
        "agents-graph_high-research",
        "agents-graph-research",
        "agents-graph_low-research",
    ]
    assert ("agents-graph-research-workers", "agents-graph-research") in (
        topology.pull_subscriptions
    )
    worker = topology.service("graph_worker")
    assert worker.source == "services/graph_worker/main.py" and not worker.http
    assert "agents" in worker.publishes  # agent nodes start their runs with an intent
    for opener in ("api", "run_executor", "graph_worker"):
        spec = topology.service(opener)  # type: ignore[arg-type]
        assert "agents-graph-summarize" in spec.enqueues
        assert "agents-graph-research" in spec.publishes
    assert "graph_worker" not in topology.service("tool_invoker").enqueues


def test_queue_names_keep_bands_apart_and_take_only_queue_characters() -> None:
    assert graph_task_queue("ws", "high-x") != graph_task_queue("ws", "x", "high")
    assert graph_task_queue("ws", "a.b_c") == "ws-graph-a-b-c"
    with pytest.raises(ValueError):
        graph_task_queue("ws", "x", "urgent")


def test_the_service_merges_the_registries_of_its_modules() -> None:
    registry = load_registry(["tests.integration.graph_push_nodes"])
    assert {"plan", "a", "b", "merge", "crash", "after"} <= set(registry.node_names())


def test_superstep_wake_round_trips() -> None:
    wake = SuperstepWake(workflow_id="wf", step=2, gen=3)
    assert SuperstepWake.model_validate(json.loads(wake.model_dump_json())) == wake


async def test_the_api_and_intents_send_push_node_types_as_cloud_tasks() -> None:
    from cloudagents.adapters.memory.messaging import InMemoryEventBus, InMemoryTaskQueue
    from cloudagents.bootstrap import build_deps
    from cloudagents.runtime.workflows_api import dispatch_for

    settings = Settings.from_env(
        {
            "CLOUDAGENTS_BACKEND": "memory",
            "CLOUDAGENTS_WORKSPACE": "agents",
            "CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES": "summarize",
            "CLOUDAGENTS_GRAPH_WORKER_URL": "http://worker",
        }
    )
    deps = build_deps(settings)
    assert deps.topology.graph_wake_queue is not None
    await dispatch_for(deps)("wf", "low", [task("summarize"), task("research")])
    assert isinstance(deps.tasks, InMemoryTaskQueue) and isinstance(deps.bus, InMemoryEventBus)
    assert [t.queue for t in deps.tasks.tasks] == ["agents-graphwake", "agents-graphlow-summarize"]
    assert [m.topic for m in deps.bus.published] == ["agents-graph_low-research"]
