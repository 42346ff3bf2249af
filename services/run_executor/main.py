"""run_executor: push endpoint for intents (``/pubsub/intents``), steps (``/pubsub/steps``),
workflow token firings and finished firings (``/pubsub/transitions``) and
the messages Pub/Sub dead-lettered (``/pubsub/dead-letters``), and the Cloud Tasks callbacks for
wake-ups (``/tasks/wake``) and place agent executions and transition retries
(``/tasks/place-agent``)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from cloudagents.bootstrap import get_deps
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.runs import StepMessage, WakeUp
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.executor import RunExecutor
from cloudagents.runtime.push import (
    PushMessage,
    handle_push,
    handle_task,
    parse_json_model,
    record_parked,
)
from cloudagents.runtime.transitions import Transitions
from cloudagents.runtime.wakeups import WakeUps

_executor: RunExecutor | None = None


def executor_for(deps: Deps) -> RunExecutor:
    """One executor per process (per ``Deps``), so its transcript cache outlives a request."""
    global _executor
    if _executor is None or _executor.deps is not deps:
        _executor = RunExecutor(deps)
    return _executor


@functions_framework.aio.http
async def run_executor(request: Request) -> Response:
    deps = await get_deps("run_executor")
    executor = executor_for(deps)
    if request.url.path == deps.topology.place_agent_queue.path:
        return await handle_task(request, deps, Transitions(deps).handle_task)
    if request.url.path == deps.topology.wake_queue.path:

        async def wake(body: bytes) -> str:
            return await WakeUps(deps, executor).handle(parse_json_model(WakeUp, body))

        return await handle_task(request, deps, wake)

    async def apply(message: PushMessage) -> str:
        if request.url.path.endswith("/dead-letters"):
            return await record_parked(deps, message)
        if request.url.path.endswith("/transitions"):
            return await Transitions(deps).handle_message(message.data)
        if request.url.path.endswith("/intents"):
            return await executor.handle_intent(parse_json_model(IntentionMessage, message.data))
        return await executor.handle_step(parse_json_model(StepMessage, message.data))

    return await handle_push(request, deps, request.url.path, apply)
