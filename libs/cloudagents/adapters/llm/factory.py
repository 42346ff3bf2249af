"""Builds the ``ModelClient`` a ``ModelConfig`` names, reading keys from the environment only."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping

from cloudagents.adapters.llm.callable import CallableModel, LLMCallable
from cloudagents.adapters.llm.fallback import DEFAULT_FALLBACK_ON, Candidate, FallbackModel
from cloudagents.adapters.llm.scripted import ScriptedModel
from cloudagents.domain.agents import ModelConfig
from cloudagents.domain.errors import ConfigurationError, ModelErrorKind
from cloudagents.ports.model import ModelClient

GEMINI_OPENAI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"
DEFAULT_OLLAMA_BASE_URL = "http://localhost:11434"
DEFAULT_KEY_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    # Seed 004 names GOOGLE_API_KEY; Google's own Gemini docs use GEMINI_API_KEY. Either works,
    # under either provider name, the first one set winning.
    "google": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}


def _key(config: ModelConfig, env: Mapping[str, str], *, required: bool) -> str | None:
    names = (
        (config.api_key_env,) if config.api_key_env else DEFAULT_KEY_ENV.get(config.provider, ())
    )
    value = next((env[name] for name in names if env.get(name)), None)
    if required and not value:
        raise ConfigurationError(
            f"provider {config.provider!r} (model {config.name!r}) needs an API key: set the "
            f"environment variable {' or '.join(names)}"
        )
    return value


def build_model_client(
    config: ModelConfig,
    *,
    llm_client: LLMCallable | None = None,
    env: Mapping[str, str] | None = None,
    fall_back_on: Collection[ModelErrorKind] = DEFAULT_FALLBACK_ON,
) -> ModelClient:
    """The provider for ``config``. ``llm_client`` serves the ``callable`` provider, and also
    overrides any configured provider, as in seed 000's ``context={"llm_client": ...}``.

    With ``config.fallbacks`` the result is a ``FallbackModel`` over the primary then each
    fallback, falling back on the error kinds in ``fall_back_on``. Every client of the chain is
    built here, so a fallback missing its key fails now, not during an outage of the primary.
    """
    env = os.environ if env is None else env
    if llm_client is not None:
        return CallableModel(llm_client)
    if not config.fallbacks:
        return _build_one(config, env)
    return FallbackModel(
        [Candidate(name=each.name, client=_build_one(each, env)) for each in config.chain()],
        fall_back_on=fall_back_on,
    )


def _build_one(config: ModelConfig, env: Mapping[str, str]) -> ModelClient:
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
        case "openai" | "google" | "gemini" | "ollama" | "custom":
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
        case "google" | "gemini":
            return GEMINI_OPENAI_BASE_URL
        case "ollama":
            # OLLAMA_BASE_URL is the server root (seed 004: http://localhost:11434); its
            # OpenAI-compatible API lives under /v1. A value that already ends in /v1 is kept.
            root = (env.get("OLLAMA_BASE_URL") or DEFAULT_OLLAMA_BASE_URL).rstrip("/")
            return root if root.endswith("/v1") else root + "/v1"
        case "custom":
            raise ConfigurationError(f"provider 'custom' (model {config.name!r}) needs base_url")
        case _:
            return env.get("OPENAI_BASE_URL") or None


def _openai_compatible_key(config: ModelConfig, env: Mapping[str, str]) -> str:
    # Local servers (Ollama, vLLM, custom endpoints) usually take no key; the SDK wants a string.
    required = config.provider in ("openai", "google", "gemini") and not (
        config.provider == "openai" and (config.base_url or env.get("OPENAI_BASE_URL"))
    )
    return _key(config, env, required=required) or "not-needed"
