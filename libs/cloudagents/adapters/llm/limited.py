"""Shared LLM limits (seed 004's ``RATE_LIMIT_PER_MINUTE`` and ``MAX_CONCURRENT_EXECUTIONS``)
around any ``ModelClient``: refused calls fail fast, for the engine to defer, never to wait."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from cloudagents.domain.errors import LimitReached
from cloudagents.domain.messages import ModelRequest, ModelResponse
from cloudagents.ports.budgets import ConcurrencyLimiter, RateLimiter
from cloudagents.ports.model import ChunkSink, ModelClient
from cloudagents.settings import Settings

Clock = Callable[[], datetime]

DEFAULT_KEY = "llm"
BUSY_RETRY_SECONDS = 5.0
"""What a caller refused for want of a free slot is told to wait: slots free when calls end,
which the limiter cannot foresee, so this is a polling interval, not a promise."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LimitedModel:
    """Admits a call only under both limits, shared by every instance through the limiters.

    - ``calls_per_minute``: at most that many calls per minute window under ``key`` (the
      ``RateLimiter``; its key is ``{key}:calls``, apart from the tool limits' keys).
    - ``max_concurrent``: at most that many calls in flight under ``key`` (the
      ``ConcurrencyLimiter``); the slot is leased for ``lease_seconds`` (longer than the call
      can last, so a killed process frees it when the lease passes) and released when the call
      ends, however it ends.

    A limit of ``None`` is no limit. A refused call raises ``LimitReached``, a
    ``ModelError("rate_limit", ...)`` with ``retry_after``: the seconds until the next minute
    window, or ``busy_retry_seconds`` when every slot is taken. A call refused by the
    per-minute limit gives its slot back.
    """

    def __init__(
        self,
        inner: ModelClient,
        *,
        rate_limiter: RateLimiter | None = None,
        calls_per_minute: int | None = None,
        concurrency: ConcurrencyLimiter | None = None,
        max_concurrent: int | None = None,
        lease_seconds: float = 600.0,
        key: str = DEFAULT_KEY,
        busy_retry_seconds: float = BUSY_RETRY_SECONDS,
        clock: Clock = _utcnow,
    ) -> None:
        if calls_per_minute is not None and rate_limiter is None:
            raise ValueError("calls_per_minute needs a rate_limiter")
        if max_concurrent is not None and concurrency is None:
            raise ValueError("max_concurrent needs a concurrency limiter")
        self.inner = inner
        self.rate_limiter = rate_limiter
        self.calls_per_minute = calls_per_minute
        self.concurrency = concurrency
        self.max_concurrent = max_concurrent
        self.lease_seconds = lease_seconds
        self.key = key
        self.busy_retry_seconds = busy_retry_seconds
        self.clock = clock

    @classmethod
    def from_settings(
        cls,
        inner: ModelClient,
        settings: Settings,
        *,
        rate_limiter: RateLimiter,
        concurrency: ConcurrencyLimiter,
        lease_seconds: float,
        key: str = DEFAULT_KEY,
    ) -> LimitedModel:
        """Limited by ``settings.rate_limit_per_minute`` and ``max_concurrent_executions``."""
        return cls(
            inner,
            rate_limiter=rate_limiter,
            calls_per_minute=settings.rate_limit_per_minute,
            concurrency=concurrency,
            max_concurrent=settings.max_concurrent_executions,
            lease_seconds=lease_seconds,
            key=key,
        )

    async def __call__(
        self, request: ModelRequest, *, on_chunk: ChunkSink | None = None
    ) -> ModelResponse:
        token: str | None = None
        if self.concurrency is not None and self.max_concurrent is not None:
            token = await self.concurrency.acquire(
                self.key, self.max_concurrent, self.lease_seconds
            )
            if token is None:
                raise LimitReached(
                    f"{self.max_concurrent} model calls already in flight "
                    f"(MAX_CONCURRENT_EXECUTIONS, key {self.key!r})",
                    retry_after=self.busy_retry_seconds,
                )
        try:
            if self.rate_limiter is not None and self.calls_per_minute is not None:
                wait = await self.rate_limiter.acquire(
                    f"{self.key}:calls", self.calls_per_minute, self.clock()
                )
                if wait > 0:
                    raise LimitReached(
                        f"{self.calls_per_minute} model calls per minute reached "
                        f"(RATE_LIMIT_PER_MINUTE, key {self.key!r})",
                        retry_after=wait,
                    )
            return await self.inner(request, on_chunk=on_chunk)
        finally:
            if token is not None and self.concurrency is not None:
                await self.concurrency.release(self.key, token)
