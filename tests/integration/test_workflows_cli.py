"""``cloudagents workflows ...`` against the local stack's api, with two ``DistributedWorker``s
of different node types in this process: register the example's graph, run it to the end,
inspect it, and cancel a run nobody serves."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudagents import cli
from cloudagents.domain.intents import IntentionMessage
from cloudagents.graphs import Graph, State
from cloudagents.graphs.distributed import DistributedWorker
from cloudagents.local.stack import StackState
from tests.integration.test_runs_on_emulators import publish

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "distributed_workflow.py"


def workers(state: StackState) -> list[DistributedWorker]:
    options: dict[str, Any] = {"project_id": state.project, "workspace": state.workspace}
    researchers = DistributedWorker(worker_id="cli-research", node_types={"researcher"}, **options)
    writers = DistributedWorker(worker_id="cli-write", node_types={"writer"}, **options)

    @researchers.register("researcher")
    async def researcher(s: State) -> dict[str, Any]:
        return {"findings": [f"Finding about {s.get('query', '')}"]}

    @writers.register("writer")
    async def writer(s: State) -> dict[str, Any]:
        return {"report": f"Report with {len(s.get('findings', []))} findings"}

    return [researchers, writers]


async def test_workflows_commands_register_run_show_and_cancel(stack_state: StackState) -> None:
    base = ["--api", stack_state.api_url, "--token", stack_state.api_token or ""]

    async def run(*args: str) -> tuple[int, list[str]]:
        def call() -> tuple[int, list[str]]:
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                code = cli.main([*base, *args])
            assert not stderr.getvalue() or code != 0, stderr.getvalue()
            return code, stdout.getvalue().splitlines()

        return await asyncio.to_thread(call)

    code, lines = await run("workflows", "register", f"{EXAMPLE}:graph")
    assert code == 0
    digest, name = lines[0].split()
    assert name == "research_workflow" and len(digest) == 64
    code, lines = await run("workflows", "list")
    assert f"{digest} research_workflow" in lines

    serving = workers(stack_state)
    for worker in serving:
        await worker.start()
    try:
        code, lines = await run(
            "workflows",
            "run",
            digest,
            "--state",
            '{"query": "AI trends"}',
            "--id",
            "cli-wf-1",
            "--wait",
            "--timeout",
            "60",
        )
        assert code == 0, lines
        assert lines[0] == "started workflow run cli-wf-1"
        assert lines[1].split()[:3] == ["cli-wf-1", "research_workflow", "completed"]
        assert '"report": "Report with 1 findings"' in "\n".join(lines)
        # The workers keep serving while runs are resumed and forked: a worker stopped and
        # started again on the same subscription would leave the Pub/Sub emulator a dead
        # stream that it keeps routing messages to (docs/graphs.md).
        await resume_and_fork(run, digest)
    finally:
        for worker in serving:
            await worker.stop()

    code, lines = await run("workflows", "checkpoints", "cli-wf-1")
    assert lines == [
        "step 0    running     pending researcher",
        "step 1    running     pending writer",
        "step 2    completed   pending -",
    ]
    code, lines = await run("workflows", "checkpoints", "cli-wf-1", "--state")
    assert code == 0, lines
    assert lines[1] == '  after -: {"query": "AI trends"}', lines
    assert lines[3] == (
        '  after researcher: {"findings": ["Finding about AI trends"], "query": "AI trends"}'
    ), lines
    code, lines = await run("workflows", "runs", "--status", "completed")
    assert any(line.startswith("cli-wf-1 ") for line in lines)

    # With no worker running, a run waits at step 0 until it is cancelled.
    code, lines = await run("workflows", "run", digest, "--id", "cli-wf-2")
    assert (code, lines) == (0, ["started workflow run cli-wf-2"])
    code, lines = await run("workflows", "show", "cli-wf-2")
    assert lines[0].split()[2:5] == ["running", "step", "0"]
    assert lines[2].split() == ["pending", "0000-researcher", "researcher"]
    code, lines = await run("workflows", "cancel", "cli-wf-2")
    assert (code, lines) == (0, ["cli-wf-2 cancelled at step 0"])
    code, _ = await run("workflows", "cancel", "cli-wf-2")
    assert code == 2  # 409: not running

    # A cancelled run resumes (nobody serves it now: it is running at step 0 again).
    code, lines = await run("workflows", "resume", "cli-wf-2", "--max-steps", "7")
    assert (code, lines) == (0, ["resumed cli-wf-2 at step 0 (limit 7)"])
    code, _ = await run("workflows", "resume", "cli-wf-2")
    assert code == 2  # 409: running
    code, lines = await run("workflows", "cancel", "cli-wf-2")
    assert code == 0, lines


async def resume_and_fork(run: Any, digest: str) -> None:
    """A run stopped at its step limit resumes with a higher one; a finished run forks from
    step 1 with other findings; the events of the first run."""
    code, lines = await run("workflows", "events", "cli-wf-1")
    types = [line.split()[1] for line in lines]
    assert types[0] == "workflow_started" and types[-1] == "workflow_ended", lines
    assert types.count("superstep_committed") == 2 and types.count("node_finished") == 2
    code, lines = await run(
        "workflows", "run", digest, "--id", "cli-wf-limit", "--max-steps", "1", "--wait"
    )
    assert code == 1 and lines[1].split()[2] == "step_limit", lines
    code, _ = await run("workflows", "resume", "cli-wf-limit")
    assert code == 2  # 409: its limit leaves nothing to run
    code, lines = await run(
        "workflows", "resume", "cli-wf-limit", "--max-steps", "5", "--wait", "--timeout", "60"
    )
    assert code == 0, lines
    assert lines[0] == "resumed cli-wf-limit at step 1 (limit 5)"
    assert lines[1].split()[:3] == ["cli-wf-limit", "research_workflow", "completed"]
    code, lines = await run(
        "workflows",
        "fork",
        "cli-wf-1",
        "--step",
        "1",
        "--set",
        '{"findings": ["a", "b"]}',
        "--id",
        "cli-wf-3",
        "--wait",
        "--timeout",
        "60",
    )
    assert code == 0, lines
    assert lines[0] == "forked cli-wf-1@1 into workflow run cli-wf-3"
    assert '"report": "Report with 2 findings"' in "\n".join(lines)
    code, _ = await run("workflows", "resume", "cli-wf-3")
    assert code == 2  # 409: a completed run has nothing to resume
    code, _ = await run("workflows", "fork", "cli-wf-1", "--step", "7")
    assert code != 0  # 404: no checkpoint at step 7


async def test_a_workflow_intent_delivered_twice_runs_once_and_streams_its_events(
    stack_state: StackState, api: httpx.Client
) -> None:
    """The run executor starts a graph named in an intent on the workspace topic (twice
    published: one run); the api's SSE stream shows each superstep and node event once."""
    # Node types of its own: fresh subscriptions (see resume_and_fork on restarted workers).
    graph = Graph(name="intent_flow")
    graph.add_node("fetch", node_type="intent-fetch")
    graph.add_node("summarise", node_type="intent-summarise")
    graph.set_entry_point("fetch")
    graph.add_edge("fetch", "summarise")
    graph.set_finish_point("summarise")
    registered = await asyncio.to_thread(
        api.post, "/workflows", json=json.loads(graph.compile().to_json())
    )
    registered.raise_for_status()
    intent = IntentionMessage.for_workflow(
        run_id="intent-wf-1", graph="intent_flow", initial_state={"query": "GCP"}
    )
    data = intent.model_dump_json().encode()
    worker = DistributedWorker(
        worker_id="intent-worker",
        node_types={"intent-fetch", "intent-summarise"},
        project_id=stack_state.project,
        workspace=stack_state.workspace,
    )

    @worker.register("intent-fetch")
    async def fetch(s: State) -> dict[str, Any]:
        return {"found": f"about {s['query']}"}

    @worker.register("intent-summarise")
    async def summarise(s: State) -> dict[str, Any]:
        return {"summary": s["found"].upper()}

    serving = [worker]
    for worker in serving:
        await worker.start()
    try:
        for _ in range(2):
            await asyncio.to_thread(publish, stack_state, stack_state.workspace, data)

        def stream(**headers: str) -> list[tuple[str, str, dict[str, Any]]]:
            frames = []
            with api.stream(
                "GET", "/workflow-runs/intent-wf-1/events/stream", headers=headers, timeout=60
            ) as response:
                response.raise_for_status()
                for block in response.iter_text():
                    frames.append(block)
            events = []
            for frame in "".join(frames).split("\n\n"):
                lines = dict(
                    line.split(": ", 1) for line in frame.splitlines() if not line.startswith(":")
                )
                if "id" in lines:
                    events.append((lines["id"], lines["event"], json.loads(lines["data"])))
            return events

        async def started() -> None:
            while (
                await asyncio.to_thread(api.get, "/workflow-runs/intent-wf-1")
            ).status_code == 404:
                await asyncio.sleep(0.1)

        async with asyncio.timeout(60):
            await started()
        events = await asyncio.to_thread(stream)
    finally:
        for worker in serving:
            await worker.stop()
    kinds = [(kind, data.get("node") or data.get("status")) for _, kind, data in events]
    assert kinds == [
        ("workflow_started", None),
        ("node_started", "fetch"),
        ("node_finished", "fetch"),
        ("superstep_committed", "running"),
        ("node_started", "summarise"),
        ("node_finished", "summarise"),
        ("superstep_committed", "completed"),
        ("workflow_ended", "completed"),
    ], kinds
    ids = [event_id for event_id, _, _ in events]
    assert ids == sorted(set(ids))
    listed = await asyncio.to_thread(api.get, "/workflow-runs", params={"status": "completed"})
    runs = listed.json()["workflow_runs"]
    assert [r["workflow_id"] for r in runs].count("intent-wf-1") == 1
    shown = (await asyncio.to_thread(api.get, "/workflow-runs/intent-wf-1")).json()
    assert shown["state"] == {"query": "GCP", "found": "about GCP", "summary": "ABOUT GCP"}
    # Resumed after the first commit: the rest, nothing twice.
    rest = await asyncio.to_thread(stream, **{"Last-Event-ID": ids[3]})
    assert [event_id for event_id, _, _ in rest] == ids[4:]
