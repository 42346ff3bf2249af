"""The graph builder (seed 001's ``Graph``) and its validation into a ``CompiledGraph``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cloudagents.graphs.analysis import check_write_conflicts
from cloudagents.graphs.bindings import resolve
from cloudagents.graphs.errors import GraphError
from cloudagents.graphs.registry import NodeRegistry, router_name
from cloudagents.graphs.spec import (
    AGENT_NODE_TYPE,
    END,
    AgentNodeSpec,
    BranchSpec,
    CompiledGraph,
    EdgeSpec,
    NodeSpec,
    RetryPolicy,
)


class Graph:
    """A workflow under construction: nodes, edges, conditional edges, reducers.

    ``compile()`` validates it and returns the ``CompiledGraph`` (plain data). Node
    functions may be given inline or left to a registry: ``add_node("writer")`` is served by
    whatever is registered as ``"writer"`` (or as its ``node_type``).
    """

    def __init__(
        self, name: str, description: str = "", *, reducers: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.description = description
        self._nodes: dict[str, NodeSpec] = {}
        self._functions: dict[str, Callable[..., Any]] = {}
        self._edges: set[tuple[str, str]] = set()
        self._branches: dict[str, BranchSpec] = {}
        self._routers: dict[str, Callable[..., Any]] = {}
        self._entry: str | None = None
        self._reducers: dict[str, str] = dict(reducers or {})
        self.compiled: CompiledGraph | None = None
        """The result of the last ``compile()``."""

    def add_node(
        self,
        name: str,
        func: Callable[..., Any] | None = None,
        node_type: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout_seconds: float | None = None,
        writes: Iterable[str] | None = None,
    ) -> Graph:
        """Add a node (``func`` inline, or looked up by ``node_type``/name when run).

        ``writes`` declares the node's output keys: ``compile()`` then rejects two nodes that
        can share a superstep and both write a ``last_value`` key. Undeclared writes are
        checked at run time, where such a pair fails the workflow naming both nodes.
        """
        if name == END:
            raise GraphError(f"{END!r} is reserved for the end of the graph")
        if name in self._nodes:
            raise GraphError(f"node {name!r} is already in graph {self.name!r}")
        self._nodes[name] = NodeSpec(
            name=name,
            node_type=node_type or name,
            retry=retry,
            timeout_seconds=timeout_seconds,
            writes=None if writes is None else sorted(set(writes)),
        )
        if func is not None:
            self._functions[name] = func
        return self

    def add_agent_node(
        self,
        name: str,
        agent: str,
        *,
        input_key: str,
        output_key: str,
        node_type: str = AGENT_NODE_TYPE,
        retry: RetryPolicy | None = None,
        timeout_seconds: float | None = None,
    ) -> Graph:
        """Add a node that is a run of the registered agent ``agent`` (``graphs/agents.py``):
        its message is the state's ``input_key`` and its final output is written to
        ``output_key``. The run is started once per task (its id derives from the workflow and
        the task) and linked to them; a run that does not end ``SATISFIED`` fails the node
        (``retry`` starts a new run per attempt). In process the agent comes from
        ``registry.register_agent``; distributed, from the agents the run executor knows
        (``POST /agents``), run by a worker serving ``node_type`` (default ``"agent"``)."""
        self.add_node(
            name,
            node_type=node_type,
            retry=retry,
            timeout_seconds=timeout_seconds,
            writes=[output_key],
        )
        spec = self._nodes[name]
        self._nodes[name] = spec.model_copy(
            update={"agent": AgentNodeSpec(agent=agent, input_key=input_key, output_key=output_key)}
        )
        return self

    def add_edge(self, source: str, target: str) -> Graph:
        """Run ``target`` after ``source``; ``target`` may be END."""
        if source == END:
            raise GraphError(f"edge {source!r} -> {target!r}: nothing runs after END")
        self._edges.add((source, target))
        return self

    def add_conditional_edge(
        self,
        source: str,
        condition: Callable[..., Any] | str,
        targets: Mapping[str, str],
    ) -> Graph:
        """After ``source``, run ``targets[condition(state)]``.

        ``condition`` is a router function or the name of a router registered with
        ``registry.register_router``; the compiled graph stores its name only.
        """
        if source in self._branches:
            raise GraphError(f"node {source!r} already has a conditional edge")
        if not targets:
            raise GraphError(f"conditional edge from {source!r} has no targets")
        if isinstance(condition, str):
            name = condition
        else:
            name = router_name(condition)
            bound = self._routers.get(name)
            if bound is not None and bound is not condition:
                raise GraphError(f"two different routers are both named {name!r}; register one")
            self._routers[name] = condition
        self._branches[source] = BranchSpec(source=source, router=name, targets=dict(targets))
        return self

    def set_entry_point(self, node: str) -> Graph:
        """The node superstep 0 runs."""
        self._entry = node
        return self

    def set_finish_point(self, node: str) -> Graph:
        """Add an edge from ``node`` to END."""
        return self.add_edge(node, END)

    def add_reducer(self, key: str, reducer: str) -> Graph:
        """Combine parallel updates of ``key`` with ``reducer`` (built in or registered)."""
        self._reducers[key] = reducer
        return self

    def compile(self, registry: NodeRegistry | None = None) -> CompiledGraph:
        """Validate and freeze the graph; with a registry, also check every name resolves."""
        if self._entry is None:
            raise GraphError(f"graph {self.name!r} has no entry point; call set_entry_point")
        graph = CompiledGraph(
            name=self.name,
            description=self.description,
            entry_point=self._entry,
            nodes=dict(sorted(self._nodes.items())),
            edges=[EdgeSpec(source=s, target=t) for s, t in sorted(self._edges)],
            branches=dict(sorted(self._branches.items())),
            reducers=dict(sorted(self._reducers.items())),
        )
        graph.check_structure()
        graph._functions.update(self._functions)
        graph._routers.update(self._routers)
        if registry is not None:
            resolve(graph, registry)
        check_write_conflicts(graph)
        self.compiled = graph
        return graph
