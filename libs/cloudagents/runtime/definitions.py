"""Which agent definition a run uses: the versions pinned when it started.

A run pins its agent's definition and its peers' (``RunRecord.agent_versions``) when it is
created, and every step of it, on any instance, uses those versions. Versions never change once
written, so the agent store keeps them per process (``get_agent_version``) and a step of a
pinned run reads no definition at all. An id the run did not pin (a run written before
versions were pinned, a definition given in process that is not the stored one, a peer
registered later) is read at its latest, as every step used to.
"""

from __future__ import annotations

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.runs import RunRecord
from cloudagents.runtime.deps import Deps


async def pin_agents(deps: Deps, agent: AgentDefinition) -> dict[str, int]:
    """The versions to pin on a run of ``agent``: its own, if the stored latest is ``agent``
    itself, and its peers' latest."""
    pinned: dict[str, int] = {}
    latest = await deps.agents.latest_version(agent.id)
    if latest is not None and latest.definition == agent:
        pinned[agent.id] = latest.version
    for peer_id in agent.allowed_peers:
        peer = await deps.agents.latest_version(peer_id)
        if peer is not None and peer.definition is not None:
            pinned[peer_id] = peer.version
    return pinned


async def definition(deps: Deps, run: RunRecord, agent_id: str) -> AgentDefinition | None:
    """``agent_id``'s definition as ``run`` uses it: its pinned version, else the latest."""
    version = run.agent_versions.get(agent_id)
    if version is None:
        return await deps.agents.get_agent(agent_id)
    return await deps.agents.get_agent_version(agent_id, version)
