"""The only place SDK clients are built: once per process, inside the running event loop.

``get_deps()`` builds the adapters the settings ask for (the Google Cloud clients for ``gcp``,
in-memory fakes for ``memory``) and the tool registry from ``CLOUDAGENTS_TOOL_MODULES``.
"""

from __future__ import annotations

import asyncio
import importlib

from cloudagents.adapters.memory.budgets import InMemoryCostLedger, InMemoryRateLimiter
from cloudagents.adapters.memory.messaging import (
    InMemoryBlobStore,
    InMemoryEventBus,
    InMemoryTaskQueue,
)
from cloudagents.adapters.memory.stores import (
    InMemoryAgentStore,
    InMemoryAuditStore,
    InMemoryDeadLetterStore,
    InMemoryHandoffStore,
    InMemoryRunStore,
)
from cloudagents.domain.errors import ConfigurationError
from cloudagents.runtime.deps import Deps
from cloudagents.settings import Settings
from cloudagents.telemetry import configure
from cloudagents.tools import Tool, ToolRegistry
from cloudagents.topology import build_topology

_deps: Deps | None = None
_lock = asyncio.Lock()


def load_tools(modules: tuple[str, ...]) -> ToolRegistry:
    """Every module-level ``Tool`` (and tuple/list of tools) in the named modules."""
    registry = ToolRegistry()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"tool module {name!r} cannot be imported: {exc}") from exc
        for value in vars(module).values():
            items = value if isinstance(value, tuple | list) else (value,)
            for item in items:
                if isinstance(item, Tool):
                    registry.register(item)
    return registry


def build_deps(settings: Settings) -> Deps:
    """Adapters for ``settings.backend``; call inside the event loop that will use them."""
    topology = build_topology(settings.project, settings.workspace, settings.location)
    tools = load_tools(settings.tool_modules)
    if settings.backend == "memory":
        runs = InMemoryRunStore()
        return Deps(
            settings=settings,
            topology=topology,
            runs=runs,
            handoffs=InMemoryHandoffStore(runs),
            audit=InMemoryAuditStore(),
            agents=InMemoryAgentStore(),
            dead_letters=InMemoryDeadLetterStore(),
            bus=InMemoryEventBus(),
            blobs=InMemoryBlobStore(),
            tasks=InMemoryTaskQueue(),
            cost_ledger=InMemoryCostLedger(),
            rate_limiter=InMemoryRateLimiter(),
            tools=tools,
        )
    from cloudagents.adapters.gcp_clients import build_gcp_deps

    return build_gcp_deps(settings, topology, tools)


async def get_deps(service_name: str = "cloudagents") -> Deps:
    """The process's dependencies, built on first use."""
    global _deps
    if _deps is None:
        async with _lock:
            if _deps is None:
                settings = Settings.from_env(service_name=service_name)
                configure(settings.service_name, settings.trace_exporter, settings.project)
                _deps = build_deps(settings)
    return _deps


def reset_deps() -> None:
    """Forget the built dependencies (tests that change the environment)."""
    global _deps
    _deps = None
