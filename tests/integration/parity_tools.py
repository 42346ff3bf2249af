"""The tools of the parity test (``test_parity.py``), as a tool module the services load
(``CLOUDAGENTS_TOOL_MODULES``) and the in-process paths are given."""

from __future__ import annotations

from cloudagents.tools import Tool


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def wipe() -> str:
    """Delete everything (never runs: its risk is above every scenario's threshold)."""
    raise AssertionError("a blocked tool ran")


TOOLS = (Tool("add", add), Tool("multiply", multiply), Tool("wipe", wipe, "high"))
