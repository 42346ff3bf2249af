"""The api's use cases that change state, apart from how a request reached them: start a run,
cancel it, register an agent, replay a dead letter. ``POST /runs`` and GraphQL's ``startRun``
call the same function; deciding an approval is ``runtime/approvals.py``.

Each takes the dependencies, the caller and a typed input, audits what it allowed or denied
(``action`` names the request, ``POST /runs``), and returns what it did, or raises
:class:`Refused` with the HTTP status its refusal maps to.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from cloudagents.domain.agents import AGENT_ID_PATTERN, AgentDefinition
from cloudagents.domain.approvals import ALWAYS, NEVER
from cloudagents.domain.conversations import CONVERSATION_ID_PATTERN, ConversationBusy
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.runs import OutboxMessage, RunRecord
from cloudagents.runtime.audit import audit
from cloudagents.runtime.auth import Principal, may_start
from cloudagents.runtime.broker import HandoffBroker
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.executor import start_run
from cloudagents.runtime.trees import cancel_tree
from cloudagents.telemetry import tracer
from cloudagents.tools import get_approval_predicate


class Refused(Exception):
    """A use case that will not do what was asked: ``status`` is the HTTP answer, ``extra`` more
    fields of the error body (``problems``)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class StartRunRequest(BaseModel):
    """``POST /runs`` body (and GraphQL ``startRun``'s arguments)."""

    model_config = ConfigDict(extra="forbid")
    agent_id: str = Field(min_length=1, max_length=128, pattern=AGENT_ID_PATTERN)
    message: str = Field(max_length=200_000)
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    run_id: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$"
    )
    conversation_id: str | None = Field(
        default=None,
        pattern=CONVERSATION_ID_PATTERN,
        description="continue this conversation: one run at a time (409 while one runs)",
    )


@dataclass(frozen=True)
class StartedRun:
    """A run started (or found already started under the same ``run_id``: ``created`` False)."""

    run_id: str
    created: bool


async def start_run_for(
    deps: Deps, principal: Principal, body: StartRunRequest, *, action: str
) -> StartedRun:
    """Create the run's document and publish its ``IntentionMessage``, as a caller publishing
    the intent directly would; 404 for an unknown agent, 403 for a caller not in its
    ``allowed_callers``."""
    agent = await deps.agents.get_agent(body.agent_id)
    if agent is None:
        raise Refused(404, f"unknown agent {body.agent_id!r}")
    if not may_start(principal, agent):
        await audit(deps, action, principal, "denied", 403, agent.id, "not in allowed_callers")
        raise Refused(403, f"{principal.id} may not start runs of agent {agent.id!r}")
    run_id = body.run_id or f"run-{uuid.uuid4().hex}"
    with tracer.start_as_current_span("agent.run.start", attributes={"cloudagents.run_id": run_id}):
        try:
            created = await start_run(
                deps,
                run_id=run_id,
                agent=agent,
                message=body.message,
                variables=dict(body.variables),
                source="api",
                principal=principal.id,
                conversation_id=body.conversation_id,
            )
        except ConversationBusy as busy:
            raise Refused(409, str(busy), active_run_id=busy.run_id) from busy
        intent = IntentionMessage.for_run(
            run_id=run_id,
            agent_id=agent.id,
            message=body.message,
            source_agent="api",
            variables=body.variables,
            conversation_id=body.conversation_id,
        )
        await deps.publish([OutboxMessage(topic="intents", data=intent.model_dump(mode="json"))])
    await audit(deps, action, principal, "allowed", 202, run_id, f"agent {agent.id}")
    return StartedRun(run_id=run_id, created=created)


async def cancel_run(deps: Deps, run_id: str) -> RunRecord | None:
    """Cancel a run and the calls below it (``runtime/trees.py``); None: no such run."""
    return await cancel_tree(deps, run_id, "cancelled by request")


def unknown_approval_rule(definition: AgentDefinition) -> dict[str, str] | None:
    """A policy rule naming a predicate no tool module registered (it would ask every time)."""
    policy = definition.approval
    for tool_name, rule in (policy.tools if policy is not None else {}).items():
        if rule not in (ALWAYS, NEVER) and get_approval_predicate(rule) is None:
            return {
                "loc": f"approval.tools.{tool_name}",
                "msg": f"{rule!r} is not always, never or a registered approval predicate",
            }
    return None


async def register_agent(
    deps: Deps, principal: Principal, definition: AgentDefinition, *, action: str
) -> None:
    """Store an agent's definition and offer it the open handoff offers it can take; 422 for an
    approval rule that names no registered predicate."""
    if problem := unknown_approval_rule(definition):
        raise Refused(422, "invalid request", problems=[problem])
    await deps.agents.put_agent(definition)
    await audit(deps, action, principal, "allowed", 201, definition.id, "agent registered")
    await HandoffBroker(deps).offer_open_offers_to(definition)


@dataclass(frozen=True)
class Replayed:
    """A dead letter published again: to ``topic``, as ``message_id``."""

    letter_id: str
    topic: str
    message_id: str


async def replay_dead_letter(
    deps: Deps, principal: Principal, letter_id: str, *, action: str
) -> Replayed:
    """Publish a dead letter's original message again, to the topic it was delivered from; 404
    for an unknown letter, 409 for one whose subscription the topology does not know."""
    letter = await deps.dead_letters.get_dead_letter(letter_id)
    if letter is None:
        raise Refused(404, f"unknown dead letter {letter_id!r}")
    subscription = letter.source.rsplit("/", 1)[-1]
    topic = next((s.topic for s in deps.topology.subscriptions if s.name == subscription), None)
    if topic is None:
        raise Refused(409, f"cannot replay: {letter.source!r} is not a known subscription")
    data = base64.b64decode(letter.data)
    attributes = {**letter.attributes, "cloudagents-replay-of": letter.id}
    message_id = await deps.bus.publish(topic, data, attributes)
    await deps.dead_letters.mark_replayed(letter.id)
    await audit(deps, action, principal, "allowed", 202, letter.id, f"replayed to {topic}")
    return Replayed(letter_id=letter.id, topic=topic, message_id=message_id)
