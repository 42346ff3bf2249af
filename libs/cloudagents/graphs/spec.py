"""A compiled graph as plain data: canonical JSON, pinned by its SHA-256.

Nothing here holds a closure. Nodes name their function by node type (a registry or worker
key) and conditional edges name their router, so a later step can store the JSON by hash and
every service that loads it sees the same graph. An in-process ``Graph`` may also bind inline
functions; those bindings live in private attributes and never enter the JSON or the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from pydantic import (
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from cloudagents.domain.base import Model, Persisted
from cloudagents.graphs.errors import GraphError

END = "__end__"
"""The end of the workflow: an edge (or a conditional target) to END finishes that path."""


class RetryPolicy(Model):
    """How often a node is attempted, and which failures earn another attempt.

    ``retry_on`` holds exception class names; an exception matches when any class in its
    MRO has one of these names, so the default ``("Exception",)`` retries every ordinary
    failure. A node timeout raises ``TimeoutError`` and is retried like any other failure.
    """

    max_attempts: int = Field(default=3, ge=1)
    backoff_seconds: float = Field(default=0.5, ge=0)
    backoff_multiplier: float = Field(default=2.0, ge=1)
    retry_on: tuple[str, ...] = ("Exception",)

    @field_validator("retry_on", mode="before")
    @classmethod
    def _class_names(cls, value: Any) -> Any:
        # Accept exception classes for convenience, but store names: the spec stays data.
        if isinstance(value, (list, tuple)):
            return tuple(v.__name__ if isinstance(v, type) else v for v in value)
        return value

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 for the first retry)."""
        return float(self.backoff_seconds * self.backoff_multiplier ** max(attempt - 2, 0))

    def retries(self, error: BaseException) -> bool:
        """Whether this failure is one the policy retries."""
        names = {klass.__name__ for klass in type(error).__mro__}
        return any(name in names for name in self.retry_on)


AGENT_NODE_TYPE = "agent"
"""The node type of agent nodes unless one is given: any worker serving it runs agent nodes
(it needs no function registered; the agent's run is the run executor's)."""


class AgentNodeSpec(Model):
    """An agent node: the node task is a run of the registered agent ``agent``, started once
    (its id derived from the workflow and the task) and linked to them; its final output is
    the node's update of ``output_key``."""

    agent: str = Field(min_length=1, max_length=128)
    input_key: str = Field(min_length=1)
    """The state key whose value is the run's message (a string as is, anything else as JSON)."""
    output_key: str = Field(min_length=1)
    """The state key the run's final output is written to."""


class NodeSpec(Model):
    """One node: its function key, retry and timeout, and the keys it declares it writes."""

    name: str
    node_type: str
    """Registry / worker key of the node function (defaults to the node name)."""
    retry: RetryPolicy | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    writes: list[str] | None = None
    """Declared output keys (sorted); None means undeclared, checked at run time only."""
    agent: AgentNodeSpec | None = None
    """Set for an agent node (``Graph.add_agent_node``): the node runs that agent."""

    @model_serializer(mode="wrap")
    def _omit_no_agent(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A function node is written exactly as before agent nodes existed, so the canonical
        # JSON, and so the hash every stored run pins, of an existing graph does not change.
        data = handler(self)
        if self.agent is None and isinstance(data, dict):
            data.pop("agent", None)
        return data


class EdgeSpec(Model):
    """An unconditional edge; ``target`` may be END."""

    source: str
    target: str


class BranchSpec(Model):
    """A conditional edge: the router named ``router`` picks a key of ``targets``."""

    source: str
    router: str
    targets: dict[str, str]


class Topology(Model):
    """Edges classified by a depth-first walk from the entry in sorted order.

    Back edges (to a node on the walk's stack) close loops; the rest form a DAG on which
    joins wait and skips propagate. Derived from the spec, so every reader computes the same.
    """

    forward_predecessors: dict[str, list[str]]
    back_edges: list[tuple[str, str]]
    forward_descendants: dict[str, list[str]]
    order: list[str]
    """Nodes in forward-DAG order, ties by name: the order joins are resolved in."""


class CompiledGraph(Persisted):
    """A validated graph; build one with ``Graph.compile()`` or ``CompiledGraph.from_json``."""

    name: str
    description: str = ""
    entry_point: str
    nodes: dict[str, NodeSpec]
    edges: list[EdgeSpec]
    branches: dict[str, BranchSpec] = {}
    reducers: dict[str, str] = {}
    """State key -> reducer name; keys not listed use ``last_value``."""

    _functions: dict[str, Callable[..., Any]] = PrivateAttr(default_factory=dict)
    _routers: dict[str, Callable[..., Any]] = PrivateAttr(default_factory=dict)
    _topology: Topology | None = PrivateAttr(default=None)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, so equal graphs give equal bytes."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of ``to_json()``: the id a run pins."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str | bytes) -> CompiledGraph:
        """Load a graph stored by ``to_json``; its functions come from a registry or workers."""
        graph = cls.model_validate_json(text)
        graph.check_structure()
        return graph

    def check_structure(self) -> None:
        """Raise ``GraphError`` for a bad entry, an edge to or from an unknown node, a
        conditional target that is neither a node nor END, or a node the entry cannot reach
        or that cannot reach END."""
        if self.entry_point not in self.nodes:
            raise GraphError(f"entry point {self.entry_point!r} is not a node of {self.name!r}")
        for edge in self.edges:
            for end, label in ((edge.source, "from"), (edge.target, "to")):
                if end not in self.nodes and end != END:
                    raise GraphError(
                        f"edge {edge.source!r} -> {edge.target!r} goes {label} unknown node {end!r}"
                    )
        for source, branch in self.branches.items():
            if source not in self.nodes:
                raise GraphError(f"conditional edge from unknown node {source!r}")
            for key, target in sorted(branch.targets.items()):
                if target not in self.nodes and target != END:
                    raise GraphError(
                        f"conditional edge from {source!r}: target {key!r} -> {target!r} "
                        "is neither a node nor END"
                    )
        _check_paths(self)

    def reducer_for(self, key: str) -> str:
        """The reducer name of a state key."""
        return self.reducers.get(key, "last_value")

    def successors(self, node: str) -> list[str]:
        """Every possible next node of ``node`` (static and conditional, END excluded), sorted."""
        targets = {e.target for e in self.edges if e.source == node}
        branch = self.branches.get(node)
        if branch is not None:
            targets.update(branch.targets.values())
        targets.discard(END)
        return sorted(targets)

    def static_targets(self, node: str) -> set[str]:
        """Targets of unconditional edges out of ``node`` (may include END)."""
        return {e.target for e in self.edges if e.source == node}

    @property
    def topology(self) -> Topology:
        """Forward predecessors, back edges and forward descendants (computed once)."""
        if self._topology is None:
            self._topology = _classify(self)
        return self._topology

    def is_back_edge(self, source: str, target: str) -> bool:
        """Whether ``source -> target`` closes a loop (re-entry fires the target on its own)."""
        return (source, target) in self.topology.back_edges


def _classify(graph: CompiledGraph) -> Topology:
    back: set[tuple[str, str]] = set()
    state: dict[str, str] = {}  # "open" while on the stack, "done" after
    # Iterative DFS: recursion depth would otherwise limit graph size.
    stack: list[tuple[str, list[str]]] = [(graph.entry_point, graph.successors(graph.entry_point))]
    state[graph.entry_point] = "open"
    while stack:
        node, todo = stack[-1]
        if not todo:
            state[node] = "done"
            stack.pop()
            continue
        nxt = todo.pop(0)
        if state.get(nxt) == "open":
            back.add((node, nxt))
        elif nxt not in state:
            state[nxt] = "open"
            stack.append((nxt, graph.successors(nxt)))
    preds: dict[str, set[str]] = {name: set() for name in graph.nodes}
    for source in graph.nodes:
        for target in graph.successors(source):
            if (source, target) not in back:
                preds[target].add(source)
    descendants: dict[str, set[str]] = {}
    order = _topological_order(graph.nodes, preds)
    for name in order[::-1]:
        found: set[str] = set()
        for target in graph.successors(name):
            if (name, target) not in back:
                found.add(target)
                found |= descendants.get(target, set())
        descendants[name] = found
    return Topology(
        forward_predecessors={k: sorted(v) for k, v in preds.items()},
        back_edges=sorted(back),
        forward_descendants={k: sorted(v) for k, v in descendants.items()},
        order=order,
    )


def _topological_order(nodes: dict[str, NodeSpec], preds: dict[str, set[str]]) -> list[str]:
    remaining = {k: set(v) for k, v in preds.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(k for k, v in remaining.items() if not v)
        if not ready:  # only nodes unreachable from the entry; compile() rejects those
            ready = sorted(remaining)
        for name in ready:
            order.append(name)
            del remaining[name]
        for v in remaining.values():
            v.difference_update(ready)
    return order


def _check_paths(graph: CompiledGraph) -> None:
    reached = {graph.entry_point}
    todo = [graph.entry_point]
    while todo:
        for target in graph.successors(todo.pop()):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    unreachable = sorted(set(graph.nodes) - reached)
    if unreachable:
        raise GraphError(
            f"nodes {unreachable} cannot be reached from entry point {graph.entry_point!r}"
        )
    finishing: set[str] = set()
    changed = True
    while changed:  # backwards from END: a node finishes if some successor does
        changed = False
        for name in graph.nodes:
            if name in finishing:
                continue
            ends = END in graph.static_targets(name) or (
                name in graph.branches and END in graph.branches[name].targets.values()
            )
            if ends or any(t in finishing for t in graph.successors(name)):
                finishing.add(name)
                changed = True
    stuck = sorted(set(graph.nodes) - finishing)
    if stuck:
        raise GraphError(f"nodes {stuck} cannot reach END; add set_finish_point or an edge")
