"""Tools every deployment has: safe arithmetic, the current time, text statistics, and a
demonstration refund that needs approval.

Services load tool modules named in ``CLOUDAGENTS_TOOL_MODULES`` (this one by default); a module
contributes every module-level ``Tool`` it defines.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cloudagents.tools import Tool, tool

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ValueError("exponent too large")
        result: float | int = _BINARY[type(node.op)](left, right)
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        value: float | int = _UNARY[type(node.op)](_evaluate(node.operand))
        return value
    raise ValueError(f"unsupported expression element: {type(node).__name__}")


@tool
def calculator(expression: str) -> float | int:
    """Evaluate an arithmetic expression exactly (+ - * / // % ** and parentheses).

    Args:
        expression: the expression, e.g. "(2 + 3) * 4"
    """
    if len(expression) > 500:
        raise ValueError("expression longer than 500 characters")
    return _evaluate(ast.parse(expression, mode="eval"))


@tool
def utc_now() -> str:
    """The current date and time in UTC, ISO 8601."""
    return datetime.now(UTC).isoformat()


@tool
def word_count(text: str) -> dict[str, int]:
    """Count the words, lines and characters of a text.

    Args:
        text: the text to measure
    """
    return {"words": len(text.split()), "lines": text.count("\n") + 1, "characters": len(text)}


BUILTIN_TOOLS: tuple[Tool, ...] = (calculator, utc_now, word_count)


@tool(risk_level="high", idempotent=False, timeout_seconds=10)
def refund_order(order_id: str, amount_eur: float) -> dict[str, Any]:
    """Refund an order (a demonstration tool: it confirms the refund and moves no money).

    High risk and not idempotent: an agent whose approval policy reaches ``high`` waits for a
    person before each call (``cloudagents approvals approve``).

    Args:
        order_id: the order to refund
        amount_eur: how much to refund, in euros
    """
    if amount_eur <= 0:
        raise ValueError("amount_eur must be positive")
    return {"order_id": order_id, "refunded_eur": round(amount_eur, 2), "status": "refunded"}
