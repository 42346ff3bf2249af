"""In-process workers: node tasks by node type, at most ``capacity`` at a time per worker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from cloudagents.graphs.superstep import NodeTask, TaskResult

F = TypeVar("F", bound=Callable[..., Any])


class WorkerStopped(RuntimeError):
    """The worker was stopped while a submitted task was queued or running."""


Job = Callable[[Callable[..., Any]], Awaitable[TaskResult]]
"""Given the worker's function for the task's node type, run the task."""


class NodeFunctions:
    """What both workers share: the node types a worker serves and its function for each."""

    worker_id: str
    node_types: frozenset[str]
    _functions: dict[str, Callable[..., Any]]

    def register_node(self, name: str, func: Callable[..., Any]) -> None:
        """Serve node type ``name`` with ``func`` (sync or async, ``State`` -> dict)."""
        if name not in self.node_types:
            raise ValueError(f"worker {self.worker_id} does not serve node type {name!r}")
        self._functions[name] = func

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator form of ``register_node``."""

        def decorate(func: F) -> F:
            self.register_node(name, func)
            return func

        return decorate


class Worker(NodeFunctions):
    """Serves the node types it names; ``capacity`` consumers pull from one queue.

    ``start()`` spawns the consumers and returns; ``stop()`` cancels them. An
    ``Orchestrator(workers=[...])`` submits each node task to a worker serving its type.
    """

    def __init__(
        self, node_types: Iterable[str], capacity: int = 4, *, worker_id: str | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        self.node_types = frozenset(node_types)
        self.capacity = capacity
        self._functions: dict[str, Callable[..., Any]] = {}
        self._queue: asyncio.Queue[tuple[NodeTask, Job, asyncio.Future[TaskResult]]] = (
            asyncio.Queue()
        )
        self._consumers: list[asyncio.Task[None]] = []
        self.active = 0
        """Tasks running right now (never above ``capacity``)."""

    def serves(self, node_type: str) -> bool:
        """Whether this worker has a function for ``node_type``."""
        return node_type in self._functions

    @property
    def running(self) -> bool:
        """Whether the consumers are up."""
        return bool(self._consumers)

    @property
    def load(self) -> int:
        """Queued plus running tasks: how the orchestrator picks among workers."""
        return self._queue.qsize() + self.active

    async def start(self) -> None:
        """Start ``capacity`` consumers (idempotent)."""
        if not self._consumers:
            self._consumers = [
                asyncio.create_task(self._consume(), name=f"{self.worker_id}-{i}")
                for i in range(self.capacity)
            ]

    async def stop(self) -> None:
        """Cancel the consumers; running and queued tasks fail with ``WorkerStopped``."""
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            consumer.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        while not self._queue.empty():
            task, _, future = self._queue.get_nowait()
            future.set_exception(WorkerStopped(f"worker {self.worker_id} stopped: {task.task_id}"))

    async def submit(self, task: NodeTask, job: Job) -> TaskResult:
        """Queue ``task`` and wait for its result."""
        if not self.running:
            raise RuntimeError(f"worker {self.worker_id} is not started")
        if not self.serves(task.node_type):
            raise ValueError(f"worker {self.worker_id} has no function for {task.node_type!r}")
        future: asyncio.Future[TaskResult] = asyncio.get_running_loop().create_future()
        await self._queue.put((task, job, future))
        return await future

    async def _consume(self) -> None:
        while True:
            task, job, future = await self._queue.get()
            self.active += 1
            try:
                result = await job(self._functions[task.node_type])
            except asyncio.CancelledError:
                if not future.done():  # stop() mid-task: the caller must not wait forever
                    future.set_exception(
                        WorkerStopped(f"worker {self.worker_id} stopped during {task.task_id}")
                    )
                raise
            except Exception as error:  # a job never raises for node failures; this is a bug
                if not future.done():
                    future.set_exception(error)
            else:
                if not future.done():
                    future.set_result(result)
            finally:
                self.active -= 1
