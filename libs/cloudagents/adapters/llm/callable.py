"""A plain async (or sync) function as the model: seed 000's ``llm_client(request) -> dict``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from cloudagents.domain.errors import ModelError
from cloudagents.domain.messages import ModelRequest, ModelResponse
from cloudagents.ports.model import ChunkSink

LLMCallable = Callable[[dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]


class CallableModel:
    """Adapts a user's ``llm_client(request: dict) -> dict`` to ``ModelClient``.

    The request is the seed's dict (model, OpenAI-style messages, tools); the reply may carry
    ``content``, ``tool_calls`` (flat or OpenAI-style), ``handoff_target``, ``usage``, ``done``.
    """

    def __init__(self, function: LLMCallable) -> None:
        if not callable(function):
            raise TypeError("llm_client must be callable")
        self.function = function

    async def __call__(
        self, request: ModelRequest, *, on_chunk: ChunkSink | None = None
    ) -> ModelResponse:
        try:
            raw = self.function(request.to_contract_dict())
            if inspect.isawaitable(raw):
                raw = await raw
        except ModelError:
            raise
        except TimeoutError as exc:
            raise ModelError("timeout", f"llm_client timed out: {exc}") from exc
        except Exception as exc:  # the user's client failed; classify as a server-side failure
            raise ModelError("server", f"llm_client raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelError("bad_request", f"llm_client returned {type(raw).__name__}, not a dict")
        try:
            response = ModelResponse.model_validate(raw)
        except (ValidationError, ValueError) as exc:
            raise ModelError(
                "bad_request", f"llm_client reply does not fit the contract: {exc}"
            ) from exc
        if on_chunk is not None and (text := response.content_text()):
            await on_chunk(text)
        return response
