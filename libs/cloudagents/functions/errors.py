"""Typed errors of the function store."""

from __future__ import annotations


class FunctionValidationError(ValueError):
    """Stored code was refused before anything ran: ``line`` (1-based, 0 for the whole source)
    and a ``reason`` an author or a model can act on."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.line = line
        self.reason = reason


class FunctionNotFound(LookupError):
    """No function by that name, or no version of it with that hash."""
