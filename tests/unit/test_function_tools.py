"""Stored functions on the tool path (``runtime/toolbox.py``), through ``Agent.run``: the one
engine the services run too. The functions run in the real sandbox (these tests skip where it
cannot: not root, or no bubblewrap)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from cloudagents import Agent, AgentDefinition, LoopExit, Tool
from cloudagents.domain.approvals import ApprovalPolicy, ApprovalRecord
from cloudagents.domain.events import ToolResultEvent
from cloudagents.functions import FunctionStore, InMemoryFunctionRepository
from cloudagents.sandbox import BwrapLauncher, Sandbox, UidPool

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="stored functions run in the bubblewrap sandbox: needs root and bubblewrap",
)

HYPOT = '''
import math

def hypot(a: float, b: float) -> float:
    """The hypotenuse of a right triangle.

    Args:
        a: one leg
        b: the other leg
    """
    return math.hypot(a, b)
'''
LLM = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def callable_agent(agent_id: str, tools: list[str]) -> AgentDefinition:
    return AgentDefinition(
        id=agent_id,
        instructions="You use your tools.",
        model={"provider": "callable", "name": "test-model"},  # type: ignore[arg-type]
        tools=tools,
    )


def calls_then_answers(
    name: str, arguments: dict[str, Any], seen: list[dict[str, Any]], before: Any = None
) -> LLM:
    """A model that calls ``name`` once, then answers with the tool result it was given."""

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        if len(seen) == 1:
            if before is not None:
                await before()
            call = {"name": name, "arguments": arguments}
            return {"tool_calls": [call], "usage": {"total_tokens": 10}}
        return {"done": True, "content": request["messages"][-1]["content"]}

    return llm_client


async def tool_results(agent: Agent, run_id: str) -> list[tuple[str, Any, bool]]:
    events = await agent.driver.deps.runs.events(run_id)
    return [(e.tool_name, e.result, e.is_error) for e in events if isinstance(e, ToolResultEvent)]


async def test_a_stored_function_is_offered_and_runs_in_the_sandbox_with_history() -> None:
    store = FunctionStore(InMemoryFunctionRepository())
    version = await store.store_function("hypot", HYPOT, config={"allowed_imports": ["math"]})
    seen: list[dict[str, Any]] = []
    agent = Agent(callable_agent("geometry", ["hypot"]), functions=store)
    llm = calls_then_answers("hypot", {"a": 3, "b": 4}, seen)
    result = await agent.run("legs 3 and 4?", context={"llm_client": llm}, run_id="g1")
    assert result.exit is LoopExit.SATISFIED and result.tool_calls == 1
    assert await tool_results(agent, "g1") == [("hypot", 5.0, False)]
    offered = seen[0]["tools"][0]["function"]
    assert offered["name"] == "hypot"
    assert offered["description"] == "The hypotenuse of a right triangle."
    assert offered["parameters"]["properties"]["a"] == {"type": "number", "description": "one leg"}
    run = await agent.driver.deps.runs.get_run("g1")
    assert run is not None and run.functions == {"hypot": version.hash}
    by_function = await store.history(function="hypot")
    assert by_function == await store.history(agent="geometry")
    assert [(r.version_hash, r.run_id, r.tool_call_id, r.exit_kind) for r in by_function] == [
        (version.hash, "g1", "000000-000", "ok")
    ]
    assert by_function[0].duration_ms > 0 and by_function[0].output_bytes > 0


async def test_a_run_executes_the_version_pinned_at_its_start() -> None:
    """The name moves to v2 while the run is under way (the model's first turn stores v2): the
    run still executes v1, and the next run gets v2. ``name@hash`` pins a version for good."""
    store = FunctionStore(InMemoryFunctionRepository())
    v1 = await store.store_function("which", "def which() -> str:\n    return 'v1'\n")

    async def deploy_v2() -> None:
        await store.store_function("which", "def which() -> str:\n    return 'v2'\n")

    agent = Agent(callable_agent("pinned", ["which"]), functions=store)
    first = calls_then_answers("which", {}, [], before=deploy_v2)
    await agent.run("which?", context={"llm_client": first}, run_id="p1")
    assert await tool_results(agent, "p1") == [("which", "v1", False)]
    await agent.run(
        "which?", context={"llm_client": calls_then_answers("which", {}, [])}, run_id="p2"
    )
    assert await tool_results(agent, "p2") == [("which", "v2", False)]
    old = Agent(callable_agent("old", [f"which@{v1.hash[:12]}"]), functions=store)
    await old.run(
        "which?", context={"llm_client": calls_then_answers("which", {}, [])}, run_id="p3"
    )
    assert await tool_results(old, "p3") == [("which", "v1", False)]
    v2 = await store.get_function("which")
    assert [(r.run_id, r.version_hash) for r in await store.history(function="which")] == [
        ("p3", v1.hash),
        ("p2", v2.hash),
        ("p1", v1.hash),
    ]


@pytest.mark.parametrize(
    ("code", "config", "kind"),
    [
        ("def f() -> int:\n    while True:\n        pass\n", {"timeout": 1}, "timeout"),
        (
            "def f() -> int:\n    x = bytearray(400 * 2**20)\n    return len(x)\n",
            {"memory_limit": 64},
            "memory",
        ),
        ("def f() -> str:\n    return 'x' * 300_000\n", {}, "output_too_large"),
        # Past the static check (safe_mode off allows exec): the runner's hook refuses it.
        (
            "def f() -> int:\n    exec('import ' + 'soc' + 'ket')\n    return 1\n",
            {"safe_mode": False},
            "import_not_allowed",
        ),
    ],
)
async def test_what_the_function_does_wrong_is_a_typed_result_the_model_reads(
    code: str, config: dict[str, Any], kind: str
) -> None:
    store = FunctionStore(InMemoryFunctionRepository())
    await store.store_function("f", code, config=config)
    seen: list[dict[str, Any]] = []
    agent = Agent(callable_agent("wrong", ["f"]), functions=store)
    result = await agent.run(
        "go", context={"llm_client": calls_then_answers("f", {}, seen)}, run_id="w"
    )
    assert result.exit is LoopExit.SATISFIED  # the run goes on: the model read the error
    [(name, content, is_error)] = await tool_results(agent, "w")
    assert (name, is_error) == ("f", True)
    assert content.startswith(f"{kind}: "), content
    assert seen[1]["messages"][-1]["content"] == content
    [record] = await store.history(function="f")
    assert record.exit_kind == kind


async def test_a_sandbox_whose_canary_fails_runs_no_user_code() -> None:
    """A launcher that passes the host environment through (the weakening the escape suite
    uses): the canary sees it and every call is ``sandbox_unavailable``, with no fallback."""
    launcher = BwrapLauncher.discover()
    assert launcher is not None
    # Its own uid slot, as the escape suite's weakened sandbox: never the shared sandbox's uids.
    leaky = Sandbox(launcher=replace(launcher, clear_env=False), pool=UidPool(61110, size=1))
    store = FunctionStore(InMemoryFunctionRepository(), leaky)
    await store.store_function("hypot", HYPOT, config={"allowed_imports": ["math"]})
    agent = Agent(callable_agent("closed", ["hypot"]), functions=store)
    llm = calls_then_answers("hypot", {"a": 3, "b": 4}, [])
    await agent.run("go", context={"llm_client": llm}, run_id="c1")
    [(_, content, is_error)] = await tool_results(agent, "c1")
    assert is_error and content.startswith("sandbox_unavailable: "), content
    status = leaky.status
    assert status is not None and not status.available and "environment" in status.reason
    [record] = await store.history(function="hypot")
    assert (record.exit_kind, record.output_bytes) == ("sandbox_unavailable", 0)


async def test_an_approval_policy_gates_a_stored_function_like_a_tool() -> None:
    """A rule for the function's name gates it; rejected, it never runs (no execution), and
    the model reads why; approved, it runs once in the sandbox."""
    store = FunctionStore(InMemoryFunctionRepository())
    await store.store_function("hypot", HYPOT, config={"allowed_imports": ["math"]})
    definition = callable_agent("gated", ["hypot"]).model_copy(
        update={"approval": ApprovalPolicy.model_validate({"tools": {"hypot": "always"}})}
    )
    agent = Agent(definition, functions=store)
    seen: list[str] = []

    def reject(approval: ApprovalRecord) -> dict[str, str]:
        seen.append(approval.tool)
        return {"decision": "reject", "reason": "not today", "principal": "bob"}

    llm = calls_then_answers("hypot", {"a": 3, "b": 4}, [])
    await agent.run("go", context={"llm_client": llm}, run_id="a1", approval=reject)
    [(_, content, is_error)] = await tool_results(agent, "a1")
    assert seen == ["hypot"] and is_error and "rejected by bob: not today" in content
    assert await store.history(function="hypot") == []
    llm = calls_then_answers("hypot", {"a": 3, "b": 4}, [])
    await agent.run("go", context={"llm_client": llm}, run_id="a2", approval=lambda a: True)
    assert await tool_results(agent, "a2") == [("hypot", 5.0, False)]
    assert [r.run_id for r in await store.history(function="hypot")] == ["a2"]


async def test_which_names_are_stored_functions() -> None:
    """A registered tool's name is that tool, a name nothing has is not offered, and
    ``name@hash`` is the stored function even where a tool has the name."""
    store = FunctionStore(InMemoryFunctionRepository())
    version = await store.store_function("hypot", HYPOT, config={"allowed_imports": ["math"]})

    def hypot(a: float, b: float) -> str:
        """A registered tool of the same name."""
        return "registered"

    seen: list[dict[str, Any]] = []
    plain = Agent(
        callable_agent("names", ["hypot", "ghost"]), tools=[Tool("hypot", hypot)], functions=store
    )
    llm = calls_then_answers("hypot", {"a": 3, "b": 4}, seen)
    await plain.run("go", context={"llm_client": llm}, run_id="n1")
    assert await tool_results(plain, "n1") == [("hypot", "registered", False)]
    assert [t["function"]["name"] for t in seen[0]["tools"]] == ["hypot"]
    run = await plain.driver.deps.runs.get_run("n1")
    assert run is not None and run.functions == {}
    pinned = Agent(
        callable_agent("names", [version.ref]), tools=[Tool("hypot", hypot)], functions=store
    )
    llm = calls_then_answers("hypot", {"a": 3, "b": 4}, [])
    await pinned.run("go", context={"llm_client": llm}, run_id="n2")
    assert await tool_results(pinned, "n2") == [("hypot", 5.0, False)]


async def test_a_function_that_requires_context_gets_its_run() -> None:
    store = FunctionStore(InMemoryFunctionRepository())
    code = "def whoami(context: dict) -> str:\n    return context['agent_id'] + '/' + context['run_id']\n"
    await store.store_function("whoami", code, config={"requires_context": True})
    seen: list[dict[str, Any]] = []
    agent = Agent(callable_agent("ctx-agent", ["whoami"]), functions=store)
    await agent.run(
        "who?", context={"llm_client": calls_then_answers("whoami", {}, seen)}, run_id="x1"
    )
    assert await tool_results(agent, "x1") == [("whoami", "ctx-agent/x1", False)]
    assert seen[0]["tools"][0]["function"]["parameters"]["properties"] == {}
