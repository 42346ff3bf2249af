"""Registering seed 004's workflows: the request bodies of the token routes, YAML, and the
checks a workflow passes against its agents' schemas before it is stored."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.transitions import NAME_PATTERN, OUTPUT_BUILTINS, WorkflowDefinition
from cloudagents.runtime.audit import audit
from cloudagents.runtime.auth import Principal
from cloudagents.runtime.commands import Refused
from cloudagents.runtime.deps import Deps


class CreateTokenRequest(BaseModel):
    """``POST /tokens`` body: a token with ``data`` and ``metadata`` in a place of a workflow
    (by default its ``initial_place``, else its first place)."""

    model_config = ConfigDict(extra="forbid")
    workflow_id: str = Field(pattern=NAME_PATTERN)
    token_id: str | None = Field(default=None, pattern=NAME_PATTERN)
    place: str | None = None
    data: dict[str, JsonValue] = Field(default_factory=dict)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class FireRequest(BaseModel):
    """``POST /tokens/{id}/fire`` body. ``version``: fire only if the token is at that version
    (what makes a redelivered request harmless); by default its current version."""

    model_config = ConfigDict(extra="forbid")
    transition_id: str = Field(pattern=NAME_PATTERN)
    version: int | None = Field(default=None, ge=1)


def load_workflows(path: str | Path) -> list[WorkflowDefinition]:
    """Workflow definitions from YAML: one mapping, a list, or ``{workflows: [...]}`` (a file
    may also hold ``agents: [...]``, read by ``load_definitions``)."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict) and ("workflows" in data or "agents" in data):
        data = data.get("workflows") or []
    items = data if isinstance(data, list) else [data]
    return [WorkflowDefinition.model_validate(item) for item in items]


def schema_problems(
    workflow: WorkflowDefinition, agents: dict[str, AgentDefinition | None]
) -> list[dict[str, str]]:
    """What registration refuses: an agent that does not exist, and mappings the agent's
    schemas say cannot resolve (an input key it does not take, a required input not mapped, an
    output key it does not give)."""
    problems: list[dict[str, str]] = []
    configs: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
        (f"transitions.{t.id}.agent_execution", c.agent_id, c.input_mapping, c.output_mapping)
        for t in workflow.transitions
        if (c := t.agent_execution) is not None
    ]
    configs += [
        (f"place_agents.{i}", p.agent_id, p.input_mapping, p.output_mapping)
        for i, p in enumerate(workflow.place_agents)
    ]
    for loc, agent_id, inputs, outputs in configs:
        agent = agents.get(agent_id)
        if agent is None:
            problems.append({"loc": f"{loc}.agent_id", "msg": f"unknown agent {agent_id!r}"})
            continue
        schema = agent.input_schema or {}
        properties = schema.get("properties")
        if isinstance(properties, dict):
            for key in inputs:
                if key not in properties:
                    problems.append(
                        {
                            "loc": f"{loc}.input_mapping.{key}",
                            "msg": f"agent {agent_id!r} takes no input {key!r} "
                            f"(its input_schema has {sorted(properties)})",
                        }
                    )
            required = schema.get("required")
            for needed in required if isinstance(required, list) else []:
                if str(needed) not in inputs:
                    problems.append(
                        {
                            "loc": f"{loc}.input_mapping",
                            "msg": f"agent {agent_id!r} requires input {needed!r}: map it",
                        }
                    )
        out = (agent.output_schema or {}).get("properties")
        if isinstance(out, dict):
            for path, source in outputs.items():
                if source not in out and source not in OUTPUT_BUILTINS:
                    problems.append(
                        {
                            "loc": f"{loc}.output_mapping.{path}",
                            "msg": f"agent {agent_id!r} gives no output {source!r} "
                            f"(its output_schema has {sorted(out)})",
                        }
                    )
    return problems


async def register_workflow(
    deps: Deps, principal: Principal, workflow: WorkflowDefinition, *, action: str
) -> WorkflowDefinition | None:
    """Store a workflow and return the definition it replaced (the route then schedules the
    tokens already in the place of a new or changed place agent: ``Transitions.redefined``);
    422 with each problem's ``loc`` and ``msg`` when its agents' schemas say a mapping cannot
    resolve, or an agent does not exist."""
    ids = {c.agent_id for t in workflow.transitions if (c := t.agent_execution) is not None}
    ids |= {p.agent_id for p in workflow.place_agents}
    agents = {agent_id: await deps.agents.get_agent(agent_id) for agent_id in sorted(ids)}
    if problems := schema_problems(workflow, agents):
        await audit(deps, action, principal, "denied", 422, workflow.id, "workflow refused")
        raise Refused(422, "invalid workflow", problems=problems)
    previous = await deps.transitions.get_workflow(workflow.id)
    await deps.transitions.put_workflow(workflow)
    await audit(deps, action, principal, "allowed", 201, workflow.id, "workflow registered")
    return previous
