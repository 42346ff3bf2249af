"""The Anthropic Messages API adapter: a ``ModelClient`` over the official ``anthropic`` SDK.

Translates the OpenAI-style history (seed 000) to Messages: system prompt apart, tool calls as
``tool_use`` blocks, tool results as ``tool_result`` blocks in user turns. SDK types and
exceptions stay inside this module: callers see only domain types and ``ModelError``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from cloudagents.adapters.llm.http_errors import (
    HINTED,
    describe,
    retry_after,
    status_kind,
    transport_kind,
)
from cloudagents.domain.errors import ConfigurationError, ModelError, ModelErrorKind
from cloudagents.domain.messages import (
    GenerationParams,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    Usage,
)
from cloudagents.ports.model import ChunkSink

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import Message as AnthropicMessage

DEFAULT_MAX_TOKENS = 4096
"""The Messages API requires ``max_tokens``; used when the generation params leave it unset."""

SAMPLING_REMOVED_IN = "2026-10-21"
"""The first ``anthropic-version`` that answers 400 to ``temperature``, ``top_p`` and ``top_k``
(even at their defaults); the anthropic SDK >= 2 sends it and no longer has those parameters.
Earlier versions (``2023-06-01``, chosen with ``headers: {anthropic-version: 2023-06-01}``)
still take them."""
MAX_TEMPERATURE = 1.0
"""Anthropic's temperature range is 0..1 (OpenAI's, and ``GenerationParams``', is 0..2)."""

log = logging.getLogger(__name__)

# The ``error.type`` of an Anthropic error body, for errors that arrive inside a 200 stream.
_ERROR_TYPE_KINDS: dict[str, ModelErrorKind] = {
    "rate_limit_error": "rate_limit",
    "overloaded_error": "server",
    "api_error": "server",
    "timeout_error": "timeout",
    "authentication_error": "auth",
    "permission_error": "auth",
    "billing_error": "auth",
    "invalid_request_error": "bad_request",
    "not_found_error": "bad_request",
    "request_too_large": "bad_request",
}


class AnthropicModel:
    """Calls one Anthropic model through the Messages API; a ``ModelClient``.

    The SDK client is built once and never retries (the engine's retry layer owns retries);
    every failure surfaces as ``ModelError`` with a kind the retry config acts on.
    """

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_seconds: float = 120.0,
    ) -> None:
        # Imported here, not at module top: the SDK is heavy and most cold starts never call it.
        import anthropic

        self.model = model
        try:
            self._client: AsyncAnthropic = anthropic.AsyncAnthropic(
                api_key=api_key,
                base_url=base_url,
                timeout=timeout_seconds,
                max_retries=0,
                default_headers=_version_header_lowercased(headers),
            )
        except anthropic.AnthropicError as exc:
            raise ConfigurationError(f"cannot build the Anthropic client: {exc}") from exc
        # The version actually sent: the SDK's default unless ``headers`` override it.
        version = self._client.default_headers.get("anthropic-version")
        self.api_version = version if isinstance(version, str) else SAMPLING_REMOVED_IN

    async def aclose(self) -> None:
        """Release the pooled HTTP connections."""
        await self._client.close()

    async def __call__(
        self, request: ModelRequest, *, on_chunk: ChunkSink | None = None
    ) -> ModelResponse:
        import anthropic

        params = self._params(request)
        try:
            if on_chunk is None:
                message = await self._client.messages.create(**params)
                return _parse_message(message)
            async with self._client.messages.stream(**params) as stream:
                async for event in stream:
                    if event.type == "text" and event.text:
                        await on_chunk(event.text)
                final = await stream.get_final_message()
            return _parse_message(final)
        except anthropic.AnthropicError as exc:
            raise _to_model_error(exc) from exc
        except Exception as exc:
            kind = transport_kind(exc)
            if kind is None:
                raise
            raise ModelError(kind, describe(exc)) from exc

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        # Plain dict rather than the SDK's TypedDicts: we build the wire form ourselves.
        generation = request.generation
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "max_tokens": generation.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": to_anthropic_messages(request.messages),
        }
        system = [m.content for m in request.messages if m.role == "system" and m.content]
        if system:
            params["system"] = "\n\n".join(system)
        if request.tools:
            params["tools"] = [
                {
                    "name": spec.name,
                    **({"description": spec.description} if spec.description else {}),
                    "input_schema": spec.parameters,
                }
                for spec in request.tools
            ]
        if generation.stop_sequences:
            params["stop_sequences"] = list(generation.stop_sequences)
        sampling = sampling_params(generation, api_version=self.api_version)
        if sampling:
            # The SDK >= 2 has no such parameters; older API versions still read them.
            params["extra_body"] = sampling
        return params


def _version_header_lowercased(headers: dict[str, str] | None) -> dict[str, str] | None:
    # The SDK sets "anthropic-version"; a pin spelt "Anthropic-Version" would go out beside it
    # instead of replacing it, so it is renamed to the SDK's spelling.
    if not headers:
        return headers
    return {
        ("anthropic-version" if k.lower() == "anthropic-version" else k): v
        for k, v in headers.items()
    }


def sampling_params(generation: GenerationParams, *, api_version: str) -> dict[str, float]:
    """The sampling parameters of ``generation`` that ``api_version`` of the Messages API takes.

    - ``anthropic-version`` >= ``2026-10-21``: none; any of temperature, top_p, top_k is a 400.
    - Earlier versions: ``temperature`` (capped at 1.0, Anthropic's maximum) or ``top_p``, never
      both: the Claude models since Sonnet 4.5 / Haiku 4.5 / Opus 4.1 answer 400 to the pair
      ("cannot both be specified for this model") and Anthropic's reference says to alter one,
      not both, for every model; so when both are set, temperature is sent and top_p dropped.
    - ``frequency_penalty`` and ``presence_penalty``: never, no Anthropic API version has them.

    Whatever is dropped is logged at debug level, naming the parameter and the reason.
    """
    dropped: list[str] = []
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(generation, name) is not None:
            dropped.append(f"{name} (not in the Anthropic API)")
    sent: dict[str, float] = {}
    temperature, top_p = generation.temperature, generation.top_p
    if api_version >= SAMPLING_REMOVED_IN:
        for name, value in (("temperature", temperature), ("top_p", top_p)):
            if value is not None:
                dropped.append(f"{name} (refused by anthropic-version {api_version})")
    else:
        if temperature is not None:
            if temperature > MAX_TEMPERATURE:
                log.debug("anthropic: temperature %s capped at %s", temperature, MAX_TEMPERATURE)
            sent["temperature"] = min(temperature, MAX_TEMPERATURE)
            if top_p is not None:
                dropped.append("top_p (Claude refuses temperature and top_p together)")
        elif top_p is not None:
            sent["top_p"] = top_p
    if dropped:
        log.debug("anthropic: not sent: %s", ", ".join(dropped))
    return sent


def to_anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The Messages API ``messages`` for a history; system messages are left out.

    Turns of the same role are merged because the API wants user and assistant to alternate,
    and tool results (role ``tool`` here) travel in user turns.
    """
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        if message.role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
            if message.content:
                # Content is optional; an empty string could be refused like an empty text block.
                result["content"] = message.content
            blocks.append(result)
        elif message.content:
            # The API rejects empty text blocks, so an assistant turn of only tool calls has none.
            blocks.append({"type": "text", "text": message.content})
        blocks.extend(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            for call in message.tool_calls
        )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # Tool results must open the user turn that answers the tool calls.
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return turns


def _parse_message(message: AnthropicMessage) -> ModelResponse:
    text: list[str] = []
    calls: list[ToolCall] = []
    try:
        for block in message.content:
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                arguments = block.input if isinstance(block.input, dict) else {"_raw": block.input}
                calls.append(ToolCall(id=block.id, name=block.name, arguments=arguments))
            # Other blocks (thinking, server tools) are not part of the domain reply.
        usage = message.usage
        return ModelResponse(
            content="".join(text) or None,
            tool_calls=calls,
            usage=Usage(
                prompt_tokens=usage.input_tokens or 0,
                completion_tokens=usage.output_tokens or 0,
            ),
        )
    except ValidationError as exc:
        raise ModelError("server", f"malformed reply from the model: {exc}") from exc


def _to_model_error(exc: Exception) -> ModelError:
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return ModelError("timeout", describe(exc))
    if isinstance(exc, anthropic.APIConnectionError):
        return ModelError("connection", describe(exc))
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        kind = status_kind(status) if status >= 400 else _body_kind(exc.body)
        # A hint on any retryable status (429, or a 529 asking for patience) is worth keeping.
        hint = retry_after(exc.response.headers) if kind in HINTED else None
        return ModelError(kind, describe(exc), retry_after=hint)
    if isinstance(exc, anthropic.APIError):
        # No status: a reply the SDK could not read.
        return ModelError("server", describe(exc))
    # Anything else the SDK raises is local (bad arguments, config): retrying cannot help.
    return ModelError("bad_request", describe(exc))


def _body_kind(body: object) -> ModelErrorKind:
    """Kind of an error event inside a stream, whose HTTP status was already 200."""
    error = body.get("error") if isinstance(body, dict) else None
    error_type = error.get("type") if isinstance(error, dict) else None
    return _ERROR_TYPE_KINDS.get(error_type, "server") if isinstance(error_type, str) else "server"
