"""Errors the library raises on purpose; ``ModelError.kind`` is what retry policy acts on."""

from __future__ import annotations

from typing import Literal

ModelErrorKind = Literal["rate_limit", "timeout", "auth", "bad_request", "server", "connection"]
RETRYABLE_BY_DEFAULT: tuple[ModelErrorKind, ...] = ("rate_limit", "timeout", "server", "connection")


class CloudAgentsError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigurationError(CloudAgentsError):
    """Settings or definitions that can never work (missing API key, unknown provider...)."""


class ModelError(CloudAgentsError):
    """A model provider call failed; ``kind`` says how, so retry config can decide."""

    def __init__(self, kind: ModelErrorKind, message: str, *, retry_after: float | None = None):
        super().__init__(f"{kind}: {message}")
        self.kind: ModelErrorKind = kind
        self.retry_after = retry_after


class LimitReached(ModelError):
    """Our own shared limit refused the call before it reached the provider (``LimitedModel``).

    Always kind ``rate_limit`` with ``retry_after`` set. Unlike a provider's 429 it costs
    nothing and says exactly when to come back, so the engine defers the step by
    ``retry_after`` rather than retrying in place or failing the run.
    """

    def __init__(self, message: str, *, retry_after: float):
        super().__init__("rate_limit", message, retry_after=retry_after)
        self.retry_after: float = retry_after


class PermanentMessageError(CloudAgentsError):
    """A message that can never be applied (bad payload, unknown run): dead-letter and ack it."""


class TransientError(CloudAgentsError):
    """Try again later (contention, a dependency briefly down): the handler asks for redelivery."""


class NewerSchemaVersion(TransientError, ValueError):
    """A record written by a newer release (its ``schema_version`` is past ours). Retryable:
    during a rolling deploy the message is redelivered until an instance of the new release
    takes it, so live traffic is never dead-lettered for being new."""
