"""The pure rules of seed 004's transitions: token paths, rules, input and output mappings, the
ids of a firing, and what a finished agent run does to its token.

A firing of transition ``t`` on token ``k`` at version ``v`` has the execution id
``execution_id(k, t, v, attempt)`` and runs as ``agent_runs/{that id}``: a redelivered fire
request at version ``v`` finds the same run (created once), and a redelivered completion finds
the token at another version (moved once, ``runtime/transitions.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudagents.domain.messages import GenerationParams
from cloudagents.domain.results import LoopExit, LoopResult
from cloudagents.domain.runs import OutboxMessage, RunRecord
from cloudagents.domain.transitions import (
    OUTPUT_BUILTINS,
    AgentRetryConfig,
    AgentTransitionConfig,
    ErrorKind,
    FiringMessage,
    PlaceAgentConfig,
    Rule,
    Token,
    TransitionDefinition,
    WorkflowDefinition,
)

_MISSING = object()


@dataclass(frozen=True)
class AgentStep:
    """What runs on a token: a transition's ``agent_execution`` or a place agent, in one shape
    (a place agent is ``required``: its failure leaves the token with the reason)."""

    agent_id: str
    input_mapping: dict[str, str]
    output_mapping: dict[str, str]
    required: bool
    timeout_seconds: float | None
    retry: AgentRetryConfig | None
    generation: GenerationParams | None = None
    transition: TransitionDefinition | None = None
    place_agent: int | None = None
    place: PlaceAgentConfig | None = None

    @classmethod
    def of_transition(
        cls, transition: TransitionDefinition, config: AgentTransitionConfig
    ) -> AgentStep:
        return cls(
            agent_id=config.agent_id,
            input_mapping=config.input_mapping,
            output_mapping=config.output_mapping,
            required=config.required,
            timeout_seconds=config.timeout_seconds,
            retry=config.retry_config,
            transition=transition,
        )

    @classmethod
    def of_place(cls, index: int, config: PlaceAgentConfig) -> AgentStep:
        return cls(
            agent_id=config.agent_id,
            input_mapping=config.input_mapping,
            output_mapping=config.output_mapping,
            required=True,
            timeout_seconds=None,
            retry=config.retry_config,
            generation=config.llm_config,
            place_agent=index,
            place=config,
        )

    @property
    def label(self) -> str:
        if self.transition is not None:
            return self.transition.id
        return f"place:{self.place.place_id if self.place else '?'}:{self.place_agent}"


class MappingError(ValueError):
    """A mapping path that does not resolve on this token, or an output key the agent did not
    give: a clear error on the token."""


def resolve(token: Token, path: str) -> Any:
    """The value at ``path`` (``data.a.b``) on ``token``, or ``_MISSING``."""
    root, *keys = path.split(".")
    value: Any = token.data if root == "data" else token.metadata
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def failed_rule(rules: list[Rule], token: Token) -> str | None:
    """The first rule that does not hold on ``token`` (described), or ``None``."""
    for rule in rules:
        if not holds(rule, token):
            return rule.describe()
    return None


def holds(rule: Rule, token: Token) -> bool:
    value = resolve(token, rule.path)
    match rule.kind:
        case "field_exists":
            return value is not _MISSING and value is not None
        case "field_missing":
            return value is _MISSING or value is None
        case "field_equals":
            return value is not _MISSING and value == rule.value
        case "field_not_equals":
            return value is _MISSING or value != rule.value
        case "field_in":
            return isinstance(rule.value, list) and value is not _MISSING and value in rule.value
        case "field_contains":
            if isinstance(value, str) and isinstance(rule.value, str):
                return rule.value in value
            return isinstance(value, list) and rule.value in value
        case "field_greater_than" | "field_less_than":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            limit = rule.value
            assert isinstance(limit, int | float)
            return value > limit if rule.kind == "field_greater_than" else value < limit
    return False  # pragma: no cover - every kind is matched above


def map_input(input_mapping: Mapping[str, str], token: Token) -> dict[str, Any]:
    """The agent's input: each key from its token path; a path that does not resolve is a
    :class:`MappingError` naming it."""
    mapped: dict[str, Any] = {}
    for key, path in input_mapping.items():
        value = resolve(token, path)
        if value is _MISSING:
            raise MappingError(f"input_mapping[{key!r}]: token has no {path}")
        mapped[key] = value
    return mapped


def apply_output(
    token: Token,
    output_mapping: Mapping[str, str],
    output: Mapping[str, Any],
    builtins: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token's ``data`` and ``metadata`` with the agent's output mapped in (token path <-
    output key or built-in); a key the output lacks is a :class:`MappingError`."""
    data = json.loads(json.dumps(token.data))
    metadata = json.loads(json.dumps(token.metadata))
    for path, source in output_mapping.items():
        if source in output:
            value = output[source]
        elif source in OUTPUT_BUILTINS:
            value = builtins[source]
        else:
            raise MappingError(
                f"output_mapping[{path!r}]: the agent's output has no {source!r} "
                f"(it gave {sorted(output)})"
            )
        root, *keys = path.split(".")
        target = data if root == "data" else metadata
        for key in keys[:-1]:
            child = target.get(key)
            if not isinstance(child, dict):
                child = {}
                target[key] = child
            target = child
        target[keys[-1]] = value
    return data, metadata


def token_variables(token: Token, mapped: Mapping[str, Any]) -> dict[str, Any]:
    """The run's template variables: the mapped input's keys, and seed 004's built-ins."""
    return {
        **mapped,
        "input_data": json.dumps(mapped, ensure_ascii=False, sort_keys=True),
        "token_id": token.token_id,
        "current_place": token.place,
        "token_metadata": json.dumps(token.metadata, ensure_ascii=False, sort_keys=True),
        "workflow_id": token.workflow_id,
        "history_count": token.history_count,
    }


def redefined_place_agents(
    previous: WorkflowDefinition | None, workflow: WorkflowDefinition
) -> list[int]:
    """The place agents a new definition of a workflow schedules for the tokens already in
    their place (seed 004: conditions are checked when a token "enters or exists in" it): each
    one new at its index or whose place, agent or ``trigger_conditions`` changed. The same
    definition again (a retried registration, which may have stopped before scheduling) gives
    them all; executions are counted per token, so one that ran does nothing. A first
    definition gives none: no token is in its places yet."""
    if previous is None:
        return []
    if previous == workflow:
        return list(range(len(workflow.place_agents)))
    changed: list[int] = []
    for index, config in enumerate(workflow.place_agents):
        before = previous.place_agents[index] if index < len(previous.place_agents) else None
        if before is None or (before.place_id, before.agent_id, before.trigger_conditions) != (
            config.place_id,
            config.agent_id,
            config.trigger_conditions,
        ):
            changed.append(index)
    return changed


def place_agent_digest(config: PlaceAgentConfig) -> str:
    """A short digest of a place agent's definition, in the names of the tasks a definition
    of the workflow schedules for the tokens already in its place (with the token's version in
    their body): the same check of the same token is one task (a repeated registration's is
    dropped as a duplicate), another definition's is its own."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def execution_id(token_id: str, transition_id: str, version: int, attempt: int) -> str:
    """The id of an attempt of a firing (and of its run): derived, so a redelivery finds it."""
    digest = hashlib.sha256(f"{token_id}\0{transition_id}\0{version}".encode()).hexdigest()
    return f"tx-{token_id[:40]}-{digest[:16]}-a{attempt}"


def error_kind(result: LoopResult) -> ErrorKind:
    """How a finished run failed, in ``retry_on_errors`` terms."""
    match result.exit:
        case LoopExit.MAX_ITERS:
            return "max_iters"
        case LoopExit.BUDGET_EXCEEDED:
            return "budget"
        case LoopExit.GUARDRAIL_BLOCK:
            return "guardrail"
    reason = str(result.payload.get("reason", ""))
    if "timed out" in reason:
        return "timeout"
    for kind in ("rate_limit", "timeout", "server", "connection", "auth", "bad_request"):
        if f"{kind}:" in reason:
            return kind
    return "error"


@dataclass(frozen=True)
class Move:
    """Move the token: ``data``/``metadata`` as mapped; ``agent_failed`` when a ``required:
    false`` transition moves despite its agent."""

    data: dict[str, Any]
    metadata: dict[str, Any]
    agent_failed: str | None = None


@dataclass(frozen=True)
class Retry:
    """Run the agent again (attempt ``attempt``) after ``backoff_seconds``."""

    attempt: int
    backoff_seconds: float


@dataclass(frozen=True)
class Stay:
    """Leave the token where it is, with ``reason`` as its ``last_error``."""

    reason: str


Completion = Move | Retry | Stay


def complete(
    token: Token,
    *,
    output_mapping: Mapping[str, str],
    required: bool,
    retry: AgentRetryConfig | None,
    attempt: int,
    result: LoopResult,
    builtins: Mapping[str, Any],
) -> tuple[Completion, str | None, ErrorKind | None]:
    """What a finished agent run does to its token, and the execution's error (and kind)."""
    reason: str | None = None
    kind: ErrorKind | None = None
    if result.exit is LoopExit.SATISFIED:
        try:
            data, metadata = apply_output(token, output_mapping, result.payload, builtins)
        except MappingError as exc:
            reason, kind = str(exc), "output_mapping"
        else:
            return Move(data, metadata), None, None
    else:
        kind = error_kind(result)
        reason = f"{result.exit.value}: {result.payload.get('reason', '')}".rstrip(": ")
    assert reason is not None and kind is not None
    if (
        retry is not None
        and attempt < retry.max_attempts
        and (kind in retry.retry_on_errors or "error" in retry.retry_on_errors)
    ):
        return Retry(attempt + 1, retry.backoff_seconds), reason, kind
    if not required:
        return Move(dict(token.data), dict(token.metadata), agent_failed=reason), reason, kind
    return Stay(f"agent {reason}"), reason, kind


def answer_token(run: RunRecord) -> list[OutboxMessage]:
    """What the finishing commit of a token firing's run publishes: its firing's completion."""
    link = run.token_link
    if link is None:
        return []
    message = FiringMessage(
        run_id=run.run_id, token_id=link.token_id, execution_id=link.execution_id
    )
    return [OutboxMessage.of("transitions", message)]
