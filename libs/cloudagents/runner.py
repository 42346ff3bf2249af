"""The in-process runner: run an agent with no cloud at all, on the same step engine.

``await Agent(definition).run("message")`` loops model call -> decision -> tools until an exit,
and returns a ``LoopResult``. The services run the very same steps one message at a time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, assert_never

import yaml

from cloudagents.adapters.llm.callable import LLMCallable
from cloudagents.adapters.llm.factory import build_model_client
from cloudagents.adapters.memory.budgets import InMemoryCostLedger, InMemoryRateLimiter
from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.errors import ModelError
from cloudagents.domain.messages import Message, ToolCall, tool_message
from cloudagents.domain.policy import GuardrailConfig
from cloudagents.domain.results import LoopExit, LoopResult, RunProgress
from cloudagents.engine import pricing
from cloudagents.engine.step import (
    CallTools,
    Finish,
    HandOff,
    RunAgain,
    Stop,
    account,
    build_request,
    check_before_model_call,
    check_daily_cost,
    decide,
    initial_messages,
    reservation_hold_seconds,
)
from cloudagents.ports.budgets import CostLedger, RateLimiter
from cloudagents.ports.model import ModelClient
from cloudagents.ports.observer import RunObserver
from cloudagents.runtime.retrying import RetryingModel
from cloudagents.tools import ToolRegistry, ToolResult, ToolSource

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def load_definitions(path: str | Path) -> list[AgentDefinition]:
    """Agent definitions from a YAML file: one mapping, a list, or ``{agents: [...]}``."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict) and "agents" in data:
        data = data["agents"]
    items = data if isinstance(data, list) else [data]
    return [AgentDefinition.model_validate(item) for item in items]


class _Waiting:
    """What a run is waiting for, and its counters, for the timeout's reason."""

    def __init__(self) -> None:
        self.what = "the model"
        self.progress = RunProgress()


class Agent:
    """An agent you can run in process. Tools are Python functions or ``Tool``s."""

    def __init__(
        self,
        definition: AgentDefinition,
        *,
        tools: Mapping[str, ToolSource] | list[ToolSource] | ToolRegistry | None = None,
        model_client: ModelClient | None = None,
        cost_ledger: CostLedger | None = None,
        rate_limiter: RateLimiter | None = None,
        observer: RunObserver | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self.definition = definition
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry.from_mapping(tools)
        self.model_client = model_client
        self.cost_ledger: CostLedger = cost_ledger or InMemoryCostLedger(clock=clock)
        self.rate_limiter: RateLimiter = rate_limiter or InMemoryRateLimiter()
        self.observer = observer or RunObserver()
        self.clock = clock

    def _model(self, llm_client: LLMCallable | None) -> RetryingModel:
        inner = (
            build_model_client(self.definition.model, llm_client=llm_client)
            if llm_client is not None or self.model_client is None
            else self.model_client
        )
        return RetryingModel(
            inner, self.definition.retry, timeout_seconds=self.definition.model.timeout_seconds
        )

    async def run(
        self,
        message: str,
        context: Mapping[str, Any] | None = None,
        *,
        guardrails: GuardrailConfig | Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> LoopResult:
        """Run to an exit. ``context["llm_client"]`` overrides the model; other context keys are
        template variables for ``user_template``. ``guardrails`` overrides the definition's."""
        context = dict(context or {})
        llm_client = context.pop("llm_client", None)
        agent = self.definition
        if guardrails is not None:
            agent = agent.model_copy(
                update={"guardrails": GuardrailConfig.model_validate(guardrails)}
            )
        run_id = run_id or f"run-{uuid.uuid4().hex[:16]}"
        model = self._model(llm_client)
        messages = initial_messages(agent, message, context)
        progress = RunProgress()
        await self.observer.started(run_id, agent, messages)
        waiting = _Waiting()
        try:
            async with asyncio.timeout(agent.timeout_seconds):
                result = await self._loop(run_id, agent, model, messages, progress, waiting)
        except TimeoutError:
            reason = f"timed out after {agent.timeout_seconds:g} s waiting for {waiting.what}"
            result = waiting.progress.stopped(LoopExit.ERROR, reason)
        await self.observer.finished(run_id, result, messages)
        return result

    def offered_tools(self, agent: AgentDefinition) -> list[str]:
        """The tools offered to the model: the definition's, then every tool passed to this
        ``Agent`` (passing a tool is enough; the services, whose tools come from modules, offer
        only the definition's)."""
        return list(dict.fromkeys([*agent.tools, *(t.name for t in self.tools)]))

    async def _loop(
        self,
        run_id: str,
        agent: AgentDefinition,
        model: RetryingModel,
        messages: list[Message],
        progress: RunProgress,
        waiting: _Waiting,
    ) -> LoopResult:
        specs = self.tools.specs()
        offer = self.offered_tools(agent)
        while True:
            waiting.progress = progress
            waiting.what = "the model"
            if stop := check_before_model_call(agent, progress, messages):
                return progress.stopped(stop.exit, stop.reason)
            day = self.clock().date().isoformat()
            reserve = pricing.max_call_cost(agent.model, agent.generation.max_tokens)
            if agent.budget.max_daily_cost is not None:
                spent = await self.cost_ledger.spent(agent.id, day)
                if stop := check_daily_cost(agent, spent, reserve):
                    return progress.stopped(stop.exit, stop.reason)
            reservation = await self.cost_ledger.reserve(
                agent.id, day, reserve, hold_seconds=reservation_hold_seconds(agent)
            )
            actual = 0.0
            try:
                reply = await model(
                    build_request(agent, messages, specs, offer),
                    on_chunk=lambda text: self.observer.chunk(run_id, text),
                )
                actual = pricing.cost_of(agent.model, reply.usage)
            except ModelError as error:
                return progress.stopped(LoopExit.ERROR, str(error))
            finally:
                await self.cost_ledger.settle(agent.id, day, reservation, actual)
            progress = account(progress, reply, actual)
            outcome = decide(agent, progress, reply, specs)
            messages.append(reply.as_message())
            await self.observer.step(run_id, reply, outcome, progress, messages)
            match outcome:
                case Finish(payload):
                    return progress.result(LoopExit.SATISFIED, payload)
                case Stop(exit, reason):
                    return progress.stopped(exit, reason)
                case HandOff(target):
                    payload = await self.observer.handoff(run_id, agent, target, messages)
                    return progress.result(LoopExit.HANDOFF, payload)
                case RunAgain(feedback):
                    if feedback:
                        messages.append(Message(role="user", content=feedback))
                case CallTools(calls):
                    waiting.progress = progress
                    waiting.what = "tool calls: " + ", ".join(
                        f"{c.name}#{i}" for i, c in enumerate(calls)
                    )
                    progress = await self._call_tools(run_id, agent, calls, messages, progress)
                case _:
                    assert_never(outcome)

    async def _call_tools(
        self,
        run_id: str,
        agent: AgentDefinition,
        calls: tuple[ToolCall, ...],
        messages: list[Message],
        progress: RunProgress,
    ) -> RunProgress:
        for call in calls:
            result = await self._call_tool(agent, call)
            messages.append(tool_message(call, result.content))
            progress = progress.model_copy(update={"tool_calls": progress.tool_calls + 1})
            await self.observer.tool_called(run_id, call, result)
        return progress

    async def _call_tool(self, agent: AgentDefinition, call: ToolCall) -> ToolResult:
        if call.name not in agent.tools and call.name not in self.tools:
            return ToolResult(f"tool {call.name!r} is not available to this agent", is_error=True)
        limit = agent.budget.max_tools_per_minute
        if limit is not None:
            while (wait := await self.rate_limiter.acquire(agent.id, limit, self.clock())) > 0:
                await asyncio.sleep(wait)
        return await self.tools.invoke(call.name, call.arguments)
