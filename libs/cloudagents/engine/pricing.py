"""USD prices per million tokens, by model name prefix, for the daily cost cap.

List prices as published by the providers (checked 2026-11); a definition's
``model.input_price_per_million`` / ``output_price_per_million`` override them. Models not listed
cost 0 unless overridden (local models, scripted replies).
"""

from __future__ import annotations

from cloudagents.domain.agents import ModelConfig
from cloudagents.domain.messages import ModelResponse, Usage

# (input, output) USD per 1M tokens. Longest matching prefix wins.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-opus": (15.00, 75.00),
    "claude-3-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-haiku-4": (1.00, 5.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-pro": (1.25, 10.00),
}


def prices_for(model: ModelConfig) -> tuple[float, float]:
    """(input, output) USD per million tokens for this model."""
    listed = (0.0, 0.0)
    matches = [prefix for prefix in PRICES_PER_MILLION if model.name.startswith(prefix)]
    if matches:
        listed = PRICES_PER_MILLION[max(matches, key=len)]
    return (
        model.input_price_per_million if model.input_price_per_million is not None else listed[0],
        model.output_price_per_million if model.output_price_per_million is not None else listed[1],
    )


def cost_of(model: ModelConfig, usage: Usage) -> float:
    """USD cost of one call. Usage without a prompt/completion split is priced as output."""
    price_in, price_out = prices_for(model)
    if usage.prompt_tokens or usage.completion_tokens:
        return (usage.prompt_tokens * price_in + usage.completion_tokens * price_out) / 1e6
    return usage.total_tokens * price_out / 1e6


def answered_by(model: ModelConfig, reply: ModelResponse) -> ModelConfig:
    """The model of ``model``'s fallback chain that produced ``reply``: what its cost is priced on.

    ``reply.model`` names it (``FallbackModel`` sets it); a reply that names none, or a name
    outside the chain, is the primary's.
    """
    if reply.model is None:
        return model
    return next((each for each in model.chain() if each.name == reply.model), model)


def max_call_cost(model: ModelConfig, max_tokens: int | None) -> float:
    """An upper estimate of one call's cost, reserved against the daily cap before the call.

    With fallbacks, the dearest model of the chain: any of them may be the one that answers.
    """
    price_out = max(prices_for(each)[1] for each in model.chain())
    return (max_tokens or 4096) * price_out / 1e6
