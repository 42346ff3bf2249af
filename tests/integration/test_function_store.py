"""Seed 002's function store on the emulator stack: the README's example with only the import
changed, then stored functions through the services and the CLI (``cloudagents functions``).

The example's placeholders are filled in (its ``# Implementation``, the ``{...}`` schemas and
the ``"..."`` query); everything else is the seed's text. ``session`` is what seed 002 passes to
``FunctionStore``: here the Firestore repository on the emulators
(``cloudagents.bootstrap.function_repository``). The functions run in the real sandbox, so these
tests skip without root and bubblewrap.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from google.cloud import firestore

from cloudagents import cli
from cloudagents.bootstrap import close_firestore, function_repository
from cloudagents.functions import FunctionRepository, FunctionValidationError
from cloudagents.local.stack import StackState
from tests.integration.conftest import register, wait_for_run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("bwrap") is None,
        reason="stored functions run in the bubblewrap sandbox: needs root and bubblewrap",
    ),
]

HYPOT = '''import math

def hypot(a: float, b: float) -> float:
    """The hypotenuse of a right triangle.

    Args:
        a: one leg
        b: the other leg
    """
    return math.hypot(a, b)
'''


@pytest.fixture
async def session(stack_state: StackState) -> AsyncIterator[FunctionRepository]:
    repository = function_repository(stack_state.project)
    yield repository
    await close_firestore(getattr(repository, "client", None))


async def test_seed_002_function_store_example(
    session: FunctionRepository, stack_state: StackState
) -> None:
    # ---- seed 002, "Function Management", with the import changed ----
    from cloudagents.functions import FunctionStore

    # Initialize store
    store = FunctionStore(session)

    # Store function
    await store.store_function(
        name="search_docs",
        code="""async def search_docs(query: str) -> List[str]:
        # Implementation
        docs = {
            "install": "make install sets up the virtual environment",
            "sandbox": "stored functions run in a bubblewrap sandbox",
            "deploy": "deploy the services to Cloud Run gen2",
        }
        results = {"matches": [t for t, text in docs.items() if query in text]}
        return results
    """,
        description="Search documentation",
        input_schema={"type": "object", "properties": {"query": {"type": "string"}}},
        output_schema={
            "type": "object",
            "properties": {"matches": {"type": "array", "items": {"type": "string"}}},
        },
        is_async=True,
    )

    # Execute function
    result = await store.execute_function("search_docs", {"query": "sandbox"})
    # ---- end of the seed's example ----

    # The seed's output_schema (an object) wins over its ``-> List[str]``, which is never
    # evaluated: the filled-in implementation returns an object.
    assert result == {"matches": ["sandbox"]}
    db = firestore.Client(project=stack_state.project)
    alias = db.collection("functions").document("search_docs").get().to_dict() or {}
    version = await store.get_function("search_docs")
    assert alias["current"] == version.hash and version.config.is_async
    stored = (
        db.collection("functions")
        .document("search_docs")
        .collection("versions")
        .document(version.hash)
        .get()
    )
    assert stored.exists and stored.get("description") == "Search documentation"
    [record] = await store.history(function="search_docs")
    assert (record.version_hash, record.exit_kind) == (version.hash, "ok")
    with pytest.raises(FunctionValidationError) as refused:
        await store.store_function(
            name="bad", code="def bad() -> int:\n    import os\n    return 1\n"
        )
    assert refused.value.line == 2 and "'os' is not allowed" in refused.value.reason


class Cli:
    """``cloudagents`` commands against the stack's api, through ``cli.main``."""

    def __init__(self, state: StackState) -> None:
        self.base = ["--api", state.api_url, "--token", state.api_token or ""]

    def __call__(self, *args: str) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main([*self.base, *args])
        return code, stdout.getvalue(), stderr.getvalue()


def geometry_agent(agent_id: str) -> dict[str, Any]:
    return {
        "id": agent_id,
        "instructions": "You use hypot.",
        "model": {
            "provider": "scripted",
            "name": "scripted-geometry",
            "script": [
                {"tool_calls": [{"name": "hypot", "arguments": {"a": 3, "b": 4}}]},
                {"content": "5"},
            ],
        },
        "tools": ["hypot"],
    }


def test_stored_functions_through_the_cli_and_the_services(
    api: httpx.Client, stack_state: StackState, tmp_path: Path
) -> None:
    run_cli = Cli(stack_state)
    (tmp_path / "hypot.py").write_text(HYPOT)
    (tmp_path / "spin.py").write_text("def spin() -> int:\n    while True:\n        pass\n")
    (tmp_path / "functions.yaml").write_text(
        yaml.safe_dump(
            {
                "functions": [
                    {"name": "hypot", "file": "hypot.py", "config": {"allowed_imports": ["math"]}},
                    {"name": "spin", "file": "spin.py", "config": {"timeout": 1}},
                ]
            }
        )
    )
    code, out, err = run_cli("functions", "apply", "-f", str(tmp_path / "functions.yaml"))
    assert code == 0, err
    hypot_ref = out.splitlines()[0].removeprefix("stored ")
    assert hypot_ref.startswith("hypot@") and out.splitlines()[1].startswith("stored spin@")
    code, out, _ = run_cli("functions", "list")
    assert code == 0 and {"hypot", "spin"} <= {line.split()[0] for line in out.splitlines()}
    code, out, _ = run_cli("functions", "show", "hypot")
    assert code == 0 and "return math.hypot(a, b)" in out and "one leg" in out
    code, out, _ = run_cli("functions", "run", "hypot", "--args", '{"a": 6, "b": 8}')
    assert (code, out.strip()) == (0, "10.0")
    code, out, _ = run_cli("functions", "run", "spin")
    assert code == 1 and out.startswith("timeout: spin failed: the function ran longer than 1s")
    (tmp_path / "bad.py").write_text("def bad() -> int:\n    import socket\n    return 1\n")
    code, _, err = run_cli("functions", "apply", "-f", str(tmp_path / "bad.py"))
    assert code == 2 and "line 2: import of 'socket' is not allowed" in err

    register(api, geometry_agent("geometry-it"))
    started = api.post("/runs", json={"agent_id": "geometry-it", "message": "3 and 4?"})
    assert started.status_code == 202, started.text
    run = wait_for_run(api, started.json()["run_id"])
    assert run["result"]["exit"] == "SATISFIED" and run["result"]["tool_calls"] == 1
    assert run["functions"] == {"hypot": hypot_ref.partition("@")[2]}
    db = firestore.Client(project=stack_state.project)
    [call] = db.collection("agent_runs").document(run["run_id"]).collection("tool_calls").stream()
    assert (call.get("result"), call.get("is_error")) == (5.0, False)
    code, out, _ = run_cli("functions", "history", "--agent", "geometry-it")
    assert code == 0 and len(out.splitlines()) == 1
    assert f"run={run['run_id']} call=000000-000" in out and " ok " in out
    # The deploy smoke test's first check: both services that execute functions ran the canary
    # when they started and logged its verdict.
    for service in ("api", "tool_invoker"):
        log = Path(stack_state.services[service].log_path).read_text(errors="replace")
        assert "function sandbox available" in log, f"{service}: no canary verdict in its log"
