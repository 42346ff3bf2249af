"""Run one node task: the node function, then its router, with retries and a timeout.

This is what a worker does with a ``NodeTask``; the ``TaskResult`` it returns is plain data
(update + route decision), ready to be recorded first-write-wins.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cloudagents.graphs.errors import GraphError
from cloudagents.graphs.reducers import ReducerFunction
from cloudagents.graphs.spec import CompiledGraph, RetryPolicy
from cloudagents.graphs.state import State
from cloudagents.graphs.superstep import (
    NodeTask,
    RouteDecision,
    TaskResult,
    route_decision,
    router_view,
)

Sleep = Callable[[float], Awaitable[None]]
NO_RETRY = RetryPolicy(max_attempts=1)


async def _call(func: Callable[..., Any], argument: State) -> Any:
    if inspect.iscoroutinefunction(func):
        return await func(argument)
    # A sync function runs in a thread so parallel nodes stay parallel; a timeout abandons
    # the thread (Python cannot stop it), it does not kill it.
    value = await asyncio.to_thread(func, argument)
    return await value if inspect.isawaitable(value) else value


async def _attempt(
    graph: CompiledGraph,
    task: NodeTask,
    state: Mapping[str, Any],
    node: Callable[..., Any],
    router: Callable[..., Any] | None,
    workflow_id: str,
    reducers: Mapping[str, ReducerFunction] | None,
) -> tuple[dict[str, Any], RouteDecision | None]:
    update = await _call(node, State(workflow_id, state, step=task.step))
    if update is None:
        update = {}
    if not isinstance(update, Mapping) or not all(isinstance(k, str) for k in update):
        raise GraphError(
            f"node {task.node!r} returned {type(update).__name__}; expected a dict of updates"
        )
    update = dict(update)
    if router is None:
        return update, None
    view = router_view(graph, state, task.node, update, reducers)
    key = await _call(router, State(workflow_id, view, step=task.step))
    return update, route_decision(graph, task.node, key)


async def run_task(
    graph: CompiledGraph,
    task: NodeTask,
    state: Mapping[str, Any],
    node: Callable[..., Any],
    router: Callable[..., Any] | None = None,
    *,
    workflow_id: str,
    reducers: Mapping[str, ReducerFunction] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> TaskResult:
    """Attempt the task under the node's retry policy and timeout; never raises for a
    node failure (the result says ``failed`` with the cause), so sibling tasks finish."""
    spec = graph.nodes[task.node]
    policy = spec.retry or NO_RETRY
    attempt = 0
    while True:
        attempt += 1
        deadline = asyncio.timeout(spec.timeout_seconds)
        try:
            async with deadline:
                update, route = await _attempt(
                    graph, task, state, node, router, workflow_id, reducers
                )
        except Exception as error:
            # A GraphError (bad return type, unknown route key) is a bug, not bad luck.
            retryable = policy.retries(error) and not isinstance(error, GraphError)
            if retryable and attempt < policy.max_attempts:
                await sleep(policy.delay_before(attempt + 1))
                continue
            cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            if deadline.expired():  # ours, not a TimeoutError the node raised itself
                cause = f"timed out after {spec.timeout_seconds} s"
            return TaskResult(
                task_id=task.task_id, node=task.node, status="failed", error=cause, attempts=attempt
            )
        return TaskResult(
            task_id=task.task_id,
            node=task.node,
            status="done",
            update=update,
            route=route,
            attempts=attempt,
        )
