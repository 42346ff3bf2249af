"""Node functions of the push worker tests (``test_graphs_push.py``): imported by the graph
worker service (``CLOUDAGENTS_GRAPH_MODULES``), by the pull worker and by the in-process
reference run, so all three run the same code.

Every node appends ``{node}@{step}`` to ``log`` (reducer ``extend``): a result applied twice or
lost shows in the final state. Every execution of a node function also appends a line to
``$GRAPH_PUSH_EXECUTIONS/{workflow}.log``, so a test sees how often each ran. ``crash`` kills
its own process (SIGKILL, as Cloud Run losing the instance) on its first execution in a
workflow, after its delivery claimed the task.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from cloudagents.graphs import END, Graph, NodeRegistry, State

registry = NodeRegistry()
PUSHED = ("plan", "b", "crash", "after", "agent")
"""Node types served by the graph worker service (``agent``: agent nodes); ``a`` and ``merge``
are pulled."""
SUMMARISER = "gp-summariser"


def executions(workflow_id: str) -> list[str]:
    path = Path(os.environ["GRAPH_PUSH_EXECUTIONS"]) / f"{workflow_id}.log"
    return path.read_text().split() if path.exists() else []


def _ran(state: State, node: str) -> list[str]:
    folder = os.environ.get("GRAPH_PUSH_EXECUTIONS")
    if folder:
        with (Path(folder) / f"{state.workflow_id}.log").open("a") as log:
            log.write(f"{node}\n")
    return [f"{node}@{state.step}"]


@registry.register("plan")
def plan(state: State) -> dict[str, Any]:
    return {"topic": str(state.get("topic", "")).upper(), "log": _ran(state, "plan")}


@registry.register("a")
def a(state: State) -> dict[str, Any]:
    return {"parts": [f"a:{state['topic']}"], "log": _ran(state, "a")}


@registry.register("b")
async def b(state: State) -> dict[str, Any]:
    return {"parts": [f"b:{state['topic']}"], "log": _ran(state, "b")}


@registry.register("merge")
def merge(state: State) -> dict[str, Any]:
    return {"text": " ".join(sorted(state["parts"])), "log": _ran(state, "merge")}


@registry.register("crash")
def crash(state: State) -> dict[str, Any]:
    first = "crash" not in executions(state.workflow_id)
    log = _ran(state, "crash")
    if first and os.environ.get("GRAPH_PUSH_CRASH") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"crashed": True, "log": log}


@registry.register("after")
def after(state: State) -> dict[str, Any]:
    return {"done": True, "log": _ran(state, "after")}


def mixed_graph() -> Graph:
    """``plan`` (push) fans out to ``a`` (pull) and ``b`` (push); ``merge`` (pull) joins them."""
    graph = Graph(name="push-mixed", reducers={"parts": "extend", "log": "extend"})
    graph.add_node("plan", writes=["topic", "log"])
    graph.add_node("a", writes=["parts", "log"])
    graph.add_node("b", writes=["parts", "log"])
    graph.add_node("merge", writes=["text", "log"])
    graph.set_entry_point("plan")
    graph.add_edge("plan", "a")
    graph.add_edge("plan", "b")
    graph.add_edge("a", "merge")
    graph.add_edge("b", "merge")
    graph.add_edge("merge", END)
    return graph


def push_only_graph() -> Graph:
    """``plan`` then ``b``, both push-dispatched: a run needs no process but the services."""
    graph = Graph(name="push-only", reducers={"parts": "extend", "log": "extend"})
    graph.add_node("plan", writes=["topic", "log"])
    graph.add_node("b", writes=["parts", "log"])
    graph.set_entry_point("plan")
    graph.add_edge("plan", "b")
    graph.add_edge("b", END)
    return graph


def agent_graph() -> Graph:
    """``plan`` (push), then the agent node ``summary`` (type ``agent``, push): its child run
    is started by the graph worker service and run by the run executor."""
    graph = Graph(name="push-agent", reducers={"log": "extend"})
    graph.add_node("plan", writes=["topic", "log"])
    graph.add_agent_node("summary", agent=SUMMARISER, input_key="topic", output_key="summary")
    graph.set_entry_point("plan")
    graph.add_edge("plan", "summary")
    graph.set_finish_point("summary")
    return graph


def summariser() -> dict[str, Any]:
    """The scripted agent of the agent node (registered with ``POST /agents``)."""
    return {
        "id": SUMMARISER,
        "instructions": "Summarise the topic.",
        "model": {
            "provider": "scripted",
            "name": "scripted-gp-summariser",
            "script": [{"content": "A short summary.", "total_tokens": 5}],
        },
        "tools": [],
    }


def crash_graph() -> Graph:
    """``crash`` then ``after``, both push-dispatched."""
    graph = Graph(name="push-crash", reducers={"log": "extend"})
    graph.add_node("crash", writes=["crashed", "log"])
    graph.add_node("after", writes=["done", "log"])
    graph.set_entry_point("crash")
    graph.add_edge("crash", "after")
    graph.add_edge("after", END)
    return graph
