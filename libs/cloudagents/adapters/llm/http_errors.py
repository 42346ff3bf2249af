"""How HTTP-speaking provider SDKs fail, in our ``ModelErrorKind`` terms (shared by adapters)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from cloudagents.domain.errors import ModelErrorKind

MAX_ERROR_TEXT = 500
HINTED: tuple[ModelErrorKind, ...] = ("rate_limit", "server", "timeout")
"""Kinds whose ``retry-after`` hint is worth keeping."""


def status_kind(status: int) -> ModelErrorKind:
    if status == 429:
        return "rate_limit"
    if status in (401, 402, 403):
        return "auth"
    if status == 408:
        return "timeout"
    if status == 409 or status >= 500:
        # 409 is a provider-side conflict that clears on retry; 529 (overloaded) is >= 500.
        return "server"
    return "bad_request"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, ``retry-after`` seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def transport_kind(exc: Exception) -> ModelErrorKind | None:
    """Kind of a raw HTTP-transport error the SDK let through while reading a stream.

    Matched by class name so it holds whichever httpx flavour the installed SDK uses.
    """
    transport = [c.__name__ for c in type(exc).__mro__ if c.__module__.startswith("httpx")]
    if "TimeoutException" in transport:
        return "timeout"
    if "TransportError" in transport or "StreamError" in transport:
        return "connection"
    return None


def describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."
