"""A small synchronous client of the cloudagents HTTP api (used by the CLI and the demo)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

TERMINAL_EVENTS = frozenset({"completed", "failed"})


class ApiError(Exception):
    """The api answered with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("error") if isinstance(body, dict) else str(body)
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body


class CloudAgentsClient:
    """Runs, agents, events and dead letters over HTTP."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        body = response.json() if response.content else None
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/healthz"))

    def put_agent(self, definition: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/agents", json=definition))

    def list_agents(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/agents")["agents"])

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/agents/{agent_id}"))

    def start_run(
        self,
        agent_id: str,
        message: str,
        variables: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        body: dict[str, Any] = {"agent_id": agent_id, "message": message}
        if variables:
            body["variables"] = variables
        if run_id:
            body["run_id"] = run_id
        return str(self._call("POST", "/runs", json=body)["run_id"])

    def get_run(self, run_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/runs/{run_id}"))

    def list_runs(
        self, agent: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if agent:
            params["agent"] = agent
        if status:
            params["status"] = status
        return list(self._call("GET", "/runs", params=params)["runs"])

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/runs/{run_id}/cancel"))

    def messages(self, run_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/runs/{run_id}/messages"))

    def events(self, run_id: str, after: str | None = None) -> list[dict[str, Any]]:
        params = {"after": after} if after else {}
        return list(self._call("GET", f"/runs/{run_id}/events", params=params)["events"])

    def follow(
        self,
        run_id: str,
        *,
        after: str | None = None,
        poll_seconds: float = 0.2,
        timeout: float = 600.0,
        idle: Callable[[], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield the run's events as they are stored, until ``completed`` or ``failed``.

        A run started by a Pub/Sub intent exists only once the executor has it: until then
        (up to ``timeout``) a 404 means "not yet"."""
        deadline = time.monotonic() + timeout
        self.wait_exists(run_id, deadline)
        while time.monotonic() < deadline:
            batch = self.events(run_id, after=after)
            for event in batch:
                after = event["id"]
                yield event
                if event["type"] in TERMINAL_EVENTS:
                    return
            if not batch:
                run = self.get_run(run_id)
                if run["status"] == "finished" and not self.events(run_id, after=after):
                    return
                if idle is not None:
                    idle()
                time.sleep(poll_seconds)
        raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s")

    def wait_exists(self, run_id: str, deadline: float) -> None:
        while True:
            try:
                self.get_run(run_id)
                return
            except ApiError as error:
                if error.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def wait(self, run_id: str, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        self.wait_exists(run_id, deadline)
        while time.monotonic() < deadline:
            run = self.get_run(run_id)
            if run["status"] == "finished":
                return run
            time.sleep(0.2)
        raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s")

    def handoff(self, offer_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/handoffs/{offer_id}"))

    def dead_letters(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/dead-letters")["dead_letters"])
