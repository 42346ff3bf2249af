"""Guardrail decisions: input before each model call, each tool call, and the final output."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from cloudagents.domain.messages import Message, ToolCall, ToolSpec
from cloudagents.domain.policy import RISK_ORDER, GuardrailConfig


def matched_pattern(config: GuardrailConfig, text: str) -> str | None:
    """The first blocked pattern found in ``text`` (case-insensitive), if any."""
    if not config.enabled:
        return None
    for pattern in config.blocked_patterns:
        if re.search(pattern, text, flags=re.IGNORECASE):
            return pattern
    return None


def check_input(config: GuardrailConfig, messages: Iterable[Message]) -> str | None:
    """Reason to block the new input (user message or tool results), or ``None``."""
    for message in messages:
        if message.content and (pattern := matched_pattern(config, message.content)):
            source = "tool result" if message.role == "tool" else f"{message.role} input"
            return f"{source} matches blocked pattern {pattern!r}"
    return None


def check_tool_call(
    config: GuardrailConfig, call: ToolCall, spec: ToolSpec | None, *, gated: bool = False
) -> str | None:
    """Reason to block a tool call: its risk is above the threshold, or its arguments match.
    A ``gated`` call waits for a person instead: its risk is theirs to judge, not a block."""
    if not config.enabled:
        return None
    if (
        not gated
        and spec is not None
        and RISK_ORDER[spec.risk_level] > RISK_ORDER[config.risk_threshold]
    ):
        return (
            f"tool {call.name!r} has risk {spec.risk_level!r}, above the threshold "
            f"{config.risk_threshold!r}"
        )
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    if pattern := matched_pattern(config, arguments):
        return f"arguments of tool {call.name!r} match blocked pattern {pattern!r}"
    return None


def check_output(config: GuardrailConfig, text: str | None) -> str | None:
    """Reason to block the final answer, or ``None``."""
    if text and (pattern := matched_pattern(config, text)):
        return f"output matches blocked pattern {pattern!r}"
    return None


def new_input(messages: list[Message]) -> list[Message]:
    """Messages added since the model last spoke: what the input guardrail has not yet seen."""
    tail: list[Message] = []
    for message in reversed(messages):
        if message.role in ("assistant", "system"):
            break
        tail.append(message)
    return list(reversed(tail))
