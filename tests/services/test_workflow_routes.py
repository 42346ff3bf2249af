"""The api's graph workflow routes on the memory backend: register a graph by hash, start a run
(its first task published on the node type's topic), read, list, cancel, checkpoints."""

from __future__ import annotations

import json

import httpx
import pytest

from cloudagents.bootstrap import get_deps
from cloudagents.domain.intents import IntentionMessage
from cloudagents.graphs import Graph
from cloudagents.graphs.documents import TaskMessage
from cloudagents.runtime.app import build_api_app
from cloudagents.runtime.hub import workflow_hub
from tests.services.conftest import TOKEN, Pump
from tests.services.test_streaming_services import API_SOURCE, WebSocketSession

Stack = tuple[dict[str, httpx.AsyncClient], Pump]


def research_graph() -> dict[str, object]:
    graph = Graph(name="research_workflow")
    graph.add_node("researcher")
    graph.add_node("writer")
    graph.set_entry_point("researcher")
    graph.add_edge("researcher", "writer")
    graph.set_finish_point("writer")
    return json.loads(graph.compile().to_json())


async def test_register_start_show_list_and_cancel_a_workflow_run(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    registered = await api.post("/workflows", json=research_graph())
    assert registered.status_code == 201, registered.text
    digest = registered.json()["hash"]
    assert registered.json()["entry_point"] == "researcher"
    again = await api.post("/workflows", json=research_graph())
    assert again.json()["hash"] == digest  # the same graph, the same id
    assert (await api.get("/workflows")).json() == {
        "workflows": [{"hash": digest, "name": "research_workflow"}]
    }
    assert (await api.get(f"/workflows/{digest}")).json()["nodes"]["writer"][
        "node_type"
    ] == "writer"

    started = await api.post(
        f"/workflows/{digest}/runs",
        json={"initial_state": {"query": "AI trends"}, "workflow_id": "wf-api-1"},
    )
    assert started.status_code == 202, started.text
    view = started.json()
    assert (view["workflow_id"], view["status"], view["step"]) == ("wf-api-1", "running", 0)
    assert view["state"] == {"query": "AI trends"}
    [published] = [m for m in pump.bus.published if m.topic == "agents-graph-researcher"]
    message = TaskMessage.model_validate_json(published.data)
    assert (message.workflow_id, message.task.task_id) == ("wf-api-1", "0000-researcher")

    duplicate = await api.post(f"/workflows/{digest}/runs", json={"workflow_id": "wf-api-1"})
    assert duplicate.status_code == 409
    shown = (await api.get("/workflow-runs/wf-api-1")).json()
    assert shown["pending"] == [
        {
            "task_id": "0000-researcher",
            "step": 0,
            "node": "researcher",
            "node_type": "researcher",
            "done": False,
        }
    ]
    listed = (await api.get("/workflow-runs", params={"status": "running"})).json()
    assert [r["workflow_id"] for r in listed["workflow_runs"]] == ["wf-api-1"]

    cancelled = await api.post("/workflow-runs/wf-api-1/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await api.post("/workflow-runs/wf-api-1/cancel")).status_code == 409
    checkpoints = (await api.get("/workflow-runs/wf-api-1/checkpoints")).json()["checkpoints"]
    assert [(c["step"], c["status"]) for c in checkpoints] == [(0, "running"), (0, "cancelled")]
    assert (await api.get("/workflow-runs", params={"status": "running"})).json() == {
        "workflow_runs": []
    }


async def test_workflow_route_errors(stack: Stack) -> None:
    clients, _ = stack
    api = clients["api"]
    broken = research_graph() | {"entry_point": "nobody"}
    refused = await api.post("/workflows", json=broken)
    assert refused.status_code == 422
    assert refused.json()["error"] == "entry point 'nobody' is not a node of 'research_workflow'"
    assert (await api.post("/workflows", json={"name": "x"})).status_code == 422
    assert (await api.post("/workflows/abc123/runs", json={})).status_code == 404
    assert (await api.get("/workflows/abc123")).status_code == 404
    assert (await api.get("/workflow-runs/nope")).status_code == 404
    assert (await api.post("/workflow-runs/nope/cancel")).status_code == 404
    assert (await api.get("/workflow-runs", params={"status": "odd"})).status_code == 400
    digest = (await api.post("/workflows", json=research_graph())).json()["hash"]
    bad = await api.post(f"/workflows/{digest}/runs", json={"max_steps": 0})
    assert bad.status_code == 422


async def _start(api: httpx.AsyncClient, wid: str, **body: object) -> str:
    digest = (await api.post("/workflows", json=research_graph())).json()["hash"]
    started = await api.post(f"/workflows/{digest}/runs", json={"workflow_id": wid, **body})
    assert started.status_code == 202, started.text
    return str(digest)


async def test_resume_a_cancelled_run_and_fork_it_into_a_new_run(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    digest = await _start(api, "wf-src", initial_state={"query": "AI"}, max_steps=5)
    running = await api.post("/workflow-runs/wf-src/resume")
    assert running.status_code == 409
    assert "only a stopped run resumes" in running.json()["error"]
    await api.post("/workflow-runs/wf-src/cancel")

    resumed = await api.post("/workflow-runs/wf-src/resume", json={"max_steps": 9})
    assert resumed.status_code == 202, resumed.text
    view = resumed.json()
    assert (view["status"], view["step"], view["step_limit"], view["resumes"]) == (
        "running",
        0,
        9,
        1,
    )
    # The task never got a result, so it is published again (once per resume).
    tasks = [m for m in pump.bus.published if m.topic == "agents-graph-researcher"]
    assert [TaskMessage.model_validate_json(m.data).workflow_id for m in tasks] == [
        "wf-src",
        "wf-src",
    ]
    checkpoints = (await api.get("/workflow-runs/wf-src/checkpoints")).json()["checkpoints"]
    assert [(c["status"], c["step_limit"]) for c in checkpoints] == [
        ("running", 5),
        ("cancelled", 5),
        ("running", 9),
    ]

    forked = await api.post(
        "/workflow-runs/wf-src/fork",
        json={"step": 0, "updates": {"query": "GCP"}, "workflow_id": "wf-fork", "priority": "high"},
    )
    assert forked.status_code == 202, forked.text
    fork = forked.json()
    assert fork["graph_hash"] == digest and fork["forked_from"] == "wf-src@0"
    assert (fork["state"], fork["step"], fork["priority"]) == ({"query": "GCP"}, 0, "high")
    [high] = [m for m in pump.bus.published if m.topic == "agents-graph_high-researcher"]
    assert TaskMessage.model_validate_json(high.data).workflow_id == "wf-fork"
    assert high.attributes["priority"] == "high"
    source = (await api.get("/workflow-runs/wf-src")).json()
    assert source["state"] == {"query": "AI"}  # the source run is untouched

    events = (await api.get("/workflow-runs/wf-src/events")).json()["events"]
    assert [e["type"] for e in events] == ["workflow_started", "workflow_ended", "workflow_resumed"]
    assert events[1]["status"] == "cancelled" and events[2]["previous_status"] == "cancelled"
    after = (
        await api.get("/workflow-runs/wf-src/events", params={"after": events[1]["id"]})
    ).json()
    assert [e["type"] for e in after["events"]] == ["workflow_resumed"]
    fork_events = (await api.get("/workflow-runs/wf-fork/events")).json()["events"]
    assert [(e["type"], e["forked_from"]) for e in fork_events] == [
        ("workflow_started", "wf-src@0")
    ]


async def test_fork_and_resume_errors(stack: Stack) -> None:
    clients, _ = stack
    api = clients["api"]
    await _start(api, "wf-e")
    assert (await api.post("/workflow-runs/nope/fork", json={"step": 0})).status_code == 404
    assert (await api.post("/workflow-runs/nope/resume")).status_code == 404
    missing_step = await api.post("/workflow-runs/wf-e/fork", json={"step": 3})
    assert missing_step.status_code == 404
    assert "no checkpoint at step 3" in missing_step.json()["error"]
    assert (await api.post("/workflow-runs/wf-e/fork", json={"step": -1})).status_code == 422
    assert (await api.post("/workflow-runs/wf-e/fork", json={})).status_code == 422
    taken = await api.post("/workflow-runs/wf-e/fork", json={"step": 0, "workflow_id": "wf-e"})
    assert taken.status_code == 409
    await api.post("/workflow-runs/wf-e/cancel")
    low = await api.post("/workflow-runs/wf-e/resume", json={"max_steps": 0})
    assert low.status_code == 422
    bad_priority = await api.post(
        "/workflow-runs/wf-e/fork", json={"step": 0, "priority": "urgent"}
    )
    assert bad_priority.status_code == 422


async def test_the_event_stream_of_a_stopped_run_ends_with_workflow_ended(stack: Stack) -> None:
    clients, _ = stack
    api = clients["api"]
    await _start(api, "wf-sse")
    await api.post("/workflow-runs/wf-sse/cancel")
    streamed = await api.get("/workflow-runs/wf-sse/events/stream")
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in streamed.text.split("\n\n") if f.startswith("id: ")]
    assert [f.splitlines()[1] for f in frames] == [
        "event: workflow_started",
        "event: workflow_ended",
    ]
    started_id = frames[0].splitlines()[0].removeprefix("id: ")
    again = await api.get(
        "/workflow-runs/wf-sse/events",
        headers={"Accept": "text/event-stream", "Last-Event-ID": started_id},
    )
    assert [f.splitlines()[1] for f in again.text.split("\n\n") if f.startswith("id: ")] == [
        "event: workflow_ended"
    ]
    assert (await api.get("/workflow-runs/nope/events/stream")).status_code == 404


async def test_a_workflow_intent_starts_one_run_however_often_it_is_delivered(
    stack: Stack,
) -> None:
    clients, pump = stack
    api = clients["api"]
    digest = (await api.post("/workflows", json=research_graph())).json()["hash"]
    intents = pump.deps.topology.topic("intents")
    intent = IntentionMessage.for_workflow(
        run_id="wf-intent",
        graph="research_workflow",  # by name: its latest registered hash
        initial_state={"query": "AI"},
        priority="low",
    )
    data = intent.model_dump_json().encode()
    await pump.bus.publish(intents, data, {})
    await pump.run()
    await pump.bus.publish(intents, data, {})  # a redelivery
    await pump.run()
    outcomes = [r for r in pump.responses if r[0].endswith("run-executor-intents")]
    assert [status for _, status, _ in outcomes] == [200, 200]
    listed = (await api.get("/workflow-runs")).json()["workflow_runs"]
    assert [(r["workflow_id"], r["graph_hash"], r["priority"]) for r in listed] == [
        ("wf-intent", digest, "low")
    ]
    published = [m for m in pump.bus.published if m.topic == "agents-graph_low-researcher"]
    # Published again by the redelivery (the task had no result yet); one run either way.
    assert len(published) == 2

    unknown = IntentionMessage.for_workflow(run_id="wf-unknown", graph="no_such_graph")
    await pump.bus.publish(intents, unknown.model_dump_json().encode(), {})
    await pump.run()
    assert (await api.get("/workflow-runs/wf-unknown")).status_code == 404
    letters = (await api.get("/dead-letters")).json()
    assert any("no_such_graph" in json.dumps(letter) for letter in letters["dead_letters"])


async def test_the_websocket_streams_a_workflow_run_s_events(stack: Stack) -> None:
    clients, _ = stack
    api = clients["api"]
    await _start(api, "wf-ws")
    await api.post("/workflow-runs/wf-ws/cancel")
    app = build_api_app(API_SOURCE, lambda: get_deps("api"))
    async with WebSocketSession(app, "/workflow-runs/wf-ws/events/ws", f"token={TOKEN}") as ws:
        events = [event async for event in ws.events()]  # closes with 1000 after the end
    assert [(e["type"], e.get("status")) for e in events] == [
        ("workflow_started", None),
        ("workflow_ended", "cancelled"),
    ]
    after = f"token={TOKEN}&after={events[0]['id']}"
    async with WebSocketSession(app, "/workflow-runs/wf-ws/events/ws", after) as ws:
        assert [e["type"] async for e in ws.events()] == ["workflow_ended"]
    async with WebSocketSession(app, "/workflow-runs/nope/events/ws", f"token={TOKEN}") as ws:
        closed = await ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == 4404
    assert (await api.get("/workflow-runs/wf-ws/events/ws")).status_code == 426


async def test_watchers_of_one_workflow_run_share_one_feed(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await _start(api, "wf-hub")
    store = pump.deps.workflows
    assert store is not None
    hub = workflow_hub(store)
    first, second = hub.subscribe("wf-hub").__aiter__(), hub.subscribe("wf-hub").__aiter__()
    assert (await anext(first)).type == (await anext(second)).type == "workflow_started"
    assert len(hub.feeds) == 1 and hub.subscriber_count("wf-hub") == 2
    started = hub.feeds["wf-hub"].kept[0].id
    late = hub.subscribe("wf-hub", after=started).__aiter__()  # from the feed's kept events
    await api.post("/workflow-runs/wf-hub/cancel")
    assert (await anext(late)).type == "workflow_ended"
    for watcher in (first, second):
        ended = await anext(watcher)
        assert ended.type == "workflow_ended"
        with pytest.raises(StopAsyncIteration):
            await anext(watcher)
    with pytest.raises(StopAsyncIteration):
        await anext(late)
    assert hub.feeds == {}  # the feed ended with the run


async def test_an_agent_node_task_starts_one_linked_run_through_an_intent(stack: Stack) -> None:
    """What a worker does with an agent node's task: an intent starts the child run (once, by
    its derived id) on the run executor; the run's view names its workflow task, and the
    workflow run's view lists the task's child run."""
    import asyncio

    from cloudagents.graphs.agents import IntentChildRuns, agent_node_function
    from cloudagents.graphs.execution import run_task
    from cloudagents.graphs.spec import CompiledGraph

    clients, pump = stack
    api = clients["api"]
    agent = {
        "id": "summariser",
        "instructions": "Summarise.",
        "model": {
            "provider": "scripted",
            "name": "scripted-summariser",
            "script": [{"content": "short", "total_tokens": 3}],
        },
    }
    assert (await api.post("/agents", json=agent)).status_code == 201
    graph = Graph(name="agent_node")
    graph.add_agent_node("summary", agent="summariser", input_key="text", output_key="summary")
    graph.set_entry_point("summary")
    graph.set_finish_point("summary")
    digest = (await api.post("/workflows", json=json.loads(graph.compile().to_json()))).json()[
        "hash"
    ]
    started = await api.post(
        f"/workflows/{digest}/runs",
        json={"initial_state": {"text": "a long text"}, "workflow_id": "wf-agent"},
    )
    [task] = [
        TaskMessage.model_validate_json(m.data).task
        for m in pump.bus.published
        if m.topic == "agents-graph-agent"
    ]
    assert started.json()["pending"][0]["node_type"] == "agent"
    compiled = CompiledGraph.from_json(graph.compile().to_json())

    async def publish(data: bytes) -> None:
        await pump.deps.bus.publish("agents", data, {})

    children = IntentChildRuns(pump.deps.runs, publish, agents=pump.deps.agents, poll_seconds=0)

    async def deliver_task() -> object:
        node = agent_node_function(children, compiled.nodes["summary"])
        job = asyncio.ensure_future(
            run_task(compiled, task, {"text": "a long text"}, node, workflow_id="wf-agent")
        )
        while not job.done():
            await pump.run()
            await asyncio.sleep(0)
        return job.result()

    first = await deliver_task()
    again = await deliver_task()  # a redelivered (or re-dispatched) task: the same run
    assert first == again
    assert first.status == "done" and first.update == {"summary": "short"}  # type: ignore[attr-defined]
    runs = [r for r in await pump.deps.runs.list_runs(limit=50) if r.graph_task is not None]
    assert [r.run_id for r in runs] == ["wf-agent.0000-summary"]
    shown = (await api.get("/runs/wf-agent.0000-summary")).json()
    assert shown["graph_task"] == {
        "workflow_id": "wf-agent",
        "task_id": "0000-summary",
        "node": "summary",
        "attempt": 1,
    }
    view = (await api.get("/workflow-runs/wf-agent")).json()
    assert view["pending"][0]["agent_runs"] == [
        {
            "run_id": "wf-agent.0000-summary",
            "agent_id": "summariser",
            "attempt": 1,
            "status": "finished",
            "exit": "SATISFIED",
        }
    ]


async def test_an_agent_node_whose_run_fails_is_retried_with_a_new_run(stack: Stack) -> None:
    """A child run that ends ERROR fails the attempt; under the node's retry policy the next
    attempt is a new run (``….a2``); when that fails too the node fails, and a redelivery of
    the task afterwards starts no third run."""
    import asyncio

    from cloudagents.graphs import RetryPolicy
    from cloudagents.graphs.agents import IntentChildRuns, agent_node_function
    from cloudagents.graphs.execution import run_task
    from cloudagents.graphs.superstep import NodeTask

    clients, pump = stack
    broken = {
        "id": "broken",
        "instructions": "Answer.",
        "model": {
            "provider": "scripted",
            "name": "scripted-broken",
            "script": [{"content": "never", "fail_with": "bad_request", "fail_times": 9}],
        },
    }
    assert (await clients["api"].post("/agents", json=broken)).status_code == 201
    graph = Graph(name="broken_node")
    graph.add_agent_node(
        "answer",
        agent="broken",
        input_key="q",
        output_key="a",
        retry=RetryPolicy(max_attempts=2, backoff_seconds=0),
    )
    graph.set_entry_point("answer")
    graph.set_finish_point("answer")
    compiled = graph.compile()
    task = NodeTask(task_id="0000-answer", step=0, node="answer", node_type="agent")

    async def publish(data: bytes) -> None:
        await pump.deps.bus.publish("agents", data, {})

    children = IntentChildRuns(pump.deps.runs, publish, agents=pump.deps.agents, poll_seconds=0)

    async def deliver_task() -> object:
        node = agent_node_function(children, compiled.nodes["answer"])
        job = asyncio.ensure_future(
            run_task(compiled, task, {"q": "?"}, node, workflow_id="wf-broken")
        )
        while not job.done():
            await pump.run()
            await asyncio.sleep(0)
        return job.result()

    result = await deliver_task()
    assert (result.status, result.attempts) == ("failed", 2)  # type: ignore[attr-defined]
    assert result.error == (  # type: ignore[attr-defined]
        "AgentRunFailed: agent run wf-broken.0000-answer.a2 ended ERROR: "
        "bad_request: scripted failure on turn 0"
    )
    again = await deliver_task()  # redelivered: attempt 2's run is found, not a third started
    assert again.status == "failed"  # type: ignore[attr-defined]
    runs = {r.run_id: r for r in await pump.deps.runs.list_runs(limit=50) if r.graph_task}
    assert sorted(runs) == ["wf-broken.0000-answer", "wf-broken.0000-answer.a2"]
    assert [runs[r].graph_task.attempt for r in sorted(runs)] == [1, 2]  # type: ignore[union-attr]
    assert {r.result.exit.value for r in runs.values() if r.result} == {"ERROR"}


async def test_graphql_reads_cancels_and_streams_a_workflow_run_and_its_child_runs(
    stack: Stack,
) -> None:
    """GraphQL has the workflow runs the routes have: ``workflowRuns``, ``workflowRun``,
    ``workflowEvents``, ``cancelWorkflowRun`` and the ``workflowExecutionStream`` subscription.
    Cancelling a run also cancels the child run its agent node started (the route and the
    mutation are one command), and the subscription ends with ``workflow_ended``."""
    import asyncio

    from cloudagents.graphs.agents import IntentChildRuns, agent_node_function, child_run_id
    from cloudagents.graphs.execution import run_task
    from cloudagents.graphs.superstep import NodeTask
    from tests.services.test_hub_graphql import GraphQLSession, graphql_http
    from tests.services.test_streaming_services import slow_agent

    clients, pump = stack
    api = clients["api"]
    assert (await api.post("/agents", json=slow_agent("slow", delay=30))).status_code == 201
    graph = Graph(name="one_agent")
    graph.add_agent_node("answer", agent="slow", input_key="q", output_key="a")
    graph.set_entry_point("answer")
    graph.set_finish_point("answer")
    compiled = graph.compile()
    digest = (await api.post("/workflows", json=json.loads(compiled.to_json()))).json()["hash"]
    started = await api.post(
        f"/workflows/{digest}/runs", json={"workflow_id": "wf-gql", "initial_state": {"q": "6*7?"}}
    )
    assert started.status_code == 202, started.text

    # a worker takes the agent node's task: its child run starts and is left running
    async def publish(data: bytes) -> None:
        await pump.deps.bus.publish("agents", data, {})

    children = IntentChildRuns(pump.deps.runs, publish, agents=pump.deps.agents, poll_seconds=0)
    task = NodeTask(task_id="0000-answer", step=0, node="answer", node_type="agent")
    node = agent_node_function(children, compiled.nodes["answer"])
    job = asyncio.ensure_future(run_task(compiled, task, {"q": "6*7?"}, node, workflow_id="wf-gql"))
    child_id = child_run_id("wf-gql", "0000-answer")
    while await pump.deps.runs.get_run(child_id) is None:  # deliver one message at a time
        if pump.cursor < len(pump.bus.published):
            pump.cursor += 1
            await pump.deliver(pump.bus.published[pump.cursor - 1])
        await asyncio.sleep(0)

    app = build_api_app(API_SOURCE, lambda: get_deps("api"))
    gql = graphql_http(app)
    listed = await gql('{ workflowRuns(status: "running") { workflowId status graphHash } }')
    assert listed["data"] == {
        "workflowRuns": [{"workflowId": "wf-gql", "status": "running", "graphHash": digest}]
    }
    one = await gql(
        "query($w: String!) { workflowRun(workflowId: $w) { step stepLimit pending state } }",
        w="wf-gql",
    )
    shown = one["data"]["workflowRun"]  # type: ignore[index]
    assert (shown["step"], shown["state"]) == (0, {"q": "6*7?"})
    [pending] = shown["pending"]
    assert pending["task_id"] == "0000-answer" and pending["done"] is False
    assert [r["run_id"] for r in pending["agent_runs"]] == [child_id]
    assert (await gql('{ workflowRun(workflowId: "nope") { status } }'))["data"] == {
        "workflowRun": None
    }

    cancelled = await gql('mutation { cancelWorkflowRun(workflowId: "wf-gql") { status error } }')
    assert cancelled["data"] == {
        "cancelWorkflowRun": {"status": "cancelled", "error": "cancelled via the api"}
    }
    child = await pump.deps.runs.get_run(child_id)
    assert child is not None and child.result is not None
    assert child.result.exit.value == "CANCELLED"
    again = await gql('mutation { cancelWorkflowRun(workflowId: "wf-gql") { status } }')
    assert "409: workflow run 'wf-gql' is cancelled, not running" in str(again["errors"])
    result = await asyncio.wait_for(job, 10)  # the worker's wait ends with its child run
    assert result.status == "failed"  # type: ignore[attr-defined]

    events = await gql('query { workflowEvents(workflowId: "wf-gql") { id eventType step data } }')
    stored = (await api.get("/workflow-runs/wf-gql/events")).json()["events"]
    assert [(e["id"], e["eventType"]) for e in events["data"]["workflowEvents"]] == [  # type: ignore[index]
        (e["id"], e["type"]) for e in stored
    ]
    assert stored[-1]["type"] == "workflow_ended"
    unknown = await gql('query { workflowEvents(workflowId: "nope") { id } }')
    assert "unknown workflow run 'nope'" in str(unknown["errors"])

    stream = """subscription S($w: String!) {
      workflowExecutionStream(workflowId: $w) { id eventType workflowId }
    }"""
    async with GraphQLSession(app) as session:
        await session.init({"token": TOKEN})
        await session.send(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": stream, "variables": {"w": "wf-gql"}},
            }
        )
        received = []
        while (message := await session.receive_json())["type"] == "next":
            assert "errors" not in message["payload"], message
            received.append(message["payload"]["data"]["workflowExecutionStream"])
        assert message == {"id": "1", "type": "complete"}
    assert [e["id"] for e in received] == [e["id"] for e in stored]
    assert received[-1]["eventType"] == "workflow_ended"
    assert workflow_hub(pump.deps.workflows).subscriber_count("wf-gql") == 0  # type: ignore[arg-type]
