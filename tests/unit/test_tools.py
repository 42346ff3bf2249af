"""Tool schemas from signatures and docstrings; invocation, errors and timeouts."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest

from cloudagents import Tool, ToolRegistry, tool


def add(a: int, b: int = 2) -> int:
    """Add two integers.

    Args:
        a: the first addend
        b: the second addend,
            two by default
    """
    return a + b


async def search(
    query: str, mode: Literal["fast", "deep"] = "fast", limit: int | None = None
) -> list[str]:
    """Search the documents.

    :param query: what to look for
    :param mode: how hard to look
    """
    return [f"{mode}:{query}"][: limit or 10]


def test_schema_from_signature_and_google_docstring() -> None:
    spec = Tool("add", add).spec()
    assert spec.description == "Add two integers."
    assert spec.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "a": {"type": "integer", "description": "the first addend"},
            "b": {
                "type": "integer",
                "default": 2,
                "description": "the second addend, two by default",
            },
        },
        "required": ["a"],
    }


def test_schema_from_rest_docstring_with_literal_and_optional() -> None:
    params = Tool("search", search).parameters
    assert params["required"] == ["query"]
    assert params["properties"]["query"]["description"] == "what to look for"
    assert params["properties"]["mode"]["enum"] == ["fast", "deep"]
    assert {"type": "null"} in params["properties"]["limit"]["anyOf"]


def test_to_mcp_format_carries_risk_level() -> None:
    mcp = Tool("add", add, "high").to_mcp_format()
    assert mcp["name"] == "add"
    assert mcp["risk_level"] == "high"
    assert mcp["inputSchema"]["required"] == ["a"]


def test_bad_risk_level_and_name() -> None:
    with pytest.raises(ValueError, match="risk_level"):
        Tool("add", add, "extreme")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must match"):
        Tool("bad name", add)


async def test_sync_and_async_tools_run() -> None:
    assert (await Tool("add", add).invoke({"a": 1, "b": 5})).content == 6
    result = await Tool("search", search).invoke({"query": "x", "mode": "deep"})
    assert result.content == ["deep:x"]


async def test_invalid_arguments_become_an_error_result() -> None:
    result = await Tool("add", add).invoke({"a": "not a number"})
    assert result.is_error
    assert "invalid arguments for add" in result.as_text()
    extra = await Tool("add", add).invoke({"a": 1, "c": 3})
    assert extra.is_error and "c" in extra.as_text()


async def test_a_raising_tool_gives_the_model_an_error_not_a_crash() -> None:
    def broken(x: int) -> int:
        raise RuntimeError("disk on fire")

    result = await Tool("broken", broken).invoke({"x": 1})
    assert result.is_error
    assert result.as_text() == "broken failed: RuntimeError: disk on fire"


async def test_timeout() -> None:
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    result = await Tool("slow", slow, timeout_seconds=0.05).invoke({})
    assert result.is_error and "timed out" in result.as_text()


def test_decorator_forms() -> None:
    @tool
    def ping() -> str:
        """Answer pong."""
        return "pong"

    @tool(name="rm", risk_level="high", idempotent=False)
    def remove(path: str) -> None:
        """Delete a file."""

    assert ping.name == "ping" and ping.description == "Answer pong."
    assert remove.name == "rm" and remove.risk_level == "high" and not remove.idempotent


async def test_registry_accepts_seed_mapping_and_reports_unknown_tools() -> None:
    registry = ToolRegistry.from_mapping(
        {"calculator": Tool("calculator", add, "low"), "s": search}
    )
    assert "calculator" in registry and "s" in registry
    result = await registry.invoke("nope", {})
    assert result.is_error and "available: calculator, s" in result.as_text()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Tool("calculator", search))


def test_var_args_are_refused() -> None:
    def varargs(*items: int) -> int:
        return sum(items)

    with pytest.raises(TypeError, match="cannot be described"):
        Tool("varargs", varargs)


def test_register_accepts_an_object_shaped_like_the_seeds_tool() -> None:
    class SeedShaped:
        def __init__(self, name: str, function: Any, risk_level: str = "low") -> None:
            self.name = name
            self.function = function
            self.risk_level = risk_level

    def double(x: int) -> int:
        """Double it."""
        return 2 * x

    registry = ToolRegistry()
    registered = registry.register(SeedShaped("doubler", double, "medium"))
    assert (registered.name, registered.risk_level, registered.description) == (
        "doubler",
        "medium",
        "Double it.",
    )
    assert "doubler" in registry
    with pytest.raises(TypeError, match="not a tool"):
        ToolRegistry.from_mapping({"x": 42})  # type: ignore[dict-item]
