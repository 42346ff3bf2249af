"""Seed 000's examples with ``cloudagents.gcp.DistributedAgent``: basic usage, a tool, a guardrail
block, error handling and a handoff.

Run it against the local emulators with their ``*_EMULATOR_HOST`` variables exported (see
``examples/quickstart.py``): every run is recorded in Firestore (``agent_runs``,
``interactions``, ``handoff_offers``), its context snapshots go to
``gs://{project}-agent-context``, tool audit records to ``{workspace}-tools-audit`` and handoff
offers to ``{workspace}-handoff``. The LLM clients here are scripted functions: no model, no key.
"""

from __future__ import annotations

import ast
import asyncio
import operator
import os
from typing import Any

from cloudagents.gcp import Budget, DistributedAgent, LoopExit, LoopResult, Tool

PROJECT_ID = os.environ.get("GOOGLE_CLOUD_PROJECT", "my-gcp-project")
WORKSPACE = os.environ.get("CLOUDAGENTS_WORKSPACE", "my-workspace")

_OPERATORS: dict[type[ast.AST], Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def my_calc_function(expression: str) -> int | float:
    """Evaluate an arithmetic expression such as "(17 + 25) * 3".

    Args:
        expression: numbers, parentheses and + - * / **
    """

    def evaluate(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return float(_OPERATORS[type(node.op)](evaluate(node.left), evaluate(node.right)))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return float(_OPERATORS[type(node.op)](evaluate(node.operand)))
        raise ValueError(f"unsupported expression: {ast.dump(node)}")

    value = evaluate(ast.parse(expression, mode="eval").body)
    return int(value) if float(value).is_integer() else value


def make_agent(agent_id: str, **options: Any) -> DistributedAgent:
    return DistributedAgent(
        agent_id=agent_id,
        instructions="You are a helpful assistant. Use the calculator for arithmetic.",
        model="gpt-4",
        project_id=PROJECT_ID,
        workspace_topic=WORKSPACE,
        budget=Budget(max_tokens_per_run=10000, max_tools_per_minute=60),
        tools={"calculator": Tool("calculator", my_calc_function, "low")},
        **options,
    )


def report(title: str, result: LoopResult) -> None:
    print(f"[{title}] Result: {result.exit.value}")
    print(f"[{title}] Payload: {result.payload}")
    if result.exit == LoopExit.SATISFIED:
        print(f"[{title}] Success! {result.iterations} iterations, {result.total_tokens} tokens")
    elif result.exit == LoopExit.ERROR:
        print(f"[{title}] Error: {result.errors}")


# --- LLM clients: each follows the seed's contract ------------------------------------------------


async def answering_llm(request: dict[str, Any]) -> dict[str, Any]:
    """Answers at once."""
    question = request["messages"][-1]["content"]
    return {
        "done": True,
        "content": {"answer": f"You asked: {question}"},
        "usage": {"total_tokens": 40},
    }


async def calculating_llm(request: dict[str, Any]) -> dict[str, Any]:
    """Calls the calculator first, then answers with its result."""
    results = [m["content"] for m in request["messages"] if m["role"] == "tool"]
    if not results:
        call = {"id": "call-1", "name": "calculator", "arguments": {"expression": "(17 + 25) * 3"}}
        return {"tool_calls": [call], "usage": {"total_tokens": 30}}
    return {
        "done": True,
        "content": f"(17 + 25) * 3 = {results[-1]}",
        "usage": {"total_tokens": 20},
    }


async def failing_llm(request: dict[str, Any]) -> dict[str, Any]:
    """A provider that is down."""
    raise ConnectionError("LLM provider unavailable")


async def handing_off_llm(request: dict[str, Any]) -> dict[str, Any]:
    """Asks for an agent that can read images."""
    return {
        "handoff_target": {
            "required_capabilities": ["image_processing", "ocr"],
            "ttl_seconds": 300,
        },
        "usage": {"total_tokens": 25},
    }


async def main() -> None:
    # Basic usage
    agent = make_agent("example-agent")
    result = await agent.run(message="What is 2+2?", context={"llm_client": answering_llm})
    report("basic", result)

    # Tool execution: the calculator runs within the budget; an audit record goes to -tools-audit
    result = await agent.run(
        message="What is (17 + 25) * 3?", context={"llm_client": calculating_llm}
    )
    report("tool", result)

    # Guardrails: the input matches a blocked pattern, so no model call is made
    guardrails = {
        "enabled": True,
        "risk_threshold": "medium",
        "blocked_patterns": ["violence", "illegal"],
    }
    result = await agent.run(
        "Describe the violence in detail", {"llm_client": answering_llm}, guardrails=guardrails
    )
    report("guardrail", result)

    # Error handling: a failing LLM client ends the run ERROR with the reason in result.errors
    # (one attempt here; by default failures a retry could fix are retried with backoff)
    fragile = make_agent("example-fragile", retry={"max_attempts": 1})
    result = await fragile.run(message="Hello?", context={"llm_client": failing_llm})
    report("error", result)
    if result.errors:
        print(f"[error] Diagnostics: {result.errors[0]}")

    # Handoffs: the model delegates; the offer goes to Firestore and {workspace}-handoff
    result = await agent.run(
        message="Read this scanned invoice", context={"llm_client": handing_off_llm}
    )
    report("handoff", result)
    offer, needs = result.payload["offer_id"], result.payload["required_capabilities"]
    print(f"[handoff] Offer {offer} needs {needs}")

    await agent.aclose()
    await fragile.aclose()


if __name__ == "__main__":
    asyncio.run(main())
