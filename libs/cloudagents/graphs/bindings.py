"""Resolve the names in a compiled graph to callables, failing on any that is missing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudagents.graphs.agents import InProcessChildRuns, agent_node_function
from cloudagents.graphs.errors import GraphError
from cloudagents.graphs.reducers import BUILTIN_REDUCERS, ReducerFunction
from cloudagents.graphs.registry import NodeRegistry
from cloudagents.graphs.spec import CompiledGraph


@dataclass(frozen=True)
class Bindings:
    """Callables for one run: node functions and routers by node name, custom reducers."""

    nodes: dict[str, Callable[..., Any]] = field(default_factory=dict)
    routers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    reducers: dict[str, ReducerFunction] = field(default_factory=dict)


def resolve(
    graph: CompiledGraph, registry: NodeRegistry | None, *, with_nodes: bool = True
) -> Bindings:
    """Bind every node, router and reducer name; ``with_nodes=False`` when workers run nodes.

    Inline functions given to ``Graph.add_node`` win over the registry; a graph loaded
    from JSON has none, so everything must be registered.
    """
    found = Bindings()
    children = None
    for name, spec in graph.nodes.items():
        if spec.agent is not None:  # bound here even for workers: the agent runs the node
            have = registry.agents() if registry is not None else {}
            if spec.agent.agent not in have:
                raise GraphError(
                    f"agent node {name!r}: no agent {spec.agent.agent!r} registered "
                    "(registry.register_agent)"
                )
            if children is None:
                assert registry is not None
                children = InProcessChildRuns(have, registry.agent_contexts())
            found.nodes[name] = agent_node_function(children, spec)
    if with_nodes:
        for name, spec in graph.nodes.items():
            if spec.agent is not None:
                continue
            func = graph._functions.get(name)
            if func is None and registry is not None and spec.node_type in registry:
                func = registry.get(spec.node_type)
            if func is None:
                raise GraphError(
                    f"node {name!r}: no function registered for node type {spec.node_type!r}"
                )
            found.nodes[name] = func
    for source, branch in graph.branches.items():
        router = graph._routers.get(branch.router)
        if router is None and registry is not None:
            router = registry.get_router(branch.router)
        if router is None:
            raise GraphError(
                f"conditional edge from {source!r}: router {branch.router!r} is not registered"
            )
        found.routers[source] = router
    for key, name in graph.reducers.items():
        if name in BUILTIN_REDUCERS:
            continue
        reducer = registry.get_reducer(name) if registry is not None else None
        if reducer is None:
            raise GraphError(f"state key {key!r}: reducer {name!r} is not registered")
        found.reducers[name] = reducer
    return found
