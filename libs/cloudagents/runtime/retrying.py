"""Retries and timeouts around any ``ModelClient``, following the agent's ``RetryConfig``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cloudagents.domain.errors import ModelError
from cloudagents.domain.messages import ModelRequest, ModelResponse
from cloudagents.domain.policy import RetryConfig
from cloudagents.ports.model import ChunkSink, ModelClient

Sleep = Callable[[float], Awaitable[None]]


class RetryingModel:
    """Retries errors whose kind is in ``retry_on_errors`` with exponential backoff.

    A provider's ``retry_after`` hint wins when it is longer than the backoff. ``attempts`` lists
    each failure seen, so callers can report what happened when the retries run out.
    """

    def __init__(
        self,
        inner: ModelClient,
        retry: RetryConfig,
        *,
        timeout_seconds: float | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.retry = retry
        self.timeout_seconds = timeout_seconds
        self.sleep = sleep
        self.failures: list[ModelError] = []

    async def __call__(
        self, request: ModelRequest, *, on_chunk: ChunkSink | None = None
    ) -> ModelResponse:
        delay = self.retry.backoff_seconds
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return await self._once(request, on_chunk)
            except ModelError as error:
                self.failures.append(error)
                retryable = error.kind in self.retry.retry_on_errors
                if not retryable or attempt == self.retry.max_attempts:
                    if retryable:
                        raise ModelError(
                            error.kind,
                            f"gave up after {attempt} attempts; last error: {error}",
                        ) from error
                    raise
                await self.sleep(max(delay, error.retry_after or 0.0))
                delay *= self.retry.backoff_multiplier
        raise AssertionError("unreachable: the loop returns or raises")

    async def _once(self, request: ModelRequest, on_chunk: ChunkSink | None) -> ModelResponse:
        if self.timeout_seconds is None:
            return await self.inner(request, on_chunk=on_chunk)
        try:
            return await asyncio.wait_for(
                self.inner(request, on_chunk=on_chunk), self.timeout_seconds
            )
        except TimeoutError as exc:
            raise ModelError("timeout", f"no reply within {self.timeout_seconds}s") from exc
