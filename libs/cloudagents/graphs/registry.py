"""Named node functions, routers and reducers: what a compiled graph refers to by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from cloudagents.graphs.reducers import BUILTIN_REDUCERS, ReducerFunction
from cloudagents.graphs.state import State

NodeResult = Mapping[str, Any] | None
NodeFunction = Callable[[State], Awaitable[NodeResult] | NodeResult]
"""A node: reads the state, returns a dict of updates (or None); sync or async."""
RouterFunction = Callable[[State], Awaitable[str] | str]
"""A router: reads the state (with its node's update applied), returns a key of the targets."""

F = TypeVar("F", bound=Callable[..., Any])

ROUTER_NAME_ATTRIBUTE = "__cloudagents_router__"
"""Set on a function by ``register_router`` so ``compile()`` names it the same with or without
the registry at hand (the hash must not depend on how compile was called)."""


def router_name(router: Callable[..., Any]) -> str:
    """The stable name a compiled graph stores for a router."""
    registered = getattr(router, ROUTER_NAME_ATTRIBUTE, None)
    if isinstance(registered, str):
        return registered
    return str(getattr(router, "__qualname__", repr(router)))


class NodeRegistry:
    """Functions by name. ``@registry.register("researcher")`` serves nodes of that type."""

    def __init__(self) -> None:
        self._nodes: dict[str, Callable[..., Any]] = {}
        self._routers: dict[str, Callable[..., Any]] = {}
        self._reducers: dict[str, ReducerFunction] = {}
        self._agents: dict[str, Any] = {}
        self._agent_contexts: dict[str, dict[str, Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: register a node function (sync or async) under ``name``."""

        def decorate(func: F) -> F:
            self.register_node(name, func)
            return func

        return decorate

    def register_node(self, name: str, func: Callable[..., Any]) -> None:
        """Register a node function without the decorator."""
        self._nodes[name] = func

    def register_router(self, name: str) -> Callable[[F], F]:
        """Decorator: register a router under a stable name of your choice."""

        def decorate(func: F) -> F:
            self._routers[name] = func
            setattr(func, ROUTER_NAME_ATTRIBUTE, name)
            return func

        return decorate

    def register_reducer(self, name: str) -> Callable[[F], F]:
        """Decorator: register ``(current, update) -> value`` as a reducer."""
        if name in BUILTIN_REDUCERS:
            raise ValueError(f"reducer {name!r} is built in; choose another name")

        def decorate(func: F) -> F:
            self._reducers[name] = func
            return func

        return decorate

    def register_agent(
        self, agent: Any, *, context: Mapping[str, Any] | None = None, name: str | None = None
    ) -> Any:
        """Serve the agent nodes naming ``name`` (default: the agent's definition id) with
        ``agent`` (a ``cloudagents.Agent``) in process; ``context`` is what each run gets
        (``Agent.run``'s: an ``llm_client``, template variables). Returns the agent."""
        key = name or agent.definition.id
        self._agents[key] = agent
        self._agent_contexts[key] = dict(context or {})
        return agent

    def agents(self) -> dict[str, Any]:
        """The registered agents, by the id agent nodes name."""
        return dict(self._agents)

    def agent_contexts(self) -> dict[str, dict[str, Any]]:
        """Each registered agent's run context."""
        return {k: dict(v) for k, v in self._agent_contexts.items()}

    def include(self, other: NodeRegistry) -> None:
        """Take every node function, router, reducer and agent of ``other`` (the graph
        worker service merges the registries of ``CLOUDAGENTS_GRAPH_MODULES``)."""
        self._nodes.update(other._nodes)
        self._routers.update(other._routers)
        self._reducers.update(other._reducers)
        self._agents.update(other._agents)
        self._agent_contexts.update(other._agent_contexts)

    def get(self, name: str) -> Callable[..., Any]:
        """The node function registered as ``name``; KeyError names what is registered."""
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(
                f"no node function {name!r} registered (have {sorted(self._nodes)})"
            ) from None

    def get_router(self, name: str) -> Callable[..., Any] | None:
        """The router registered as ``name``, if any."""
        return self._routers.get(name)

    def get_reducer(self, name: str) -> ReducerFunction | None:
        """A reducer by name: built in or registered."""
        return BUILTIN_REDUCERS.get(name) or self._reducers.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def node_names(self) -> list[str]:
        """Registered node function names, sorted."""
        return sorted(self._nodes)
