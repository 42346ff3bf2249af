"""(d) The OpenAI Agents SDK: the same 10-step agent in process, with a fake ``Model``.

Runs in ``.venv-bench``: ``python -m scripts.bench.peer_openai_agents --runs N``. The model
implements the SDK's ``Model`` interface the way the SDK's own tests do (``tests/fake_model.py``):
it returns ``ResponseFunctionToolCall`` items, then a ``ResponseOutputMessage``, with zero latency
(the turn is the number of tool calls already in the input). Tracing is disabled: with it on, the
SDK would try to export spans to OpenAI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from agents import (
    Agent,
    Model,
    ModelResponse,
    ModelSettings,
    ModelTracing,
    Runner,
    Usage,
    function_tool,
    set_tracing_disabled,
)
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from scripts.bench.common import (
    FINAL_ANSWER,
    INSTRUCTIONS,
    STEPS,
    USER_MESSAGE,
    calculate,
    emit,
    script,
    summarize,
)


@function_tool
def calculator(expression: str) -> float | int:
    """Evaluate an arithmetic expression.

    Args:
        expression: e.g. "(2 + 3) * 4"
    """
    return calculate(expression)


def _kind(item: Any) -> str | None:
    return item.get("type") if isinstance(item, dict) else getattr(item, "type", None)


class ScriptedModel(Model):
    """Replays the benchmark script through the SDK's ``Model`` interface."""

    def __init__(self, steps: int) -> None:
        self.turns = script(steps)

    def _output(self, input: str | list[Any]) -> list[Any]:
        turn = 0 if isinstance(input, str) else sum(_kind(i) == "function_call" for i in input)
        expr = self.turns[min(turn, len(self.turns) - 1)]
        if expr is None:
            text = ResponseOutputText(type="output_text", text=FINAL_ANSWER, annotations=[])
            return [
                ResponseOutputMessage(
                    id=f"msg_{turn}",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[text],
                )
            ]
        return [
            ResponseFunctionToolCall(
                id=f"fc_{turn}",
                call_id=f"call_{turn}",
                type="function_call",
                name="calculator",
                arguments=json.dumps({"expression": expr}),
            )
        ]

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[Any],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> ModelResponse:
        return ModelResponse(output=self._output(input), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        # The SDK's Model interface requires it; Runner.run (what the benchmark times) never
        # streams, so reaching this is a mistake in the benchmark, not a missing feature.
        raise RuntimeError("ScriptedModel serves Runner.run; Runner.run_streamed is not timed")


async def measure(runs: int, warmup: int, steps: int) -> dict[str, Any]:
    set_tracing_disabled(True)
    agent = Agent(
        name="bench",
        instructions=INSTRUCTIONS,
        model=ScriptedModel(steps),
        tools=[calculator],
    )
    per_step: list[float] = []
    for i in range(warmup + runs):
        started = time.perf_counter()
        result = await Runner.run(agent, USER_MESSAGE, max_turns=steps + 5)
        elapsed = time.perf_counter() - started
        calls = sum(_kind(item.raw_item) == "function_call" for item in result.new_items)
        if result.final_output != FINAL_ANSWER or calls != steps - 1:
            raise RuntimeError(f"unexpected result: {result.final_output!r}, {calls} tool calls")
        if i >= warmup:
            per_step.append(elapsed * 1000 / steps)
    return {"ms_per_step": summarize(per_step)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    result = asyncio.run(measure(args.runs, args.warmup, args.steps))
    from importlib.metadata import version

    result["versions"] = {
        "openai-agents": version("openai-agents"),
        "python": sys.version.split()[0],
    }
    emit(result)


if __name__ == "__main__":
    main()
