"""Seed 004's workflows of places and tokens: definitions, tokens and agent executions.

A :class:`WorkflowDefinition` (``transition_workflows/{id}``) names its places, its
:class:`TransitionDefinition` s and its :class:`PlaceAgentConfig` s. A :class:`Token`
(``tokens/{id}``) with ``data`` and ``metadata`` sits in one place; firing a transition moves it
from one of ``from_places`` to ``to_place`` when its ``conditions`` and ``rules`` hold, after
running the transition's agent (``agent_execution``) on the mapped input and mapping its output
back. Each agent run of a firing is one :class:`TransitionExecution`
(``transition_executions/{id}``, seed 004's ``AgentExecution``); each move is one
:class:`TokenHistoryEntry` (``tokens/{id}/history/{n:06d}``).

Paths name a token field: ``data.content``, ``metadata.type`` (``data`` or ``metadata``, then
keys). What the rules and mappings do is ``engine/transitions.py``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from cloudagents.domain.agents import AGENT_ID_PATTERN
from cloudagents.domain.base import Model, Persisted
from cloudagents.domain.messages import GenerationParams
from cloudagents.domain.runs import utcnow

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""Workflow, place, transition and token ids: usable as Firestore document ids."""
_PATH = re.compile(r"^(data|metadata)(\.[^.\s]+)+$")
RuleKind = Literal[
    "field_exists",
    "field_missing",
    "field_equals",
    "field_not_equals",
    "field_in",
    "field_contains",
    "field_greater_than",
    "field_less_than",
]
_RULE_KINDS: tuple[str, ...] = RuleKind.__args__  # type: ignore[attr-defined]
_VALUED = frozenset(_RULE_KINDS) - {"field_exists", "field_missing"}
ErrorKind = Literal[
    "timeout",
    "rate_limit",
    "server",
    "connection",
    "auth",
    "bad_request",
    "max_iters",
    "budget",
    "guardrail",
    "output_mapping",
    "error",
]
"""How an agent execution failed, as ``retry_on_errors`` names it (``error``: any other)."""
OUTPUT_BUILTINS = ("agent_id", "timestamp", "run_id", "execution_id")
"""What an ``output_mapping`` may name beside the agent's output keys (seed 004's ``agent_id``,
``timestamp``)."""
_CONDITION = re.compile(r"^\s*([a-z_]+)\s*\(\s*([^,()\s]+)\s*(?:,\s*(.+?)\s*)?\)\s*$")


def check_path(path: str) -> str:
    """``path`` if it names a token field (``data.x`` or ``metadata.x``), else ``ValueError``."""
    if not _PATH.match(path):
        raise ValueError(
            f"{path!r} is not a token path: 'data.<key>[.<key>...]' or 'metadata.<key>...'"
        )
    return path


class Rule(Model):
    """A check on a token: ``field_exists(path)``, ``field_equals(path, value)`` and the like.

    Written ``{"kind": "field_equals", "path": "metadata.status", "value": "unclassified"}``, or
    as seed 004 writes them: ``{"field_exists": "data.content"}``,
    ``{"field_exists": ["data", "content"]}``, ``{"field_equals": ["metadata.status", "x"]}``.
    """

    kind: RuleKind
    path: str
    value: JsonValue = None

    @model_validator(mode="before")
    @classmethod
    def _seed_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            return parse_condition(data).model_dump()
        if isinstance(data, dict) and "kind" not in data and len(data) == 1:
            ((kind, args),) = data.items()
            if kind not in _RULE_KINDS:
                raise ValueError(f"unknown rule {kind!r}: one of {', '.join(_RULE_KINDS)}")
            if isinstance(args, str):
                return {"kind": kind, "path": args}
            if isinstance(args, dict):
                return {"kind": kind, **args}
            if isinstance(args, list) and args:
                if kind in _VALUED:
                    if len(args) != 2:
                        raise ValueError(f"{kind} takes [path, value]")
                    return {"kind": kind, "path": args[0], "value": args[1]}
                return {"kind": kind, "path": ".".join(str(a) for a in args)}
            raise ValueError(f"{kind}: give a path, [path, value] or {{path, value}}")
        return data

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @model_validator(mode="after")
    def _value_given(self) -> Rule:
        if self.kind in _VALUED and self.value is None:
            raise ValueError(f"{self.kind} needs a value")
        if self.kind == "field_in" and not isinstance(self.value, list):
            raise ValueError("field_in needs a list of values")
        numeric = self.kind in ("field_greater_than", "field_less_than")
        if numeric and not isinstance(self.value, int | float):
            raise ValueError(f"{self.kind} needs a number")
        return self

    def describe(self) -> str:
        if self.kind in _VALUED:
            return f"{self.kind}({self.path}, {self.value!r})"
        return f"{self.kind}({self.path})"


def parse_condition(text: str) -> Rule:
    """A condition string, ``field_equals(metadata.status, "unclassified")``, as a rule (the
    value is JSON, or a bare word as a string)."""
    import json

    found = _CONDITION.match(text)
    if found is None:
        raise ValueError(f"condition {text!r} is not 'rule(path)' or 'rule(path, value)'")
    kind, path, raw = found.groups()
    value: Any = None
    if raw is not None:
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
    return Rule.model_validate({"kind": kind, "path": path, "value": value})


def _default_retry_on() -> list[ErrorKind]:
    return ["timeout", "rate_limit"]


class AgentRetryConfig(Model):
    """Seed 004: how often an agent execution is tried, and on which failures."""

    max_attempts: int = Field(default=1, ge=1, le=10)
    backoff_seconds: float = Field(
        default=0.0, ge=0, le=300, description="between attempts (at most 5 minutes)"
    )
    retry_on_errors: list[ErrorKind] = Field(
        default_factory=_default_retry_on,
        description="failure kinds that are tried again; 'error' matches any failure",
    )


def _mapping_checks(input_mapping: dict[str, str], output_mapping: dict[str, str]) -> None:
    for key, path in input_mapping.items():
        if not key.isidentifier():
            raise ValueError(f"input_mapping key {key!r} is not a name (a template variable)")
        check_path(path)
    for path, source in output_mapping.items():
        check_path(path)
        if not source:
            raise ValueError(f"output_mapping[{path!r}] is empty")


class AgentTransitionConfig(Model):
    """Seed 004: the agent a transition runs. ``input_mapping``: agent input key -> token path;
    ``output_mapping``: token path -> agent output key (or ``agent_id``, ``timestamp``,
    ``run_id``, ``execution_id``). ``required: false`` moves the token even when the agent
    fails; ``timeout_seconds`` bounds each attempt's run."""

    agent_id: str = Field(pattern=AGENT_ID_PATTERN)
    input_mapping: dict[str, str] = Field(default_factory=dict)
    output_mapping: dict[str, str] = Field(default_factory=dict)
    required: bool = True
    timeout_seconds: float | None = Field(default=None, gt=0, le=24 * 3600)
    retry_config: AgentRetryConfig | None = None

    @model_validator(mode="after")
    def _paths(self) -> AgentTransitionConfig:
        _mapping_checks(self.input_mapping, self.output_mapping)
        return self


class TransitionDefinition(Model):
    """Seed 004: moves a token from one of ``from_places`` to ``to_place`` when every condition
    (a rule written as text, ``field_exists(data.content)``) and every rule holds, after its
    agent (if any) has run."""

    id: str = Field(pattern=NAME_PATTERN)
    from_places: list[str] = Field(min_length=1)
    to_place: str = Field(pattern=NAME_PATTERN)
    conditions: list[str] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    agent_execution: AgentTransitionConfig | None = None

    @field_validator("conditions")
    @classmethod
    def _conditions_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_condition(text)
        return value

    def all_rules(self) -> list[Rule]:
        return [*(parse_condition(c) for c in self.conditions), *self.rules]


class PlaceAgentSchedule(Model):
    """Seed 004: when a place agent runs on a token in its place."""

    initial_delay_seconds: float | None = Field(default=None, ge=0, le=30 * 24 * 3600)
    interval_seconds: float | None = Field(default=None, gt=0, le=30 * 24 * 3600)
    max_executions: int | None = Field(default=None, ge=1, le=10_000)


class PlaceAgentConfig(Model):
    """Seed 004: an agent run on tokens in ``place_id`` whose ``trigger_conditions`` hold;
    ``llm_config`` overrides the agent's generation parameters there; ``auto_transition`` is
    fired after a success."""

    place_id: str = Field(pattern=NAME_PATTERN)
    agent_id: str = Field(pattern=AGENT_ID_PATTERN)
    llm_config: GenerationParams | None = None
    trigger_conditions: list[Rule] = Field(default_factory=list)
    input_mapping: dict[str, str] = Field(default_factory=dict)
    output_mapping: dict[str, str] = Field(default_factory=dict)
    auto_transition: str | None = Field(default=None, pattern=NAME_PATTERN)
    schedule: PlaceAgentSchedule | None = None
    retry_config: AgentRetryConfig | None = None

    @model_validator(mode="after")
    def _paths(self) -> PlaceAgentConfig:
        _mapping_checks(self.input_mapping, self.output_mapping)
        return self


class WorkflowDefinition(Persisted):
    """``transition_workflows/{id}``: places, transitions and place agents (seed 004)."""

    id: str = Field(pattern=NAME_PATTERN)
    name: str = ""
    description: str = ""
    places: list[str] = Field(min_length=1)
    initial_place: str | None = None
    transitions: list[TransitionDefinition] = Field(default_factory=list)
    place_agents: list[PlaceAgentConfig] = Field(default_factory=list)

    @field_validator("places")
    @classmethod
    def _places(cls, value: list[str]) -> list[str]:
        for place in value:
            if not re.match(NAME_PATTERN, place):
                raise ValueError(f"place {place!r} does not match {NAME_PATTERN}")
        if len(set(value)) != len(value):
            raise ValueError("places are listed twice")
        return value

    @model_validator(mode="after")
    def _references(self) -> WorkflowDefinition:
        places = set(self.places)
        if self.initial_place is not None and self.initial_place not in places:
            raise ValueError(f"initial_place {self.initial_place!r} is not one of the places")
        seen: set[str] = set()
        for index, transition in enumerate(self.transitions):
            if transition.id in seen:
                raise ValueError(f"transitions[{index}]: id {transition.id!r} is used twice")
            seen.add(transition.id)
            for place in [*transition.from_places, transition.to_place]:
                if place not in places:
                    raise ValueError(
                        f"transitions[{index}] ({transition.id}): place {place!r} is not one "
                        "of the workflow's places"
                    )
        for index, agent in enumerate(self.place_agents):
            if agent.place_id not in places:
                raise ValueError(
                    f"place_agents[{index}]: place {agent.place_id!r} is not one of the places"
                )
            if agent.auto_transition is not None and agent.auto_transition not in seen:
                raise ValueError(
                    f"place_agents[{index}]: auto_transition {agent.auto_transition!r} is not "
                    "one of the workflow's transitions"
                )
        return self

    def transition(self, transition_id: str) -> TransitionDefinition | None:
        return next((t for t in self.transitions if t.id == transition_id), None)


class Firing(Model):
    """The agent running on a token: a transition's (``transition_id``), or a place agent's
    (``place_agent``, its index in the workflow's ``place_agents``, execution ``n``)."""

    transition_id: str | None = None
    place_agent: int | None = Field(default=None, ge=0)
    n: int | None = Field(default=None, ge=1, description="a place agent's execution number")
    execution_id: str
    run_id: str
    attempt: int = Field(ge=1)
    version: int = Field(ge=1, description="the token version the firing started at")
    started_at: datetime
    not_before: datetime | None = Field(
        default=None,
        description="a retry waiting out its backoff: its run starts at this time, when its "
        "Cloud Task (FiringRetryTask) claims the start; None once started",
    )


class Token(Persisted):
    """``tokens/{id}``: a token in a place. ``version`` grows with every write (the guard of
    every move); ``history_count`` is the number of moves (``{history_count}``)."""

    token_id: str = Field(pattern=NAME_PATTERN)
    workflow_id: str = Field(pattern=NAME_PATTERN)
    place: str
    data: dict[str, JsonValue] = Field(default_factory=dict)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    version: int = Field(default=1, ge=1)
    history_count: int = Field(default=0, ge=0)
    firing: Firing | None = None
    last_error: str | None = Field(
        default=None, description="why the last firing did not move the token"
    )
    place_agent_runs: dict[str, int] = Field(
        default_factory=dict,
        description="place agent executions claimed in this visit of the place: "
        "'{place}:{index}:{visit}' -> count (a duplicate task finds its number taken)",
    )
    pending_auto: str | None = Field(
        default=None, description="an auto_transition to fire (a place agent succeeded)"
    )
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class TokenHistoryEntry(Persisted):
    """``tokens/{id}/history/{n:06d}``: one move of a token."""

    token_id: str
    n: int = Field(ge=1)
    transition_id: str
    from_place: str
    to_place: str
    execution_id: str | None = None
    agent_failed: str | None = Field(
        default=None, description="the agent's failure, when a required: false transition moved"
    )
    at: datetime = Field(default_factory=utcnow)


ExecutionStatus = Literal["scheduled", "running", "succeeded", "failed"]


class TransitionExecution(Persisted):
    """``transition_executions/{id}``: one attempt of an agent on a token (seed 004's
    ``AgentExecution``); its run is ``agent_runs/{run_id}``."""

    execution_id: str
    token_id: str
    workflow_id: str
    transition_id: str | None = None
    place_agent: int | None = Field(default=None, ge=0)
    place_id: str | None = None
    agent_id: str
    attempt: int = Field(ge=1)
    run_id: str
    input: dict[str, JsonValue] = Field(default_factory=dict)
    status: ExecutionStatus = "running"
    output: dict[str, JsonValue] | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class FiringMessage(Persisted):
    """The body of a ``{ws}-transitions`` message: the run of ``execution_id`` finished (its
    finishing commit's outbox), so the token's firing completes."""

    run_id: str = Field(min_length=1, max_length=128)
    token_id: str = Field(min_length=1, max_length=64)
    execution_id: str = Field(min_length=1, max_length=200)


class PlaceAgentTask(Persisted):
    """The body of a place agent's Cloud Task: execution ``n`` of place agent ``index`` on the
    token during its visit ``visit`` (its ``history_count`` on entering) of ``place``."""

    token_id: str = Field(min_length=1, max_length=64)
    place: str
    index: int = Field(ge=0)
    visit: int = Field(ge=0)
    n: int = Field(ge=1)
    version: int | None = Field(
        default=None,
        ge=1,
        description="a re-check after the token changed in place: the version it changed to "
        "(so the task's name, made from its content, is its own)",
    )

    @property
    def key(self) -> str:
        return f"{self.place}:{self.index}:{self.visit}"


class FiringRetryTask(Persisted):
    """The body of a retry's Cloud Task (on the place agent queue): start the attempt
    ``execution_id`` of the token's firing, its backoff over."""

    token_id: str = Field(min_length=1, max_length=64)
    execution_id: str = Field(min_length=1, max_length=200)


class FireIntent(Persisted):
    """A ``{ws}-transitions`` message that fires a transition (seed 004's trigger by Pub/Sub):
    ``version`` makes a redelivery harmless (by default the token's version when applied)."""

    token_id: str = Field(min_length=1, max_length=64)
    transition_id: str = Field(pattern=NAME_PATTERN)
    version: int | None = Field(default=None, ge=1)
