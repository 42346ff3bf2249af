"""Agent-to-agent calls as pure rules: the tool a peer is offered as, the checks a call passes
in the caller's step (peer allowed, depth, no cycle, input valid), and the tool result a
finished child run gives its caller.

A call is a durable child run: its id is derived from the calling step
(``{run}-c{seq:06d}-{index:03d}``), so a redelivered step never makes a second child; the caller
waits with a ``child_run`` pending item whose id is the tool call's; the child's finishing
commit publishes the caller's tool message, and the tool invoker puts the child's result on the
call (first result wins) and the barrier wakes the caller as for any tool.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.messages import ToolCall, ToolSpec
from cloudagents.domain.results import LoopExit
from cloudagents.domain.runs import OutboxMessage, ParentCall, RunRecord, ToolMessage
from cloudagents.engine.step import schema_problem

PEER_TOOL_PREFIX = "invoke_"
DEFAULT_INPUT_SCHEMA: dict[str, JsonValue] = {
    "type": "object",
    "properties": {"request": {"type": "string", "description": "what to ask the agent"}},
    "required": ["request"],
}


def peer_tool_name(peer_id: str) -> str:
    return PEER_TOOL_PREFIX + peer_id.replace("-", "_")


def peer_spec(peer: AgentDefinition) -> ToolSpec:
    """How a peer is offered to a caller's model: a tool whose parameters are its input schema."""
    about = peer.description or peer.name or peer.id
    return ToolSpec(
        name=peer_tool_name(peer.id),
        description=f"Ask the agent {peer.id!r} ({about}); its answer is the result.",
        parameters=dict(peer.input_schema or DEFAULT_INPUT_SCHEMA),
    )


def peer_of(agent: AgentDefinition, tool_name: str) -> str | None:
    """The allowed peer a tool name calls, if it is a peer tool of ``agent``."""
    return next((p for p in agent.allowed_peers if peer_tool_name(p) == tool_name), None)


def child_run_id(run_id: str, seq: int, index: int) -> str:
    return f"{run_id}-c{seq:06d}-{index:03d}"


@dataclass(frozen=True)
class ChildCall:
    """A call of the step that goes to a peer: the child run to start, or why it may not."""

    agent_id: str
    run_id: str
    message: str
    problem: str | None = None


def child_message(peer: AgentDefinition | None, arguments: Mapping[str, Any]) -> str:
    """The child's user message: the ``request`` of the default schema, else the arguments."""
    if (peer is None or peer.input_schema is None) and isinstance(arguments.get("request"), str):
        return str(arguments["request"])
    return json.dumps(dict(arguments), ensure_ascii=False, sort_keys=True)


def child_calls(
    run: RunRecord,
    agent: AgentDefinition,
    calls: list[ToolCall],
    peers: Mapping[str, AgentDefinition],
) -> dict[int, ChildCall]:
    """The calls (by index) that go to peers, each checked: the peer is allowed and registered,
    the call stays within ``max_chain_depth``, its agent is not already on the call path (no
    cycle), and the arguments match the peer's input schema. A failed check is a ``problem``:
    the call gets it as an error result the model can correct; no child is started."""
    found: dict[int, ChildCall] = {}
    for i, call in enumerate(calls):
        peer_id = peer_of(agent, call.name)
        if peer_id is None:
            continue
        peer = peers.get(peer_id)
        message = child_message(peer, call.arguments)
        path = [*run.call_path, run.agent_id]
        problem = None
        if peer is None:
            problem = f"agent {peer_id!r} is not registered"
        elif run.call_depth + 1 > agent.max_chain_depth:
            problem = (
                f"calling {peer_id!r} would be depth {run.call_depth + 1}, over "
                f"max_chain_depth={agent.max_chain_depth}"
            )
        elif peer_id in path:
            problem = f"calling {peer_id!r} would make a cycle: {' -> '.join([*path, peer_id])}"
        elif (schema := peer.input_schema or DEFAULT_INPUT_SCHEMA) and (
            wrong := schema_problem(schema, call.arguments)
        ):
            problem = f"input for {peer_id!r} does not match its input_schema: {wrong}"
        found[i] = ChildCall(
            agent_id=peer_id,
            run_id=child_run_id(run.run_id, run.seq, i),
            message=message,
            problem=problem,
        )
    return found


def child_result(child: RunRecord, output_schema: Mapping[str, Any] | None) -> tuple[Any, bool]:
    """What a finished child gives its caller's call: ``(result, is_error)``. ``SATISFIED``: its
    payload (a text answer as the text); otherwise a typed error naming the exit and reason
    (``output_invalid`` when it could not produce output matching its ``output_schema``,
    ``timeout`` when it ran past its deadline)."""
    assert child.result is not None
    result = child.result
    if result.exit is LoopExit.SATISFIED:
        payload = dict(result.payload)
        if (
            output_schema is None
            and set(payload) == {"answer"}
            and isinstance(payload["answer"], str)
        ):
            return payload["answer"], False
        return payload, False
    kind = result.exit.value.lower()
    reason = str(result.payload.get("reason", "")) or ", ".join(result.errors)
    if output_schema is not None and result.exit is LoopExit.MAX_ITERS:
        kind = "output_invalid"
    elif result.exit is LoopExit.ERROR and reason.startswith("timed out"):
        kind = "timeout"  # past its deadline (its own, or its caller's)
    return {
        "error": kind,
        "agent": child.agent_id,
        "exit": result.exit.value,
        "reason": reason,
    }, True


def child_intent(
    parent: RunRecord, seq: int, index: int, child_run: str, agent_id: str, message: str
) -> OutboxMessage:
    """The intent that starts (once: its run id is derived from the call) the child run."""
    intent = IntentionMessage.for_run(
        run_id=child_run,
        agent_id=agent_id,
        message=message,
        source_agent=parent.agent_id,
        parent_run_id=parent.run_id,
        parent_call=ParentCall(run_id=parent.run_id, seq=seq, index=index),
    )
    return OutboxMessage(topic="intents", data=intent.model_dump(mode="json"))


def answer_parent(run: RunRecord) -> list[OutboxMessage]:
    """What a finishing child publishes: its caller's tool message (the invoker then reads the
    finished child and puts its result on the call)."""
    call = run.parent_call
    if call is None:
        return []
    message = ToolMessage(run_id=call.run_id, seq=call.seq, index=call.index)
    return [OutboxMessage.of("tools", message)]
