"""Fallback providers (seed 004): a ``ModelClient`` that tries a chain of models in order."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cloudagents.domain.errors import ModelError, ModelErrorKind
from cloudagents.domain.messages import ModelRequest, ModelResponse
from cloudagents.ports.model import ChunkSink, ModelClient

log = logging.getLogger(__name__)

DEFAULT_FALLBACK_ON: frozenset[ModelErrorKind] = frozenset(
    {"rate_limit", "server", "connection", "timeout", "auth"}
)
"""Errors a different provider may not have. ``bad_request`` is left out: the same request is
most likely just as wrong for the next model, and trying it there only adds cost."""


@dataclass(frozen=True)
class Candidate:
    """One model of the chain: the name it is asked for by and the client that calls it."""

    name: str
    client: ModelClient


class FallbackModel:
    """Calls the first candidate; on a ``ModelError`` whose kind is in ``fall_back_on``, the next.

    Each candidate is asked for its own model name (``request.model`` is replaced), and the reply
    says in ``ModelResponse.model`` which one answered, so the caller prices the call on it.

    A candidate that already streamed text to ``on_chunk`` before failing is not followed by
    another: the listener would see two replies spliced together. Its error is raised as is, for
    the retry layer around this one to act on.

    ``failures`` lists each candidate's error of the last call, for reporting.
    """

    def __init__(
        self,
        candidates: Sequence[Candidate],
        *,
        fall_back_on: Collection[ModelErrorKind] = DEFAULT_FALLBACK_ON,
    ) -> None:
        if not candidates:
            raise ValueError("FallbackModel needs at least one candidate")
        self.candidates = list(candidates)
        self.fall_back_on = frozenset(fall_back_on)
        self.failures: list[tuple[str, ModelError]] = []

    async def __call__(
        self, request: ModelRequest, *, on_chunk: ChunkSink | None = None
    ) -> ModelResponse:
        self.failures = []
        last = len(self.candidates) - 1
        for index, candidate in enumerate(self.candidates):
            streamed = False

            async def sink(text: str, _sink: ChunkSink | None = on_chunk) -> None:
                nonlocal streamed
                streamed = True
                if _sink is not None:
                    await _sink(text)

            try:
                reply = await candidate.client(
                    request.model_copy(update={"model": candidate.name}),
                    on_chunk=sink if on_chunk is not None else None,
                )
            except ModelError as error:
                self.failures.append((candidate.name, error))
                if index == last or streamed or error.kind not in self.fall_back_on:
                    if index == 0:
                        raise
                    raise ModelError(
                        error.kind,
                        f"{len(self.failures)} of {len(self.candidates)} models tried, none "
                        "answered: "
                        + "; ".join(f"{name}: {failure}" for name, failure in self.failures),
                        retry_after=error.retry_after,
                    ) from error
                log.warning(
                    "model %s failed (%s); falling back to %s",
                    candidate.name,
                    error.kind,
                    self.candidates[index + 1].name,
                )
                continue
            return reply.model_copy(update={"model": candidate.name})
        raise AssertionError("unreachable: the loop returns or raises")

    async def aclose(self) -> None:
        """Close the candidates that hold connections."""
        for candidate in self.candidates:
            close = getattr(candidate.client, "aclose", None)
            if close is not None:
                await close()
