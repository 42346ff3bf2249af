"""A small synchronous client of the cloudagents HTTP api (used by the CLI and the demo)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

TERMINAL_EVENTS = frozenset({"completed", "failed"})


class ApiError(Exception):
    """The api answered with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("error") if isinstance(body, dict) else str(body)
        if isinstance(body, dict) and "reason" in body:  # refused function code
            message = f"{message}: line {body.get('line')}: {body['reason']}"
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Server-Sent Events from lines: ``("event", data)`` per dispatched event (its ``data``
    lines joined), ``("comment", text)`` per comment line."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "event", "\n".join(data)
            data = []
            continue
        if line.startswith(":"):
            yield "comment", line[1:].strip()
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)


class CloudAgentsClient:
    """Runs, agents, events and dead letters over HTTP."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        body = _body(response)
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

    def delete_agent(self, agent_id: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/agents/{agent_id}"))

    def agent_versions(self, agent_id: str) -> dict[str, Any]:
        """``{agent_id, created_at, updated_at, deleted, versions: [...]}``, oldest first."""
        return dict(self._call("GET", f"/agents/{agent_id}/versions"))

    def start_run(
        self,
        agent_id: str,
        message: str,
        variables: dict[str, Any] | None = None,
        run_id: str | None = None,
        conversation_id: str | None = None,
    ) -> str:
        body: dict[str, Any] = {"agent_id": agent_id, "message": message}
        if variables:
            body["variables"] = variables
        if run_id:
            body["run_id"] = run_id
        if conversation_id:
            body["conversation_id"] = conversation_id
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

    # graph workflows (seed 001) ------------------------------------------------------------

    def register_workflow(self, graph: dict[str, Any]) -> dict[str, Any]:
        """Store a compiled graph's JSON; the answer carries its ``hash``."""
        return dict(self._call("POST", "/workflows", json=graph))

    def list_workflows(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/workflows")["workflows"])

    def start_workflow_run(
        self,
        graph_hash: str,
        initial_state: dict[str, Any] | None = None,
        *,
        workflow_id: str | None = None,
        max_steps: int | None = None,
        priority: str | None = None,
    ) -> dict[str, Any]:
        """Start a run of a graph, named by its hash or its name (the latest registered)."""
        body: dict[str, Any] = {"initial_state": initial_state or {}}
        if workflow_id:
            body["workflow_id"] = workflow_id
        if max_steps is not None:
            body["max_steps"] = max_steps
        if priority:
            body["priority"] = priority
        return dict(self._call("POST", f"/workflows/{graph_hash}/runs", json=body))

    def fork_workflow_run(
        self,
        workflow_id: str,
        step: int,
        updates: dict[str, Any] | None = None,
        *,
        new_workflow_id: str | None = None,
        max_steps: int | None = None,
        priority: str | None = None,
    ) -> dict[str, Any]:
        """A new run from the checkpoint that opened ``step`` of ``workflow_id``."""
        body: dict[str, Any] = {"step": step, "updates": updates or {}}
        if new_workflow_id:
            body["workflow_id"] = new_workflow_id
        if max_steps is not None:
            body["max_steps"] = max_steps
        if priority:
            body["priority"] = priority
        return dict(self._call("POST", f"/workflow-runs/{workflow_id}/fork", json=body))

    def resume_workflow_run(self, workflow_id: str, max_steps: int | None = None) -> dict[str, Any]:
        body = {} if max_steps is None else {"max_steps": max_steps}
        return dict(self._call("POST", f"/workflow-runs/{workflow_id}/resume", json=body))

    def workflow_events(self, workflow_id: str, after: str | None = None) -> list[dict[str, Any]]:
        params = {"after": after} if after else {}
        path = f"/workflow-runs/{workflow_id}/events"
        return list(self._call("GET", path, params=params)["events"])

    def workflow_run(self, workflow_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/workflow-runs/{workflow_id}"))

    def list_workflow_runs(
        self, status: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return list(self._call("GET", "/workflow-runs", params=params)["workflow_runs"])

    def cancel_workflow_run(self, workflow_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/workflow-runs/{workflow_id}/cancel"))

    def workflow_checkpoints(self, workflow_id: str) -> list[dict[str, Any]]:
        path = f"/workflow-runs/{workflow_id}/checkpoints"
        return list(self._call("GET", path)["checkpoints"])

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
        timeout: float = 600.0,
        idle: Callable[[float], None] | None = None,
        on_reconnect: Callable[[str | None, Exception | None], None] | None = None,
        waiting: Callable[[], None] | None = None,
        keepalive_seconds: float | None = None,
        max_failures: int = 5,
    ) -> Iterator[dict[str, Any]]:
        """Yield the run's events as they are stored, until ``completed`` or ``failed``.

        Reads Server-Sent Events (``GET /runs/{id}/events/stream``); when the connection drops it
        reconnects with ``Last-Event-ID`` set to the last event seen, so nothing is lost or
        repeated; after ``max_failures`` connections in a row that deliver nothing it raises
        ``ConnectionError``. ``idle(seconds since the last event)`` is called at each keep-alive,
        ``on_reconnect(last_id, error)`` before each reconnection. A run started by a Pub/Sub
        intent exists only once the executor has it: until then (up to ``timeout``) a 404 means
        "not yet" (``waiting()`` is called once). An api without the stream is polled instead.
        """
        deadline = time.monotonic() + timeout
        self.wait_exists(run_id, deadline, waiting=waiting)
        failures = 0
        last_event = time.monotonic()
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s")
            error: Exception | None = None
            try:
                for kind, value in self._sse(run_id, after, keepalive_seconds):
                    failures = 0  # the connection works
                    if kind == "event":
                        event = json.loads(value)
                        after = event["id"]
                        last_event = time.monotonic()
                        yield event
                        if event["type"] in TERMINAL_EVENTS:
                            return
                    elif kind == "poll":
                        yield from self.poll_events(
                            run_id, after=after, timeout=deadline - time.monotonic()
                        )
                        return
                    elif idle is not None:
                        idle(time.monotonic() - last_event)
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s")
            except httpx.TransportError as exc:  # refused, reset, read timeout, cut short
                error = exc
            failures += 1
            if failures > max_failures:
                raise ConnectionError(
                    f"the event stream of run {run_id} failed {failures} times in a row"
                    + (f": {error}" if error else "")
                )
            if on_reconnect is not None:
                on_reconnect(after, error)
            time.sleep(min(0.25 * 2 ** (failures - 1), 4.0))

    def _sse(
        self, run_id: str, after: str | None, keepalive_seconds: float | None
    ) -> Iterator[tuple[str, str]]:
        """``("event", data)`` per event and ``("comment", text)`` per keep-alive of one SSE
        connection; ``("poll", "")`` if the api answers without an event stream."""
        headers = {"Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = after
        params = {"keepalive": keepalive_seconds} if keepalive_seconds else None
        read = max(3 * (keepalive_seconds or 15.0), 30.0)
        timeout = httpx.Timeout(self.http.timeout.connect or 10.0, read=read)
        with self.http.stream(
            "GET", f"/runs/{run_id}/events", headers=headers, params=params, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, _body(response))
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                yield "poll", ""
                return
            yield from parse_sse(response.iter_lines())

    def poll_events(
        self,
        run_id: str,
        *,
        after: str | None = None,
        poll_seconds: float = 0.2,
        timeout: float = 600.0,
    ) -> Iterator[dict[str, Any]]:
        """Yield the run's events by polling ``GET /runs/{id}/events?after=`` until it ends."""
        deadline = time.monotonic() + timeout
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
                time.sleep(poll_seconds)
        raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s")

    def wait_exists(
        self, run_id: str, deadline: float, waiting: Callable[[], None] | None = None
    ) -> None:
        while True:
            try:
                self.get_run(run_id)
                return
            except ApiError as error:
                if error.status != 404 or time.monotonic() > deadline:
                    raise
            if waiting is not None:
                waiting()
                waiting = None
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

    def dead_letter(self, letter_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/dead-letters/{letter_id}"))

    def replay_dead_letter(self, letter_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/dead-letters/{letter_id}/replay"))

    def dead_letters(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/dead-letters")["dead_letters"])

    def approvals(
        self, *, status: str | None = None, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """A run's approvals, or the inbox across runs (``status="pending"``)."""
        if run_id is not None:
            found = self._call("GET", f"/runs/{run_id}/approvals")["approvals"]
            return [a for a in found if status is None or a["status"] == status]
        params = {"status": status} if status else {}
        return list(self._call("GET", "/approvals", params=params)["approvals"])

    def approval(self, run_id: str, approval_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/runs/{run_id}/approvals/{approval_id}"))

    def decide(
        self,
        run_id: str,
        approval_id: str,
        decision: str,
        *,
        reason: str = "",
        arguments: dict[str, Any] | None = None,
        remember: str | None = None,
    ) -> dict[str, Any]:
        """Approve or reject a gated call; a decided one raises ``ApiError`` 409."""
        body: dict[str, Any] = {"decision": decision, "reason": reason}
        if arguments is not None:
            body["arguments"] = arguments
        if remember is not None:
            body["remember"] = remember
        return dict(self._call("POST", f"/runs/{run_id}/approvals/{approval_id}", json=body))

    def tree(self, run_id: str) -> dict[str, Any]:
        """The run and the runs below it (agent-to-agent calls and handoffs)."""
        return dict(self._call("GET", f"/runs/{run_id}/tree"))

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        """A conversation's runs, its holder and its messages."""
        return dict(self._call("GET", f"/conversations/{conversation_id}"))

    # Stored functions (seed 002) ------------------------------------------------------------

    def store_function(self, function: dict[str, Any]) -> dict[str, Any]:
        """``POST /functions``; refused code raises ``ApiError`` whose body has line, reason."""
        return dict(self._call("POST", "/functions", json=function))

    def list_functions(self) -> dict[str, Any]:
        """``{"functions": [...], "sandbox": status or None}``."""
        return dict(self._call("GET", "/functions"))

    def get_function(self, name: str, version: str | None = None) -> dict[str, Any]:
        params = {"version": version} if version else None
        return dict(self._call("GET", f"/functions/{name}", params=params))

    def function_versions(self, name: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/functions/{name}/versions")["versions"])

    def execute_function(
        self, name: str, args: dict[str, Any], version: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"args": args}
        if version:
            body["version"] = version
        return dict(self._call("POST", f"/functions/{name}/execute", json=body))

    def function_executions(
        self, *, function: str | None = None, agent: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if function:
            params["function"] = function
        if agent:
            params["agent"] = agent
        return list(self._call("GET", "/function-executions", params=params)["executions"])
