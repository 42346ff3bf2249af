"""The OpenAI chat-completions adapter: a ``ModelClient`` over the official ``openai`` SDK.

Also serves every provider that speaks the OpenAI API at another ``base_url`` (Gemini's
compatibility endpoint, Ollama, vLLM...). SDK types and exceptions stay inside this module:
callers see only domain types and ``ModelError``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue, ValidationError

from cloudagents.adapters.llm.http_errors import (
    HINTED,
    describe,
    retry_after,
    status_kind,
    transport_kind,
)
from cloudagents.domain.errors import ConfigurationError, ModelError
from cloudagents.domain.messages import ModelRequest, ModelResponse, ToolCall, Usage
from cloudagents.ports.model import ChunkSink

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion


class OpenAIModel:
    """Calls one OpenAI-compatible chat-completions model; a ``ModelClient``.

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
        import openai

        self.model = model
        try:
            self._client: AsyncOpenAI = openai.AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                timeout=timeout_seconds,
                max_retries=0,
                default_headers=headers,
            )
        except openai.OpenAIError as exc:
            raise ConfigurationError(f"cannot build the OpenAI client: {exc}") from exc

    async def aclose(self) -> None:
        """Release the pooled HTTP connections."""
        await self._client.close()

    async def __call__(
        self, request: ModelRequest, *, on_chunk: ChunkSink | None = None
    ) -> ModelResponse:
        import openai

        params = self._params(request)
        try:
            if on_chunk is None:
                completion = await self._client.chat.completions.create(**params)
                return _parse_completion(completion)
            return await self._stream(params, on_chunk)
        except openai.OpenAIError as exc:
            raise _to_model_error(exc) from exc
        except Exception as exc:
            kind = transport_kind(exc)
            if kind is None:
                raise
            raise ModelError(kind, describe(exc)) from exc

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        # Plain dict rather than the SDK's TypedDicts: the domain already produces the wire form.
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [message.to_openai() for message in request.messages],
        }
        if request.tools:
            params["tools"] = [spec.to_openai() for spec in request.tools]
        generation = request.generation
        for name in ("temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty"):
            value = getattr(generation, name)
            if value is not None:
                params[name] = value
        if generation.stop_sequences:
            params["stop"] = list(generation.stop_sequences)
        return params

    async def _stream(self, params: dict[str, Any], on_chunk: ChunkSink) -> ModelResponse:
        text: list[str] = []
        calls: dict[int, _PartialCall] = {}
        usage = Usage()
        stream = await self._client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = _usage(
                        chunk.usage.prompt_tokens,
                        chunk.usage.completion_tokens,
                        chunk.usage.total_tokens,
                    )
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta.content:
                    text.append(delta.content)
                    await on_chunk(delta.content)
                for position, call_delta in enumerate(delta.tool_calls or []):
                    # Some OpenAI-compatible servers omit the index; fall back to arrival order.
                    index = call_delta.index if call_delta.index is not None else position
                    partial = calls.setdefault(index, _PartialCall())
                    function = call_delta.function
                    partial.add(
                        call_delta.id,
                        function.name if function else None,
                        function.arguments if function else None,
                    )
        return _response(
            "".join(text),
            [
                (calls[i].id, calls[i].name, calls[i].arguments)
                for i in sorted(calls)  # the order the model emitted them
            ],
            usage,
        )


class _PartialCall:
    """A tool call assembled from stream deltas: id and name arrive once, arguments in pieces."""

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments = ""

    def add(self, call_id: str | None, name: str | None, arguments: str | None) -> None:
        if call_id and not self.id:
            self.id = call_id
        if name and not self.name:
            self.name = name
        if arguments:
            self.arguments += arguments


def _parse_completion(completion: ChatCompletion) -> ModelResponse:
    usage = Usage()
    if completion.usage is not None:
        usage = _usage(
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens,
            completion.usage.total_tokens,
        )
    if not completion.choices:
        return _response(None, [], usage)
    message = completion.choices[0].message
    calls: list[tuple[str | None, str, str]] = []
    for call in message.tool_calls or []:
        # Custom (free-text) tools are never declared by us, so only function calls can come back.
        function = getattr(call, "function", None)
        if function is not None:
            calls.append((call.id, function.name, function.arguments or ""))
    return _response(message.content, calls, usage)


def _response(
    content: str | None, calls: list[tuple[str | None, str, str]], usage: Usage
) -> ModelResponse:
    try:
        return ModelResponse(
            # Empty text means "no text": the stream and the plain reply must agree on it.
            content=content or None,
            tool_calls=[
                ToolCall(id=call_id or f"call_{i}", name=name, arguments=_arguments(raw))
                for i, (call_id, name, raw) in enumerate(calls)
            ],
            usage=usage,
        )
    except ValidationError as exc:
        raise ModelError("server", f"malformed reply from the model: {exc}") from exc


def _arguments(raw: str) -> dict[str, JsonValue]:
    # Malformed arguments are kept, not raised: the tool layer then answers the model with a
    # validation error it can correct, instead of failing the whole step.
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


def _usage(prompt: int | None, completion: int | None, total: int | None) -> Usage:
    return Usage(
        prompt_tokens=prompt or 0, completion_tokens=completion or 0, total_tokens=total or 0
    )


def _to_model_error(exc: Exception) -> ModelError:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ModelError("timeout", describe(exc))
    if isinstance(exc, openai.APIConnectionError):
        return ModelError("connection", describe(exc))
    if isinstance(exc, openai.APIStatusError):
        kind = status_kind(exc.status_code)
        # A hint on any retryable status (429, or a 503 asking for patience) is worth keeping.
        hint = retry_after(exc.response.headers) if kind in HINTED else None
        return ModelError(kind, describe(exc), retry_after=hint)
    if isinstance(exc, openai.APIError):
        # No status: an error event inside a stream or a reply the SDK could not read.
        return ModelError("server", describe(exc))
    # Anything else the SDK raises is local (bad arguments, config): retrying cannot help.
    return ModelError("bad_request", describe(exc))
