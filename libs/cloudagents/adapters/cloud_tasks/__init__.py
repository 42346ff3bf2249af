"""Cloud Tasks adapter: HTTP tasks, with an OIDC token in production."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc

from cloudagents.metrics import count


class CloudTasksQueue:
    """Creates HTTP tasks. Named tasks are de-duplicated by Cloud Tasks (not by the emulator)."""

    def __init__(
        self, client: Any, project: str, location: str, service_account: str | None = None
    ) -> None:
        self.client = client
        self.project = project
        self.location = location
        self.service_account = service_account

    async def schedule(
        self, queue: str, url: str, body: bytes, at: datetime, *, name: str | None = None
    ) -> str:
        from google.cloud import tasks_v2
        from google.protobuf import timestamp_pb2

        parent = self.client.queue_path(self.project, self.location, queue)
        http_request: dict[str, Any] = {
            "http_method": tasks_v2.HttpMethod.POST,
            "url": url,
            "headers": {"Content-Type": "application/json"},
            "body": body,
        }
        if self.service_account:
            http_request["oidc_token"] = {"service_account_email": self.service_account}
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(at)
        task: dict[str, Any] = {"http_request": http_request, "schedule_time": stamp}
        if name:
            task["name"] = f"{parent}/tasks/{name}"
        try:
            created = await asyncio.to_thread(self.client.create_task, parent=parent, task=task)
        except gexc.AlreadyExists:
            return task["name"] if name else ""
        count("tasks.create")
        task_name: str = created.name
        return task_name
