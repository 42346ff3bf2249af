"""The emulators and every service, started once for the session on free ports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudagents.local.stack import LocalStack, StackState

DEMO_AGENTS = Path(__file__).resolve().parents[2] / "examples" / "agents.yaml"


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    log_dir = tmp_path_factory.mktemp("stack-logs")
    stack = LocalStack(project="it-project", workspace="ittest", log_dir=log_dir)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def stack_state(local_stack: LocalStack) -> StackState:
    return local_stack.state()


@pytest.fixture(scope="session")
def api(stack_state: StackState) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {stack_state.api_token}"}
    with httpx.Client(base_url=stack_state.api_url, timeout=30.0, headers=headers) as client:
        yield client


def register(api: httpx.Client, definition: dict[str, Any]) -> None:
    response = api.post("/agents", json=definition)
    assert response.status_code == 201, response.text


def wait_for_run(api: httpx.Client, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll ``GET /runs/{id}`` until the run is finished."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/runs/{run_id}")
        if response.status_code == 200 and response.json()["status"] == "finished":
            run: dict[str, Any] = response.json()
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not finish in {timeout}s: {response.text}")
        time.sleep(0.1)


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
