"""The tools of a run: the process's registered tools and the agent's stored functions.

An agent's ``tools`` lists names. A name a registered ``Tool`` has (``CLOUDAGENTS_TOOL_MODULES``,
or the tools given to ``Agent``) is that tool. ``name@hash`` (a hash prefix of 8+ characters), or
a name no registered tool has, is a stored function (``cloudagents.functions``). When the run
starts (``pin_functions``, from ``start_run``), every stored function is resolved to one version,
and the run record keeps ``{name: hash}``. Every step offers those versions to the model, and the
tool invoker runs those versions: a redelivered or resumed run executes the same code even after
the name has moved on. Each call runs in a fresh sandbox; what the function did wrong (its
``timeout``, ``memory``, ``output_too_large``, ``import_not_allowed``, ``sandbox_unavailable``
...) is an error result the model reads, never an exception that redelivers the message.

This module is what the executor and the invoker share, in the services and in process alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.messages import ToolSpec
from cloudagents.domain.runs import RunRecord, ToolCallRecord
from cloudagents.functions import FunctionNotFound, FunctionStore, FunctionVersion
from cloudagents.runtime.deps import Deps
from cloudagents.tools import ToolResult

log = logging.getLogger(__name__)


class Invocable(Protocol):
    """What the tool invoker needs of a tool: a registered ``Tool`` or a ``StoredFunctionTool``."""

    @property
    def name(self) -> str: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def idempotent(self) -> bool: ...
    async def invoke(self, arguments: Mapping[str, Any]) -> ToolResult: ...


def tool_name(entry: str) -> str:
    """The name the model calls an agent's ``tools`` entry by (``name@hash`` -> ``name``)."""
    return entry.partition("@")[0]


def tool_names(agent: AgentDefinition) -> list[str]:
    """The agent's tools as the model sees them, in order, once each."""
    return list(dict.fromkeys(tool_name(entry) for entry in agent.tools))


async def pin_functions(deps: Deps, agent: AgentDefinition) -> dict[str, str]:
    """``{name: version hash}`` of the stored functions among the agent's tools, now.

    An explicit ``name@hash`` that resolves to nothing makes the run impossible (a
    ``PermanentMessageError``: the api answers 400). A plain name that is neither a registered
    tool nor a stored function is not offered, as for an unknown tool."""
    pinned: dict[str, str] = {}
    for entry in agent.tools:
        name, _, wanted = entry.partition("@")
        if not wanted and name in deps.tools:
            continue
        try:
            version = await deps.functions.get_function(entry)
        except FunctionNotFound as exc:
            if wanted:
                raise PermanentMessageError(f"agent {agent.id!r} tool {entry!r}: {exc}") from exc
            log.warning("agent %s names tool %r: no such tool or stored function", agent.id, name)
            continue
        pinned[name] = version.hash
    return pinned


async def _pinned_version(store: FunctionStore, run: RunRecord, name: str) -> FunctionVersion:
    version_hash = run.functions[name]
    version = await store.get_version(version_hash)
    if version is None:
        # Versions are never deleted: a missing one is a repository that cannot be read yet.
        raise FunctionNotFound(f"run {run.run_id} pins {name}@{version_hash}, which is missing")
    return version


async def run_specs(deps: Deps, run: RunRecord) -> dict[str, ToolSpec]:
    """What the model may be offered in this run: registered tools, then its pinned functions
    (a pinned ``name@hash`` takes the place of a registered tool of the same name)."""
    specs = dict(deps.tools.specs())
    for name in run.functions:
        specs[name] = (await _pinned_version(deps.functions, run, name)).tool_spec()
    return specs


class StoredFunctionTool:
    """One pinned version of a stored function, as the invoker calls it for one tool call.

    Idempotent: the code runs in a fresh sandbox with no network and nothing kept between
    calls, so running it again after an interrupted call has no effect beyond its result."""

    idempotent = True

    def __init__(
        self, store: FunctionStore, version: FunctionVersion, run: RunRecord, call_id: str
    ) -> None:
        self.store = store
        self.version = version
        self.run = run
        self.call_id = call_id

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def timeout_seconds(self) -> float:
        return self.version.config.timeout

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolResult:
        outcome = await self.store.run_function(
            self.version.ref,
            dict(arguments),
            context={
                "run_id": self.run.run_id,
                "agent_id": self.run.agent_id,
                "variables": dict(self.run.variables),
            },
            run_id=self.run.run_id,
            tool_call_id=self.call_id,
            agent=self.run.agent_id,
        )
        if outcome.ok:
            return ToolResult(outcome.value)
        return ToolResult(f"{outcome.error_kind}: {outcome.message}", is_error=True)


async def run_tool(deps: Deps, run: RunRecord, record: ToolCallRecord) -> Invocable | None:
    """The tool a call of this run names: its pinned function, else a registered tool."""
    name = record.call.name
    if name in run.functions:
        version = await _pinned_version(deps.functions, run, name)
        return StoredFunctionTool(deps.functions, version, run, record.doc_id)
    return deps.tools.get(name)
