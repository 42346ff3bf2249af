"""``FunctionConfig``: seed 002's per-function settings, with its defaults."""

from __future__ import annotations

from pydantic import Field, field_validator

from cloudagents.domain.base import Model
from cloudagents.sandbox.results import SandboxLimits

DEFAULT_ALLOWED_IMPORTS = (
    "json",
    "datetime",
    "math",
    "re",
    "collections",
    "itertools",
    "functools",
)


class FunctionConfig(Model):
    """How a stored function may run. ``allowed_imports`` is a policy on top of the sandbox,
    never the boundary: ``functools`` (a default) is one of RestrictedPython's escape aids."""

    version: str = "1.0"
    """The author's label; the identity of a version is its content hash."""
    is_async: bool = False
    requires_context: bool = False
    """The entry function takes a ``context`` parameter, filled by the store, not the model."""
    memory_limit: int = Field(default=512, ge=32, le=16384)
    """MB of address space."""
    timeout: float = Field(default=30.0, gt=0, le=900)
    """Seconds of wall clock (and of CPU)."""
    safe_mode: bool = True
    """Refuse dunder attribute access, frame walks and dynamic code (eval/exec/compile)."""
    allowed_imports: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_IMPORTS))

    @field_validator("allowed_imports")
    @classmethod
    def _top_level_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.isidentifier():
                raise ValueError(f"allowed_imports takes top-level module names, not {name!r}")
        return sorted(set(value))

    def limits(self) -> SandboxLimits:
        return SandboxLimits(memory_mb=self.memory_limit, timeout_s=self.timeout)
