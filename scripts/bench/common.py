"""What every benchmark shares: the agent's script, statistics, progress lines.

Standard library only: the peers' scripts import it from ``.venv-bench`` too.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

STEPS = 10
"""Model calls per run in the step-overhead and cost benchmarks (9 tool calls, then an answer)."""

INSTRUCTIONS = "You do arithmetic. Use the calculator for every step, then answer."
USER_MESSAGE = "Add up 1*7 through 9*7, one calculator call at a time."
# The parent's start (time.monotonic() is one clock for every process), so a child's progress
# lines count from the same moment as run.py's.
_STARTED = float(os.environ.get("BENCH_STARTED", time.monotonic()))


def started() -> float:
    return _STARTED


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the table)."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def expression(step: int) -> str:
    return f"{step + 1} * 7"


def script(steps: int) -> list[str | None]:
    """One entry per model call: the calculator expression to call, or ``None`` for the answer."""
    return [expression(i) for i in range(steps - 1)] + [None]


FINAL_ANSWER = "The products of 1..9 by 7 add up to 315."


def cloudagents_agent(agent_id: str, steps: int = STEPS) -> dict[str, Any]:
    """The benchmark agent as a cloudagents definition (``scripted`` provider, zero latency)."""
    turns: list[dict[str, Any]] = []
    for i, expr in enumerate(script(steps)):
        if expr is None:
            turns.append({"content": FINAL_ANSWER, "total_tokens": 30})
        else:
            call = {"id": f"call_{i}", "name": "calculator", "arguments": {"expression": expr}}
            turns.append({"tool_calls": [call], "total_tokens": 40})
    return {
        "id": agent_id,
        "instructions": INSTRUCTIONS,
        "model": {"provider": "scripted", "name": "scripted-bench", "script": turns},
        "tools": ["calculator"],
        "budget": {"max_iterations": steps + 5},
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0-100), linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """median, p95, mean, min, max and n of a sample."""
    return {
        "n": len(values),
        "median": statistics.median(values) if values else math.nan,
        "p95": percentile(values, 95),
        "mean": statistics.fmean(values) if values else math.nan,
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
    }


def emit(result: dict[str, Any]) -> None:
    """A child benchmark's result: one JSON line on stdout, read by ``run.py``."""
    print("BENCH-RESULT " + json.dumps(result), flush=True)


def parse_emitted(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("BENCH-RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH-RESULT "))
            return result
    raise ValueError("the child printed no BENCH-RESULT line")


def calculate(expression: str) -> float | int:
    """The peers' calculator: ``a * b`` style arithmetic through ``ast``, no ``eval``."""
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}

    def walk(node: ast.AST) -> float | int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            value: float | int = ops[type(node.op)](walk(node.left), walk(node.right))
            return value
        raise ValueError(f"unsupported expression: {expression!r}")

    return walk(ast.parse(expression, mode="eval"))


GRAPH_NODES = 10
"""Nodes of the graph benchmark's chain ``n0 -> n1 -> ... -> n9``: one superstep each."""


def graph_node_names(nodes: int = GRAPH_NODES) -> list[str]:
    return [f"n{i}" for i in range(nodes)]


def graph_node_update(name: str) -> dict[str, Any]:
    """What node ``name`` returns: its name appended to ``trail`` and 1 added to ``count``."""
    return {"trail": [name], "count": 1}


def check_graph_final(state: dict[str, Any], nodes: int = GRAPH_NODES) -> None:
    """The chain's final state, the same for every engine (or the figure is not comparable)."""
    if state.get("trail") != graph_node_names(nodes) or state.get("count") != nodes:
        raise RuntimeError(f"unexpected final state: {state!r}")
