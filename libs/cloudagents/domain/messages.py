"""Provider-neutral conversation messages and the model request/response contract (seed 000).

The history is OpenAI-style (system, user, assistant with tool calls, tool results); provider
adapters translate it to and from their own wire formats.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from cloudagents.domain.base import Model, Persisted
from cloudagents.domain.handoffs import HandoffTarget
from cloudagents.domain.policy import RiskLevel

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(Model):
    """A model's request to call one tool with JSON arguments."""

    id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=128)
    arguments: dict[str, JsonValue] = Field(default_factory=dict)

    @classmethod
    def from_raw(cls, raw: Any, index: int = 0) -> ToolCall:
        """Accept OpenAI's ``{"id", "function": {"name", "arguments": "<json>"}}`` or flat."""
        if isinstance(raw, ToolCall):
            return raw
        if not isinstance(raw, dict):
            raise ValueError(f"tool call must be an object, got {type(raw).__name__}")
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else raw.get("name")
        arguments: Any = (
            function.get("arguments") if isinstance(function, dict) else raw.get("arguments")
        )
        if isinstance(arguments, str):
            arguments = json.loads(arguments) if arguments.strip() else {}
        return cls(id=str(raw.get("id") or f"call_{index}"), name=name, arguments=arguments or {})


class Message(Persisted):
    """One conversation message."""

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _tool_messages_name_their_call(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat-completions form, used for user-supplied callables (seed 000)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in self.tool_calls
            ]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.name:
            out["name"] = self.name
        return out


def result_text(content: Any) -> str:
    """How a tool's result reads in the transcript: text as is, anything else as JSON with
    sorted keys (the same bytes from every process)."""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False, default=str, sort_keys=True)


def tool_message(call: ToolCall, content: Any) -> Message:
    """The transcript message that carries a tool's result back to the model."""
    return Message(role="tool", tool_call_id=call.id, name=call.name, content=result_text(content))


class Usage(Model):
    """Token usage of one model call; ``total_tokens`` is derived when a provider omits it."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _derive_total(self) -> Usage:
        if self.total_tokens == 0 and (self.prompt_tokens or self.completion_tokens):
            object.__setattr__(self, "total_tokens", self.prompt_tokens + self.completion_tokens)
        return self

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


def _empty_object_schema() -> dict[str, JsonValue]:
    return {"type": "object", "properties": {}}


class ToolSpec(Model):
    """What the model is told about a tool: name, description, JSON-schema parameters, risk."""

    name: str
    description: str = ""
    parameters: dict[str, JsonValue] = Field(default_factory=_empty_object_schema)
    risk_level: RiskLevel = "low"

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class GenerationParams(Model):
    """Sampling parameters (seed 004 ``LLMConfig``); ``None`` leaves the provider's default."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop_sequences: list[str] = Field(default_factory=list, max_length=16)


class ModelRequest(Model):
    """The request half of the LLM client contract (seed 000)."""

    model: str
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    generation: GenerationParams = Field(default_factory=GenerationParams)

    def to_contract_dict(self) -> dict[str, Any]:
        """The plain dict a user-supplied ``llm_client(request)`` receives."""
        return {
            "model": self.model,
            "messages": [m.to_openai() for m in self.messages],
            "tools": [t.to_openai() for t in self.tools],
            **{k: v for k, v in self.generation.model_dump().items() if v not in (None, [])},
        }


class ModelResponse(Model):
    """The response half of the LLM client contract (seed 000)."""

    content: str | dict[str, JsonValue] | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    handoff_target: HandoffTarget | None = None
    usage: Usage = Field(default_factory=Usage)
    done: bool | None = None
    model: str | None = Field(
        default=None,
        description="the model that answered, when a fallback chain chose it (FallbackModel); "
        "None means the configured model. Cost is priced on this model.",
    )

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _normalise_tool_calls(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, list):
            return [ToolCall.from_raw(item, i) for i, item in enumerate(value)]
        return value

    @field_validator("usage", mode="before")
    @classmethod
    def _usage_or_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    def content_text(self) -> str | None:
        """The content as text, JSON-encoding a dict payload."""
        if self.content is None or isinstance(self.content, str):
            return self.content
        return json.dumps(self.content, sort_keys=True)

    def as_message(self) -> Message:
        return Message(role="assistant", content=self.content_text(), tool_calls=self.tool_calls)
