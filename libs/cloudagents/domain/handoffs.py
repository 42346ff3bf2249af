"""Handoffs by capability (seed 000 "Agent Handoffs", seed 002 capability routing)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from cloudagents.domain.base import Model, Persisted

OfferStatus = Literal["open", "claimed", "expired"]


class HandoffTarget(Model):
    """A model's request to hand the task to an agent having all ``required_capabilities``."""

    required_capabilities: list[str] = Field(min_length=1, max_length=32)
    ttl_seconds: int = Field(default=300, gt=0, le=7 * 24 * 3600)
    message: str | None = None
    preferred_agent: str | None = None


class HandoffOffer(Persisted):
    """A handoff waiting to be claimed, in ``handoff_offers/{offer_id}``."""

    offer_id: str
    source_run_id: str
    source_agent: str
    required_capabilities: list[str]
    message: str | None = None
    preferred_agent: str | None = None
    context_uri: str | None = None
    chain_depth: int = Field(default=1, ge=1)
    status: OfferStatus = "open"
    created_at: datetime
    expires_at: datetime
    claimed_by_agent: str | None = None
    target_run_id: str | None = None
    claimed_at: datetime | None = None
    expired_at: datetime | None = None
    expiry_task: str | None = None


class OfferMessage(Persisted):
    """The body of a ``{ws}-handoff`` message and of an expiry task."""

    offer_id: str = Field(min_length=1, max_length=300)
