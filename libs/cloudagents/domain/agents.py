"""Agent definitions: records in Firestore ``agents/{id}`` built into agents at run time (seed 002).

A definition names its model (seed 003 ``ModelConfig``, seed 004 provider configs), generation
parameters, tools, capabilities, peers, schemas, budget, guardrails, retries and timeout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
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
from cloudagents.domain.runs import utcnow
from cloudagents.domain.templates import check_parses, render

Provider = Literal[
    "openai", "anthropic", "google", "gemini", "ollama", "custom", "scripted", "callable"
]
"""``google`` (seed 004's name) and ``gemini`` are the same provider: Gemini through its
OpenAI-compatible endpoint. ``google``, ``gemini``, ``ollama`` and ``custom`` speak the OpenAI API
at another ``base_url``."""
AGENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ChainStrategy = Literal["sequential"]
"""How a chain of agents proceeds: ``sequential``, one agent at a time (see ``chain_strategy``)."""
# Seed 002's ``config_data`` keys that are generation parameters here.
_SEED_GENERATION_KEYS = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "max_tokens",
)

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


def agent_id_from_name(name: str) -> str:
    """An agent id from a display name: ``SearchAgent`` -> ``search-agent``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name.strip())
    return re.sub(r"[^a-z0-9_-]+", "-", words.lower()).strip("-_")[:63]


def _from_config_data(config: dict[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields seed 002's ``config_data`` sets; a key given twice must agree."""
    kind = config.pop("type", "agent")
    if kind != "agent":
        raise ValueError(f"config_data.type must be 'agent', not {kind!r}")
    update: dict[str, Any] = {}
    capabilities = [str(c) for c in config.pop("capabilities", [])]
    update["capabilities"] = list(dict.fromkeys([*data.get("capabilities", []), *capabilities]))
    for key in ("max_chain_depth", "chain_strategy"):
        if key in config:
            value = config.pop(key)
            if key in data and data[key] != value:
                raise ValueError(f"config_data.{key} and {key} differ: give one of them")
            update[key] = value
    generation = data.get("generation") or {}
    if isinstance(generation, BaseModel):
        generation = generation.model_dump(exclude_defaults=True)
    generation = dict(generation)
    for key in _SEED_GENERATION_KEYS:
        if key in config:
            value = config.pop(key)
            if generation.get(key, value) != value:
                raise ValueError(f"config_data.{key} and generation.{key} differ")
            generation[key] = value
    update["generation"] = generation
    if config:
        raise ValueError(f"config_data has keys this release does not know: {sorted(config)}")
    return update


def _from_prompts(prompts: Any, data: Mapping[str, Any]) -> dict[str, Any]:
    """Seed 004's ``prompts`` (``AgentPrompts``: ``system``, ``user_template``,
    ``context_instructions``) as this definition's fields; a field given twice must agree."""
    if not isinstance(prompts, dict):
        raise ValueError("prompts is a mapping of system, user_template, context_instructions")
    unknown = sorted(set(prompts) - {"system", "user_template", "context_instructions"})
    if unknown:
        raise ValueError(f"prompts has keys this release does not know: {unknown}")
    update: dict[str, Any] = {}
    for key, field in (
        ("system", "instructions"),
        ("user_template", "user_template"),
        ("context_instructions", "context_instructions"),
    ):
        if key in prompts:
            if data.get(field, prompts[key]) != prompts[key]:
                raise ValueError(f"prompts.{key} and {field} differ: give one of them")
            update[field] = prompts[key]
    return update


class AgentDefinition(Persisted):
    """An agent as stored in ``agents/{id}`` and loaded from YAML."""

    id: str = Field(pattern=AGENT_ID_PATTERN)
    name: str = ""
    description: str = ""
    instructions: str = Field(default="You are a helpful assistant.", max_length=100_000)
    user_template: str | None = Field(
        default=None, description="format string for the user message, e.g. 'Review: {input}'"
    )
    context_instructions: str | None = Field(
        default=None,
        max_length=100_000,
        description="seed 004: how to handle the context, a format string over the same "
        "variables as user_template, added to the instructions",
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
    chain_strategy: ChainStrategy = Field(
        default="sequential",
        description="seed 002: how a chain of agents proceeds. 'sequential' (the only one): a "
        "run that hands off ends HANDOFF and exactly one agent (the offer is claimed once) "
        "continues with the context, one after another, at most max_chain_depth handoffs deep",
    )

    @model_validator(mode="before")
    @classmethod
    def _seed_002_fields(cls, data: Any) -> Any:
        """Seed 002's definition fields, in this definition's terms: ``system_prompt`` is
        ``instructions``; ``config_data`` holds ``capabilities``, ``max_chain_depth``,
        ``chain_strategy`` and generation parameters (``temperature``, ``top_p``,
        ``presence_penalty``, ``frequency_penalty``); without an ``id``, the ``name`` makes one
        (``SearchAgent`` -> ``search-agent``). What is stored is the canonical form."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "system_prompt" in data:
            prompt = data.pop("system_prompt")
            if data.get("instructions", prompt) != prompt:
                raise ValueError("system_prompt and instructions differ: give one of them")
            data["instructions"] = prompt
        if "config_data" in data:
            config = data.pop("config_data")
            if not isinstance(config, dict):
                raise ValueError("config_data is a mapping")
            data.update(_from_config_data(dict(config), data))
        if "prompts" in data:
            data.update(_from_prompts(data.pop("prompts"), data))
        if "id" not in data and isinstance(data.get("name"), str):
            data["id"] = agent_id_from_name(data["name"])
        return data

    @model_serializer(mode="wrap")
    def _omit_fields_at_their_default(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Without a policy, and with the default chain strategy, a definition is stored as
        # before ``approval`` and ``chain_strategy`` existed, so a release that predates them
        # (extra fields forbidden) still reads it during a rollout.
        data = handler(self)
        if isinstance(data, dict):
            if self.approval is None:
                data.pop("approval", None)
            if self.chain_strategy == "sequential":
                data.pop("chain_strategy", None)
            if self.context_instructions is None:
                data.pop("context_instructions", None)
        return data

    @field_validator("input_schema", "output_schema", mode="before")
    @classmethod
    def _normalise_schema(cls, value: Any) -> Any:
        return schema_to_json_schema(value)

    @field_validator("user_template")
    @classmethod
    def _template_parses(cls, value: str | None) -> str | None:
        if value is not None:
            check_parses(value, "user_template")
        return value

    @field_validator("context_instructions")
    @classmethod
    def _context_instructions_parse(cls, value: str | None) -> str | None:
        if value is not None:
            check_parses(value, "context_instructions")
        return value

    @staticmethod
    def template_values(message: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """What a template may use: the run's variables, ``{input}`` (the message), and
        ``{input_data}`` (the message, unless a workflow token's run gives its own)."""
        return {"input_data": message, **variables, "input": message}

    def render_user_message(self, message: str, variables: Mapping[str, Any]) -> str:
        """Apply ``user_template`` (seed 004 prompt templates); ``{input}`` is the message.
        Raises ``domain.templates.TemplateError`` (a ``ValueError``) naming missing variables."""
        if self.user_template is None:
            return message
        return render(
            self.user_template, self.template_values(message, variables), which="user_template"
        )

    def render_instructions(self, message: str, variables: Mapping[str, Any]) -> str:
        """The system message: ``instructions``, then ``context_instructions`` rendered."""
        if self.context_instructions is None:
            return self.instructions
        context = render(
            self.context_instructions,
            self.template_values(message, variables),
            which="context_instructions",
        )
        return f"{self.instructions}\n\n{context}"


class AgentVersion(Persisted):
    """``agents/{id}/versions/{version:06d}``: one version of a definition (seed 002's history).

    A ``put`` that changes the definition adds one; a ``delete`` adds one without a definition.
    The agent's ``created_at`` is its first version's, its ``updated_at`` its last's."""

    agent_id: str
    version: int = Field(ge=1)
    definition: AgentDefinition | None = Field(description="None: the agent was deleted")
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def deleted(self) -> bool:
        return self.definition is None

    @staticmethod
    def next_after(
        history: list[AgentVersion], agent_id: str, definition: AgentDefinition | None
    ) -> AgentVersion | None:
        """The version to append for ``definition`` (None: a deletion), or None when it would
        not change anything: the same definition again, or deleting what is not there."""
        last = history[-1] if history else None
        if (last.definition if last else None) == definition:
            return None
        return AgentVersion(
            agent_id=agent_id, version=(last.version + 1) if last else 1, definition=definition
        )
