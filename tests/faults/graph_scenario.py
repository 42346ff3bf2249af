"""The graph of the graph fault suite, and its node functions (shared by the worker processes
and the in-process reference run).

``split`` starts a round; it fans out to ``a``, ``b``, ``c`` and ``d``; ``merge`` joins them and
its router loops back to ``split`` until ``ROUNDS`` rounds ran (a bounded conditional loop);
then the agent node ``summary`` runs the scripted agent ``SUMMARISER`` on the merged text.

Every node appends ``{node}@{step}`` to ``log`` (reducer ``extend``): the final state holds one
entry per task result applied, so a result applied twice or lost shows in it. Every execution
of a node function also increments ``graph_fault_executions/{workflow}-{task}`` in Firestore:
after a crash a node function may run again (its result is still applied once).
"""

from __future__ import annotations

import time
from typing import Any

from cloudagents.graphs import END, Graph, State
from cloudagents.graphs.superstep import task_id

ROUNDS = 2
SUMMARISER = "gf-summariser"
EXECUTIONS = "graph_fault_executions"
WORK = ("a", "b", "c", "d")
NODE_SECONDS = 0.05
"""How long a node function works: kills land inside node functions, not only between them."""

_db: Any = None


def _count(state: State, node: str) -> None:
    global _db
    if _db is None:
        from google.cloud import firestore

        _db = firestore.Client()
    from google.cloud import firestore

    ref = _db.collection(EXECUTIONS).document(f"{state.workflow_id}-{task_id(state.step, node)}")
    ref.set({"workflow_id": state.workflow_id, "n": firestore.Increment(1)}, merge=True)
    time.sleep(NODE_SECONDS)


def split(state: State) -> dict[str, Any]:
    _count(state, "split")
    return {"rounds": state.get("rounds", 0) + 1, "log": [f"split@{state.step}"]}


def work(node: str) -> Any:
    def run(state: State) -> dict[str, Any]:
        _count(state, node)
        return {"parts": [f"{node}{state['rounds']}"], "log": [f"{node}@{state.step}"]}

    run.__name__ = run.__qualname__ = f"work_{node}"
    return run


def merge(state: State) -> dict[str, Any]:
    _count(state, "merge")
    return {"text": " ".join(sorted(state["parts"])), "log": [f"merge@{state.step}"]}


def route_merge(state: State) -> str:
    return "again" if state["rounds"] < ROUNDS else "done"


FUNCTIONS: dict[str, Any] = {"split": split, "merge": merge, **{n: work(n) for n in WORK}}


def build() -> Graph:
    graph = Graph(name="graph-faults", reducers={"parts": "extend", "log": "extend"})
    graph.add_node("split", writes=["rounds", "log"])
    for node in WORK:
        graph.add_node(node, writes=["parts", "log"])
    graph.add_node("merge", writes=["text", "log"])
    graph.add_agent_node("summary", agent=SUMMARISER, input_key="text", output_key="summary")
    graph.set_entry_point("split")
    for node in WORK:
        graph.add_edge("split", node)
        graph.add_edge(node, "merge")
    graph.add_conditional_edge("merge", "route_merge", {"again": "split", "done": "summary"})
    graph.set_finish_point("summary")
    return graph


def summariser() -> dict[str, Any]:
    """The scripted agent of the agent node (registered with ``POST /agents``)."""
    return {
        "id": SUMMARISER,
        "instructions": "Summarise the merged parts.",
        "model": {
            "provider": "scripted",
            "name": "scripted-gf-summariser",
            "script": [{"content": "Two rounds of four parts, merged.", "total_tokens": 12}],
        },
        "tools": [],
        "retry": {"max_attempts": 3, "backoff_seconds": 0.05},
    }


__all__ = ["END", "FUNCTIONS", "build", "route_merge", "summariser"]
