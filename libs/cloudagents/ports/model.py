"""The model port: seed 000's ``llm_client(request) -> response``, typed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from cloudagents.domain.messages import ModelRequest, ModelResponse

ChunkSink = Callable[[str], Awaitable[None]]
"""Receives text deltas while a reply streams."""


class ModelClient(Protocol):
    """Calls one model once. Raises ``ModelError`` with a kind on failure.

    With ``on_chunk`` a provider that can stream sends each text delta to it as it arrives and
    still returns the whole reply; providers that cannot stream call it once with the full text.
    """

    async def __call__(
        self, request: ModelRequest, *, on_chunk: ChunkSink | None = None
    ) -> ModelResponse: ...
