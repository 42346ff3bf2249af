"""(b) cloudagents' in-process runner: the same 10-step agent, no cloud, in one event loop.

``python -m scripts.bench.inprocess --runs N`` prints one BENCH-RESULT line.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from scripts.bench.common import STEPS, USER_MESSAGE, cloudagents_agent, emit, summarize

from cloudagents import Agent, AgentDefinition
from cloudagents.builtin_tools import calculator
from cloudagents.domain.results import LoopExit


async def measure(runs: int, warmup: int, steps: int) -> dict[str, object]:
    definition = AgentDefinition.model_validate(cloudagents_agent("bench-inprocess", steps))
    agent = Agent(definition, tools=[calculator])
    per_step: list[float] = []
    for i in range(warmup + runs):
        started = time.perf_counter()
        result = await agent.run(USER_MESSAGE)
        elapsed = time.perf_counter() - started
        if result.exit is not LoopExit.SATISFIED or result.iterations != steps:
            raise RuntimeError(f"unexpected result: {result}")
        if i >= warmup:
            per_step.append(elapsed * 1000 / steps)
    return {"name": "cloudagents in-process runner", "ms_per_step": summarize(per_step)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    emit(asyncio.run(measure(args.runs, args.warmup, args.steps)))


if __name__ == "__main__":
    main()
