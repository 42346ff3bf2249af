"""Builds the ``ModelClient`` a ``ModelConfig`` names, reading keys from the environment only."""

from __future__ import annotations

import os
from collections.abc import Mapping

from cloudagents.adapters.llm.callable import CallableModel, LLMCallable
from cloudagents.adapters.llm.scripted import ScriptedModel
from cloudagents.domain.agents import ModelConfig
from cloudagents.domain.errors import ConfigurationError
from cloudagents.ports.model import ModelClient

GEMINI_OPENAI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"
DEFAULT_OLLAMA_BASE_URL = "http://localhost:11434"
DEFAULT_KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
}


def _key(config: ModelConfig, env: Mapping[str, str], *, required: bool) -> str | None:
    name = config.api_key_env or DEFAULT_KEY_ENV.get(config.provider)
    value = env.get(name) if name else None
    if required and not value:
        raise ConfigurationError(
            f"provider {config.provider!r} (model {config.name!r}) needs an API key: set the "
            f"environment variable {name}"
        )
    return value


def build_model_client(
    config: ModelConfig,
    *,
    llm_client: LLMCallable | None = None,
    env: Mapping[str, str] | None = None,
) -> ModelClient:
    """The provider for ``config``. ``llm_client`` serves the ``callable`` provider, and also
    overrides any configured provider, as in seed 000's ``context={"llm_client": ...}``."""
    env = os.environ if env is None else env
    if llm_client is not None:
        return CallableModel(llm_client)
    match config.provider:
        case "scripted":
            return ScriptedModel(config.script)
        case "callable":
            raise ConfigurationError(
                "provider 'callable' needs a function: pass context={'llm_client': fn}"
            )
        case "anthropic":
            api_key = _key(config, env, required=True) or ""
            from cloudagents.adapters.llm.anthropic import AnthropicModel

            return AnthropicModel(
                model=config.name,
                api_key=api_key,
                base_url=config.base_url or env.get("ANTHROPIC_BASE_URL"),
                headers=config.headers,
                timeout_seconds=config.timeout_seconds,
            )
        case "openai" | "gemini" | "ollama" | "custom":
            api_key = _openai_compatible_key(config, env)
            base_url = _openai_compatible_base_url(config, env)
            from cloudagents.adapters.llm.openai import OpenAIModel

            return OpenAIModel(
                model=config.name,
                api_key=api_key,
                base_url=base_url,
                headers=config.headers,
                timeout_seconds=config.timeout_seconds,
            )
    raise ConfigurationError(f"unknown provider {config.provider!r}")


def _openai_compatible_base_url(config: ModelConfig, env: Mapping[str, str]) -> str | None:
    if config.base_url:
        return config.base_url
    match config.provider:
        case "gemini":
            return GEMINI_OPENAI_BASE_URL
        case "ollama":
            return env.get("OLLAMA_BASE_URL", DEFAULT_OLLAMA_BASE_URL).rstrip("/") + "/v1"
        case "custom":
            raise ConfigurationError(f"provider 'custom' (model {config.name!r}) needs base_url")
        case _:
            return env.get("OPENAI_BASE_URL")


def _openai_compatible_key(config: ModelConfig, env: Mapping[str, str]) -> str:
    # Local servers (Ollama, vLLM, custom endpoints) usually take no key; the SDK wants a string.
    required = config.provider in ("openai", "gemini") and not (
        config.provider == "openai" and (config.base_url or env.get("OPENAI_BASE_URL"))
    )
    return _key(config, env, required=required) or "not-needed"
