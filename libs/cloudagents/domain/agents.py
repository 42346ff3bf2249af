"""Agent definitions: records in Firestore ``agents/{id}`` built into agents at run time (seed 002).

A definition names its model (seed 003 ``ModelConfig``, seed 004 provider configs), generation
parameters, tools, capabilities, peers, schemas, budget, guardrails, retries and timeout.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from cloudagents.domain.approvals import ApprovalPolicy
from cloudagents.domain.base import Model, Persisted
from cloudagents.domain.handoffs import HandoffTarget
from cloudagents.domain.messages import GenerationParams
from cloudagents.domain.policy import Budget, GuardrailConfig, RetryConfig

Provider = Literal[
    "openai", "anthropic", "google", "gemini", "ollama", "custom", "scripted", "callable"
]
"""``google`` (seed 004's name) and ``gemini`` are the same provider: Gemini through its
OpenAI-compatible endpoint. ``google``, ``gemini``, ``ollama`` and ``custom`` speak the OpenAI API
at another ``base_url``."""
AGENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

_SIMPLE_TYPES: dict[str, str] = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "list": "array",
    "array": "array",
    "dict": "object",
    "object": "object",
}
_JSON_SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "enum",
        "$schema",
        "title",
        "description",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "pattern",
        "format",
        "anyOf",
        "oneOf",
        "allOf",
        "$defs",
        "default",
        "const",
    }
)


class ScriptedToolCall(Model):
    """A tool call a scripted turn makes."""

    name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)
    id: str | None = None


class ScriptedTurn(Model):
    """One reply of the ``scripted`` provider: deterministic, for demos and tests."""

    content: str | dict[str, JsonValue] | None = None
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    handoff_target: HandoffTarget | None = None
    done: bool | None = None
    total_tokens: int = Field(default=10, ge=0)
    delay_seconds: float = Field(default=0.0, ge=0, le=600)
    fail_with: Literal["rate_limit", "timeout", "server", "bad_request", "auth"] | None = Field(
        default=None, description="raise this provider error instead of replying (tests)"
    )
    fail_times: int = Field(default=1, ge=1, description="how many attempts fail, per process")


class ModelConfig(Model):
    """Which model serves an agent, and how to reach it. Keys never live here: only env names."""

    provider: Provider = "openai"
    name: str = Field(min_length=1, max_length=200)
    base_url: str | None = None
    api_key_env: str | None = Field(
        default=None, description="environment variable holding the key; default per provider"
    )
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    script: list[ScriptedTurn] = Field(default_factory=list)
    input_price_per_million: float | None = Field(default=None, ge=0)
    output_price_per_million: float | None = Field(default=None, ge=0)
    fallbacks: list[ModelConfig] = Field(
        default_factory=list,
        max_length=5,
        description="models tried in order when this one fails with a classified error "
        "(seed 004 'fallback providers'); one level only: a fallback has no fallbacks",
    )

    @model_validator(mode="after")
    def _scripted_needs_turns(self) -> ModelConfig:
        if self.provider == "scripted" and not self.script:
            raise ValueError("the scripted provider needs at least one turn in model.script")
        if self.provider != "scripted" and self.script:
            raise ValueError(f"model.script is only for the scripted provider, not {self.provider}")
        return self

    @model_validator(mode="after")
    def _fallbacks_are_flat(self) -> ModelConfig:
        for index, fallback in enumerate(self.fallbacks):
            if fallback.fallbacks:
                raise ValueError(
                    f"model.fallbacks[{index}] ({fallback.name!r}) has fallbacks of its own: "
                    "list every fallback on the primary model instead"
                )
            if fallback.provider == "callable":
                raise ValueError(
                    "a fallback cannot use the 'callable' provider: its function is the "
                    "caller's llm_client, which replaces the whole model chain"
                )
        return self

    @model_serializer(mode="wrap")
    def _omit_no_fallbacks(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Definitions without fallbacks are stored exactly as before the field existed, so a
        # release that predates it (extra fields forbidden) still reads them during a rollout.
        data = handler(self)
        if not self.fallbacks and isinstance(data, dict):
            data.pop("fallbacks", None)
        return data

    def chain(self) -> list[ModelConfig]:
        """This model, then its fallbacks, in the order they are tried."""
        return [self, *self.fallbacks]

    def chain_timeout_seconds(self) -> float:
        """The longest one call through the whole chain can take: every model timing out."""
        return sum(each.timeout_seconds for each in self.chain())


def schema_to_json_schema(spec: Any) -> dict[str, Any] | None:
    """Normalise seed 003's three schema forms (list of names, name->type, JSON Schema)."""
    if spec is None:
        return None
    if isinstance(spec, list):
        names = [str(n) for n in spec]
        return {
            "type": "object",
            "properties": {n: {"type": "string"} for n in names},
            "required": names,
        }
    if isinstance(spec, dict):
        if set(spec) <= _JSON_SCHEMA_KEYWORDS and isinstance(spec.get("type"), str):
            return dict(spec)
        properties: dict[str, Any] = {}
        for key, typ in spec.items():
            name = typ.__name__ if isinstance(typ, type) else str(typ)
            if name not in _SIMPLE_TYPES:
                raise ValueError(f"schema field {key!r}: unknown type {name!r}")
            properties[key] = {"type": _SIMPLE_TYPES[name]}
        return {"type": "object", "properties": properties, "required": list(spec)}
    raise ValueError("a schema is a list of field names, a name->type mapping, or a JSON Schema")


class AgentDefinition(Persisted):
    """An agent as stored in ``agents/{id}`` and loaded from YAML."""

    id: str = Field(pattern=AGENT_ID_PATTERN)
    name: str = ""
    description: str = ""
    instructions: str = Field(default="You are a helpful assistant.", max_length=100_000)
    user_template: str | None = Field(
        default=None, description="format string for the user message, e.g. 'Review: {input}'"
    )
    model: ModelConfig
    generation: GenerationParams = Field(default_factory=GenerationParams)
    tools: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    allowed_peers: list[str] = Field(default_factory=list)
    input_schema: dict[str, JsonValue] | None = None
    output_schema: dict[str, JsonValue] | None = None
    budget: Budget = Field(default_factory=Budget)
    guardrails: GuardrailConfig = Field(default_factory=GuardrailConfig)
    approval: ApprovalPolicy | None = Field(
        default=None, description="which tool calls wait for a person (domain/approvals.py)"
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)
    timeout_seconds: float = Field(default=600.0, gt=0, le=24 * 3600)
    max_chain_depth: int = Field(default=3, ge=0, le=20)
    allowed_callers: list[str] = Field(
        default_factory=lambda: ["*"], description="principals that may start runs of this agent"
    )

    @model_serializer(mode="wrap")
    def _omit_no_approval(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Without a policy a definition is stored as before ``approval`` existed, so a release
        # that predates it (extra fields forbidden) still reads it during a rollout.
        data = handler(self)
        if self.approval is None and isinstance(data, dict):
            data.pop("approval", None)
        return data

    @field_validator("input_schema", "output_schema", mode="before")
    @classmethod
    def _normalise_schema(cls, value: Any) -> Any:
        return schema_to_json_schema(value)

    @field_validator("user_template")
    @classmethod
    def _template_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                list(string.Formatter().parse(value))
            except ValueError as exc:
                raise ValueError(f"user_template does not parse: {exc}") from exc
        return value

    def render_user_message(self, message: str, variables: Mapping[str, Any]) -> str:
        """Apply ``user_template`` (seed 004 prompt templates); ``{input}`` is the message."""
        if self.user_template is None:
            return message
        values = {**variables, "input": message}
        missing = [
            field
            for _, field, _, _ in string.Formatter().parse(self.user_template)
            if field and field not in values
        ]
        if missing:
            raise ValueError(f"user_template needs variables {missing} that were not given")
        return self.user_template.format(**values)
