"""One step of the agent loop as pure functions.

The run executor calls these once per message; the in-process runner loops over them. Both feed
the same inputs and act on the same typed outcomes, so a run behaves alike in process and in the
cloud.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, assert_never

import jsonschema

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.handoffs import HandoffTarget
from cloudagents.domain.messages import (
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
)
from cloudagents.domain.results import LoopExit, RunProgress
from cloudagents.engine import guardrails

if TYPE_CHECKING:
    from cloudagents.engine.approvals import Gate
    from cloudagents.engine.calls import ChildCall


@dataclass(frozen=True)
class Finish:
    """The model is done: end the run ``SATISFIED`` with this payload."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class CallTools:
    """Run these tool calls, give the results to the model, and step again. ``gated``: the
    calls (by index) that wait for a person first, and why (``engine/approvals.py``)."""

    calls: tuple[ToolCall, ...]
    gated: Mapping[int, Gate] = field(default_factory=dict)
    children: Mapping[int, ChildCall] = field(default_factory=dict)


@dataclass(frozen=True)
class HandOff:
    """Offer the task to an agent with the required capabilities; the run ends ``HANDOFF``."""

    target: HandoffTarget


@dataclass(frozen=True)
class RunAgain:
    """Call the model again, after adding ``feedback`` (if any) as a user message."""

    feedback: str | None = None


@dataclass(frozen=True)
class Stop:
    """End the run with ``exit``, for ``reason``."""

    exit: LoopExit
    reason: str


StepOutcome = Finish | CallTools | HandOff | RunAgain | Stop


def initial_messages(
    agent: AgentDefinition, message: str, variables: Mapping[str, Any]
) -> list[Message]:
    """The conversation a run starts from: instructions (and ``context_instructions``) and the
    (templated) user message. Raises ``TemplateError`` for a variable the run lacks."""
    return [
        Message(role="system", content=agent.render_instructions(message, variables)),
        Message(role="user", content=agent.render_user_message(message, variables)),
    ]


def unrenderable_opening(agent: AgentDefinition, message: str) -> list[Message]:
    """The transcript of a run whose templates cannot render: the plain instructions and the
    message as given (the run ends ``ERROR`` at its first step, ``opening_stop``)."""
    return [
        Message(role="system", content=agent.instructions),
        Message(role="user", content=message),
    ]


def opening_stop(opening_error: str | None) -> Stop | None:
    """A run whose first message could not be built (a template variable it lacks) ends
    ``ERROR`` with the reason at its first step, whichever entry point started it."""
    if opening_error is None:
        return None
    return Stop(LoopExit.ERROR, f"cannot build the first message: {opening_error}")


def build_request(
    agent: AgentDefinition,
    messages: list[Message],
    tools: Mapping[str, ToolSpec],
    offer: Sequence[str] | None = None,
) -> ModelRequest:
    """The model request for the next step: the tools named in ``offer`` (by default the agent's
    declared tools) that are registered, in that order."""
    names = agent.tools if offer is None else offer
    specs = [tools[name] for name in dict.fromkeys(names) if name in tools]
    return ModelRequest(
        model=agent.model.name, messages=messages, tools=specs, generation=agent.generation
    )


def check_before_model_call(
    agent: AgentDefinition, progress: RunProgress, messages: list[Message]
) -> Stop | None:
    """Iterations cap, token budget and input guardrail, checked before every model call."""
    budget = agent.budget
    if progress.iterations >= budget.max_iterations:
        return Stop(LoopExit.MAX_ITERS, f"reached max_iterations={budget.max_iterations}")
    if budget.max_tokens_per_run is not None and progress.total_tokens >= budget.max_tokens_per_run:
        return Stop(
            LoopExit.BUDGET_EXCEEDED,
            f"used {progress.total_tokens} tokens, max_tokens_per_run={budget.max_tokens_per_run}",
        )
    if reason := guardrails.check_input(agent.guardrails, guardrails.new_input(messages)):
        return Stop(LoopExit.GUARDRAIL_BLOCK, reason)
    return None


def check_daily_cost(agent: AgentDefinition, spent_today: float, reserve: float) -> Stop | None:
    """Refuse a model call whose reserved cost would take today's spend over the cap."""
    cap = agent.budget.max_daily_cost
    if cap is not None and spent_today + reserve > cap:
        return Stop(
            LoopExit.BUDGET_EXCEEDED,
            f"daily cost cap ${cap:.4f} reached (spent ${spent_today:.4f}, "
            f"next call reserves ${reserve:.4f})",
        )
    return None


# Beyond the model call itself: streaming chunk writes, the settle write, a slow event loop.
RESERVATION_MARGIN_SECONDS = 60.0
# The ledger is kept per day, so a longer hold would outlive the day it counts against.
MAX_RESERVATION_HOLD_SECONDS = 24 * 3600.0


def reservation_hold_seconds(agent: AgentDefinition) -> float:
    """How long a call's cost reservation counts against the daily cap if it is never settled.

    Covers the whole model call as ``RetryingModel`` makes it: ``max_attempts`` attempts of up to
    ``model.chain_timeout_seconds()`` each (the model's timeout plus its fallbacks'), the
    exponential backoffs between them, and a margin; capped
    at a day. A provider's ``retry_after`` longer than the backoff can outlast the hold: the
    reservation then stops counting before the call settles (its actual cost is still added).
    """
    retry = agent.retry
    backoffs = sum(
        retry.backoff_seconds * retry.backoff_multiplier**attempt
        for attempt in range(retry.max_attempts - 1)
    )
    per_attempt = agent.model.chain_timeout_seconds()  # the primary's, plus any fallbacks'
    hold = per_attempt * retry.max_attempts + backoffs + RESERVATION_MARGIN_SECONDS
    return min(hold, MAX_RESERVATION_HOLD_SECONDS)


def account(progress: RunProgress, reply: ModelResponse, cost_usd: float) -> RunProgress:
    """Progress after a model call: every call counts, even one whose result is discarded."""
    return progress.model_copy(
        update={
            "iterations": progress.iterations + 1,
            "total_tokens": progress.total_tokens + reply.usage.total_tokens,
            "prompt_tokens": progress.prompt_tokens + reply.usage.prompt_tokens,
            "completion_tokens": progress.completion_tokens + reply.usage.completion_tokens,
            "cost_usd": progress.cost_usd + cost_usd,
        }
    )


def payload_of(reply: ModelResponse, *, structured: bool = False) -> dict[str, Any]:
    """The ``LoopResult.payload`` of a final reply: a dict as is, text as ``{"answer": text}``.
    ``structured`` (the agent has an ``output_schema``): text that is a JSON object (what
    chat APIs return for a JSON answer) is that object."""
    if isinstance(reply.content, dict):
        return dict(reply.content)
    if structured and reply.content:
        text = reply.content.strip()
        if text.startswith("```"):  # a fenced block: ```json ... ```
            text = text.strip("`").removeprefix("json").strip()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {"answer": reply.content or ""}


def decide(
    agent: AgentDefinition,
    progress: RunProgress,
    reply: ModelResponse,
    tools: Mapping[str, ToolSpec],
    gated: Mapping[int, Gate] | None = None,
    cleared: Collection[int] = (),
    children: Mapping[int, ChildCall] | None = None,
) -> StepOutcome:
    """What to do with a model reply. ``progress`` already includes this reply's usage.
    ``gated``: the reply's tool calls (by index) that wait for a person; ``cleared``: those a
    remembered approval covers. Neither is blocked by its risk: a person judges it."""
    gated = gated or {}
    over_budget = (
        agent.budget.max_tokens_per_run is not None
        and progress.total_tokens > agent.budget.max_tokens_per_run
    )
    if reply.handoff_target is not None:
        return HandOff(reply.handoff_target)
    if reply.tool_calls:
        if over_budget:
            return _over_budget(agent, progress)
        for i, call in enumerate(reply.tool_calls):
            spec = tools.get(call.name)
            if reason := guardrails.check_tool_call(
                agent.guardrails, call, spec, gated=i in gated or i in cleared
            ):
                return Stop(LoopExit.GUARDRAIL_BLOCK, reason)
        return CallTools(tuple(reply.tool_calls), dict(gated), dict(children or {}))
    if reply.done is False:
        return _over_budget(agent, progress) if over_budget else RunAgain()
    if reason := guardrails.check_output(agent.guardrails, reply.content_text()):
        return Stop(LoopExit.GUARDRAIL_BLOCK, reason)
    payload = payload_of(reply, structured=agent.output_schema is not None)
    if agent.output_schema is not None:
        problem = schema_problem(agent.output_schema, payload)
        if problem is not None:
            if over_budget:
                return _over_budget(agent, progress)
            return RunAgain(
                feedback=f"Your answer does not match the required output schema: {problem}. "
                f"Reply with a JSON object matching: {json.dumps(agent.output_schema)}"
            )
    return Finish(payload)


def schema_problem(schema: Mapping[str, Any], value: Any) -> str | None:
    """The first JSON Schema violation of ``value``, or ``None``."""
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value)
    )
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


def _over_budget(agent: AgentDefinition, progress: RunProgress) -> Stop:
    return Stop(
        LoopExit.BUDGET_EXCEEDED,
        f"used {progress.total_tokens} tokens, max_tokens_per_run="
        f"{agent.budget.max_tokens_per_run}",
    )


def describe(outcome: StepOutcome) -> str:
    """A short label of an outcome, for interaction records and logs."""
    match outcome:
        case Finish():
            return "finish"
        case CallTools(calls, gated, _):
            label = "tools:" + ",".join(call.name for call in calls)
            return label + (f" (awaiting approval: {len(gated)})" if gated else "")
        case HandOff(target):
            return "handoff:" + ",".join(target.required_capabilities)
        case RunAgain():
            return "run_again"
        case Stop(exit, _):
            return f"stop:{exit.value}"
        case _:
            assert_never(outcome)
