"""Agent nodes: a graph node whose task is a run of a registered agent (a child agent run).

``graph.add_agent_node("research", agent="researcher", input_key="topic",
output_key="findings")`` stores the agent's id in the compiled graph (data, never a closure).
When the node's task runs, it starts the agent's run through the normal run machinery, with an
id derived from the workflow id, the task id and the attempt (``child_run_id``), and linked to
them (``RunRecord.graph_task``); when the run ends, its final output is the node's update of
``output_key``. The run's own budget, guardrails, approvals and model/tool accounting apply.

* Redelivered or re-dispatched, the task derives the same id: it finds the run already
  started (or finished) and waits for that one; it never starts a second run.
* A run that ends other than ``SATISFIED`` fails the attempt (``AgentRunFailed``); under the
  node's retry policy the next attempt is a new run (``...-a2``), and the attempts found
  finished are not started again, so a re-dispatched task resumes where the last one was.
* In process (``Orchestrator``) the run is ``Agent.run`` of the agent registered with
  ``registry.register_agent``; on workers (``DistributedWorker``) it is an intent published to
  the workspace topic, which the run executor carries to its end (``IntentChildRuns``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.results import LoopExit, LoopResult
from cloudagents.domain.runs import GraphTaskLink, RunRecord, RunStatus
from cloudagents.graphs.errors import GraphError
from cloudagents.graphs.spec import CompiledGraph, NodeSpec
from cloudagents.graphs.state import State
from cloudagents.graphs.superstep import NodeTask, task_id

RUN_ID_LIMIT = 128
_NOT_ID = re.compile(r"[^A-Za-z0-9_.:-]")


class AgentRunFailed(Exception):
    """An agent node's run ended other than ``SATISFIED`` (retried under the node's policy)."""

    def __init__(self, run_id: str, result: LoopResult) -> None:
        reason = result.payload.get("reason") or "; ".join(result.errors) or ""
        super().__init__(f"agent run {run_id} ended {result.exit.value}: {reason}".rstrip(": "))
        self.run_id = run_id
        self.result = result


def child_run_id(workflow_id: str, task: str, attempt: int = 1) -> str:
    """The run id of an agent node task's ``attempt``: the same on every delivery."""
    raw = f"{workflow_id}.{task}" + (f".a{attempt}" if attempt > 1 else "")
    clean = _NOT_ID.sub("-", raw)
    if clean == raw and len(raw) <= RUN_ID_LIMIT:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:24]
    return f"{clean[: RUN_ID_LIMIT - len(digest) - 1]}.{digest}"


def agent_message(state: Mapping[str, Any], spec: NodeSpec) -> str:
    """The run's message: the ``input_key`` value (a string as is, anything else as JSON)."""
    assert spec.agent is not None
    key = spec.agent.input_key
    if key not in state:
        raise GraphError(f"agent node {spec.name!r}: state has no input key {key!r}")
    value = state[key]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def final_output(result: LoopResult) -> Any:
    """A ``SATISFIED`` run's final output, as an agent-to-agent call gets it
    (``engine/calls.py``): a text answer as the text, a structured one as its object."""
    payload = dict(result.payload)
    if set(payload) == {"answer"} and isinstance(payload["answer"], str):
        return payload["answer"]
    return payload


async def agent_runs(
    runs: Any, graph: CompiledGraph, workflow_id: str, tasks: list[NodeTask]
) -> dict[str, list[dict[str, Any]]]:
    """The child runs started so far by the agent-node tasks among ``tasks`` (``runs``: a
    ``RunStore``), by task id: each attempt's run id, status and exit (what a workflow run's
    view shows)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        spec = graph.nodes.get(task.node)
        if spec is None or spec.agent is None:
            continue
        attempts = spec.retry.max_attempts if spec.retry is not None else 1
        found[task.task_id] = []
        for attempt in range(1, attempts + 1):
            run_id = child_run_id(workflow_id, task.task_id, attempt)
            run: RunRecord | None = await runs.get_run(run_id)
            if run is None:
                break
            found[task.task_id].append(
                {
                    "run_id": run_id,
                    "agent_id": run.agent_id,
                    "attempt": attempt,
                    "status": run.status.value,
                    "exit": run.result.exit.value if run.result is not None else None,
                }
            )
    return found


class ChildRuns(Protocol):
    """What an agent node needs of the run machinery."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run, if it was started."""
        ...

    async def run(self, run_id: str, agent: str, message: str, link: GraphTaskLink) -> LoopResult:
        """Start the run ``run_id`` unless it exists, and return its result when it ends."""
        ...


async def run_agent_node(
    runs: ChildRuns, spec: NodeSpec, state: State, *, max_attempts: int
) -> dict[str, Any]:
    """One attempt of an agent node's task: the first attempt not yet finished failed (at most
    ``max_attempts``), run to its end; returns the node's update or raises ``AgentRunFailed``."""
    assert spec.agent is not None
    if state.workflow_id is None:
        raise GraphError(f"agent node {spec.name!r} needs a workflow id")
    task = task_id(state.step, spec.name)
    attempt = 1
    while attempt < max_attempts:
        found = await runs.get_run(child_run_id(state.workflow_id, task, attempt))
        if found is None or found.result is None or found.result.exit is LoopExit.SATISFIED:
            break
        attempt += 1  # that attempt failed: a retry (or a re-dispatch) runs the next one
    run_id = child_run_id(state.workflow_id, task, attempt)
    link = GraphTaskLink(
        workflow_id=state.workflow_id, task_id=task, node=spec.name, attempt=attempt
    )
    result = await runs.run(run_id, spec.agent.agent, agent_message(state, spec), link)
    if result.exit is not LoopExit.SATISFIED:
        raise AgentRunFailed(run_id, result)
    return {spec.agent.output_key: final_output(result)}


def agent_node_function(runs: ChildRuns, spec: NodeSpec) -> Callable[[State], Any]:
    """The node function of an agent node (what ``run_task`` calls, retries and times out)."""
    max_attempts = spec.retry.max_attempts if spec.retry is not None else 1

    async def node(state: State) -> dict[str, Any]:
        return await run_agent_node(runs, spec, state, max_attempts=max_attempts)

    node.__qualname__ = f"agent_node[{spec.name}]"
    return node


class InProcessChildRuns:
    """Agent nodes in process: ``Agent.run`` of the agents registered by id (seed 000's API),
    each with the run id and the link to its task."""

    def __init__(self, agents: Mapping[str, Any], contexts: Mapping[str, Mapping[str, Any]]):
        self.agents = agents
        self.contexts = contexts

    def _agent(self, agent_id: str) -> Any:
        found = self.agents.get(agent_id)
        if found is None:
            raise GraphError(
                f"no agent {agent_id!r} registered for agent nodes "
                f"(have {sorted(self.agents)}); use registry.register_agent"
            )
        return found

    async def get_run(self, run_id: str) -> RunRecord | None:
        for agent in self.agents.values():
            found: RunRecord | None = await agent.driver.deps.runs.get_run(run_id)
            if found is not None:
                return found
        return None

    async def run(self, run_id: str, agent: str, message: str, link: GraphTaskLink) -> LoopResult:
        result: LoopResult = await self._agent(agent).run(
            message, dict(self.contexts.get(agent, {})), run_id=run_id, graph_task=link
        )
        return result


class IntentChildRuns:
    """Agent nodes on workers: the run is started by an intent on the workspace topic (the
    run executor creates it once, by its id, and carries it to its end); the task waits for
    the run document to say it finished, holding its lease meanwhile."""

    def __init__(
        self,
        runs: Any,
        publish: Callable[[bytes], Any],
        *,
        agents: Any = None,
        poll_seconds: float = 0.5,
        republish_seconds: float = 10.0,
    ) -> None:
        """``runs``: a ``RunStore``; ``publish``: sends an intent to the workspace topic;
        ``agents``: an ``AgentStore`` to refuse an unknown agent before publishing."""
        self.runs = runs
        self.publish = publish
        self.agents = agents
        self.poll_seconds = poll_seconds
        self.republish_seconds = republish_seconds
        """While the run does not exist (or is still queued at its first step), its intent is
        published again this often: an intent lost on the way (a dead executor's push) never
        leaves the task waiting for nothing. Once the run has stepped, its own wake-ups carry
        it (``engine.md``)."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        found: RunRecord | None = await self.runs.get_run(run_id)
        return found

    async def run(self, run_id: str, agent: str, message: str, link: GraphTaskLink) -> LoopResult:
        found = await self.get_run(run_id)
        if found is None and self.agents is not None and not await self.agents.get_agent(agent):
            # Not retried (a GraphError): the executor would dead-letter the intent, and this
            # task would wait for a run that never starts.
            raise GraphError(f"agent node {link.node!r}: no agent {agent!r} is registered")
        intent = IntentionMessage.for_run(
            run_id=run_id, agent_id=agent, message=message, source_agent="graph", graph_task=link
        ).model_dump_json()
        loop = asyncio.get_running_loop()
        published: float | None = None
        while found is None or not found.finished:
            unstarted = found is None or (found.seq == 0 and found.status is RunStatus.QUEUED)
            if unstarted and (
                published is None or loop.time() - published >= self.republish_seconds
            ):
                # As the handoff broker does: only while the run is absent or still queued at
                # its first step (whoever created it may have died before stepping it). The
                # executor starts a run once by its id; a duplicate intent is acknowledged.
                # Once the run has stepped, its own wake-ups carry it.
                await self.publish(intent.encode())
                published = loop.time()
            await asyncio.sleep(self.poll_seconds)
            found = await self.get_run(run_id)
        assert found.result is not None  # a finished run carries its result
        return found.result
