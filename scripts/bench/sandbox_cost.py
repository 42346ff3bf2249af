"""What one sandboxed function call costs next to an in-process tool call.

    .venv/bin/python scripts/bench/sandbox_cost.py [--calls 100]

Runs the same function (``hypot``) 100 times through ``Sandbox.run`` (a fresh bubblewrap
sandbox each, sequentially) and 100 times through ``Tool.invoke`` in this process, and prints
the median and p95 in milliseconds. Then the same on the whole tool path: ``Agent.run`` of a
run that makes one call, to ``hypot`` stored in a ``FunctionStore`` (pinned at the start, run in
the sandbox, recorded in the history) and to ``hypot`` as a registered ``Tool``. Needs root and
bubblewrap; speed is printed, never asserted. ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from typing import Any

from cloudagents import Agent, AgentDefinition, Tool
from cloudagents.functions import FunctionStore, InMemoryFunctionRepository
from cloudagents.sandbox import Sandbox

CODE = '''
import math


def hypot(a: float, b: float) -> float:
    """The hypotenuse."""
    return math.sqrt(a * a + b * b)
'''


def hypot(a: float, b: float) -> float:
    """The hypotenuse."""
    return math.sqrt(a * a + b * b)


def summary(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return f"{label:<22} median {statistics.median(ordered):8.2f} ms   p95 {p95:8.2f} ms"


async def main(calls: int) -> int:
    sandbox = Sandbox()
    status = await sandbox.check()
    if not status.available:
        print(f"sandbox unavailable: {status.reason}", file=sys.stderr)
        return 1
    sandboxed: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await sandbox.run(CODE, "hypot", {"a": 3, "b": 4}, allowed_imports=["math"])
        sandboxed.append((time.perf_counter() - started) * 1000)
        assert result.ok and result.value == 5.0, result
    tool = Tool("hypot", hypot)
    in_process: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        outcome = await tool.invoke({"a": 3, "b": 4})
        in_process.append((time.perf_counter() - started) * 1000)
        assert outcome.content == 5.0, outcome
    print(f"{calls} calls each")
    print(summary("sandboxed call", sandboxed))
    print(summary("in-process tool call", in_process))
    runs = min(calls, 50)
    stored = await run_times(runs, functions=True)
    registered = await run_times(runs, functions=False)
    print(f"{runs} runs each (Agent.run, one tool call, two model turns)")
    print(summary("run, stored function", stored))
    print(summary("run, registered tool", registered))
    return 0


async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
    if not any(m["role"] == "tool" for m in request["messages"]):
        return {"tool_calls": [{"name": "hypot", "arguments": {"a": 3, "b": 4}}]}
    return {"done": True, "content": "5"}


async def run_times(runs: int, *, functions: bool) -> list[float]:
    definition = AgentDefinition(
        id="bench-hypot",
        model={"provider": "callable", "name": "bench"},  # type: ignore[arg-type]
        tools=["hypot"],
    )
    if functions:
        store = FunctionStore(InMemoryFunctionRepository())
        await store.store_function("hypot", CODE, config={"allowed_imports": ["math"]})
        agent = Agent(definition, functions=store)
    else:
        agent = Agent(definition, tools=[Tool("hypot", hypot)])
    samples: list[float] = []
    for n in range(runs):
        started = time.perf_counter()
        result = await agent.run("3, 4?", {"llm_client": llm_client}, run_id=f"bench-{n}")
        samples.append((time.perf_counter() - started) * 1000)
        assert result.exit.value == "SATISFIED" and result.tool_calls == 1, result
    return samples


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    sys.exit(asyncio.run(main(parser.parse_args().calls)))
