"""Where a superstep's node tasks go: the one place that chooses Pub/Sub or Cloud Tasks.

A node type listed in ``CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES`` is *push-dispatched*: each task is a
Cloud Task on its node type's queue in the run's band (``topology.graph_task_queue``), calling
the graph worker service (``services/graph_worker``) at ``CLOUDAGENTS_GRAPH_WORKER_URL``. Every
other node type is published on its topic in the run's band (``topology.graph_node_topic``)
for ``DistributedWorker``s to pull. Opening a superstep with a push task also schedules the
superstep's first wake-up (``SuperstepWake``) at its dispatch lease's expiry: the graph worker
service re-dispatches what lapsed, with no orchestrator waiting (``graphs/push.py``).

A task is only a delivery: the task document decides who runs it (a lease, first-write-wins
results), so a duplicate, late or lost Cloud Task or message is harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta

from cloudagents.graphs.documents import Priority, SuperstepWake, TaskMessage
from cloudagents.graphs.superstep import NodeTask
from cloudagents.settings import Settings
from cloudagents.topology import (
    GRAPH_TASK_PATH,
    GRAPH_WAKE_PATH,
    graph_node_topic,
    graph_task_queue,
    graph_wake_queue,
)

Publish = Callable[[str, bytes, dict[str, str]], Awaitable[object]]
"""(topic, data, attributes): an ``EventBus.publish``."""
Schedule = Callable[..., Awaitable[str]]
"""``TaskQueue.schedule(queue, url, body, at, *, name=None)`` (``adapters/cloud_tasks``)."""
WAKE_SLACK_SECONDS = 1.0
"""A wake-up comes this long after the lease it looks at, so the holder's last renewal lands."""


class PushNotConfigured(RuntimeError):
    """A push node type's task with no graph worker URL or Cloud Tasks client to send it."""


class NodeDispatch:
    """Sends node tasks by node type: Cloud Tasks for ``push_node_types``, Pub/Sub otherwise.

    ``await dispatch(workflow_id, priority, tasks)`` *opens* a superstep (a start, fork,
    resume or barrier commit): besides sending, it schedules the superstep's first wake-up when
    a task is push-dispatched. ``send(...)`` only sends (a re-dispatch of a lapsed task).
    ``copies`` sends every task that many times (fault testing)."""

    def __init__(
        self,
        workspace: str,
        *,
        publish: Publish,
        schedule: Schedule | None = None,
        push_node_types: Iterable[str] = (),
        worker_url: str | None = None,
        wake_after: float = 30.0,
        copies: int = 1,
    ) -> None:
        self.workspace = workspace
        self.publish = publish
        self.schedule = schedule
        self.push_node_types = frozenset(push_node_types)
        self.worker_url = worker_url.rstrip("/") if worker_url else None
        self.wake_after = wake_after
        """Seconds from opening a superstep to its first wake-up (the run's dispatch lease)."""
        self.copies = copies

    def pushed(self, node_type: str) -> bool:
        """True if ``node_type``'s tasks go to the graph worker service (Cloud Tasks)."""
        return node_type in self.push_node_types

    def pulled(self, tasks: Iterable[NodeTask]) -> list[NodeTask]:
        """The tasks that travel on Pub/Sub (whose topics must exist before publishing)."""
        return [t for t in tasks if not self.pushed(t.node_type)]

    async def __call__(self, workflow_id: str, priority: Priority, tasks: list[NodeTask]) -> None:
        tasks = list(tasks)
        pushed = [t for t in tasks if self.pushed(t.node_type)]
        if pushed:
            # Before the tasks: a wake-up that finds nothing to do costs one read, a superstep
            # whose sender died after its commit and before its wake-up has no one to wake it.
            step = pushed[0].step
            at = datetime.now(UTC) + timedelta(seconds=self.wake_after + WAKE_SLACK_SECONDS)
            await self.wake(SuperstepWake(workflow_id=workflow_id, step=step, gen=0), at)
        await self.send(workflow_id, priority, tasks)

    async def send(self, workflow_id: str, priority: Priority, tasks: Iterable[NodeTask]) -> None:
        """Send ``tasks`` on their node types' queues or topics in ``priority``'s band."""
        for task in tasks:
            data = TaskMessage(workflow_id=workflow_id, task=task).model_dump_json().encode()
            for _ in range(self.copies):
                if self.pushed(task.node_type):
                    schedule, url = self._push_target()
                    queue = graph_task_queue(self.workspace, task.node_type, priority)
                    await schedule(queue, url + GRAPH_TASK_PATH, data, datetime.now(UTC))
                else:
                    topic = graph_node_topic(self.workspace, task.node_type, priority)
                    attributes = {
                        "workflow_id": workflow_id,
                        "task_id": task.task_id,
                        "priority": priority,
                    }
                    await self.publish(topic, data, attributes)

    async def wake(self, wake: SuperstepWake, at: datetime) -> None:
        """Schedule ``wake`` at ``at`` on the workspace's wake-up queue. Named after its
        content: production Cloud Tasks drops a duplicate; the emulator does not, and the
        handler claims each (step, gen) once (``FirestoreGraphStore.claim_wake``)."""
        schedule, url = self._push_target()
        body = wake.model_dump_json().encode()
        name = "gwake-" + hashlib.sha256(body).hexdigest()[:40]
        await schedule(graph_wake_queue(self.workspace), url + GRAPH_WAKE_PATH, body, at, name=name)

    def _push_target(self) -> tuple[Schedule, str]:
        if self.schedule is None or self.worker_url is None:
            raise PushNotConfigured(
                f"node types {sorted(self.push_node_types)} are push-dispatched: set "
                "CLOUDAGENTS_GRAPH_WORKER_URL to the graph worker service's URL (and give this "
                "process a Cloud Tasks client)"
            )
        return self.schedule, self.worker_url


def node_dispatch(
    settings: Settings,
    publish: Publish,
    schedule: Schedule | None,
    *,
    wake_after: float = 30.0,
    copies: int = 1,
) -> NodeDispatch:
    """The ``NodeDispatch`` of a process configured by ``settings``
    (``CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES``, ``CLOUDAGENTS_GRAPH_WORKER_URL``)."""
    return NodeDispatch(
        settings.workspace,
        publish=publish,
        schedule=schedule if settings.graph_push_node_types else None,
        push_node_types=settings.graph_push_node_types,
        worker_url=settings.graph_worker_url,
        wake_after=wake_after,
        copies=copies,
    )
