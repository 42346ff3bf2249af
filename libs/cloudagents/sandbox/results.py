"""What a sandboxed call may use (``SandboxLimits``) and what it produced (``SandboxResult``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from cloudagents.domain.base import Model

ErrorKind = Literal[
    "timeout",
    "memory",
    "output_too_large",
    "import_not_allowed",
    "sandbox_unavailable",
    "error",
]
LimitName = Literal["wall_clock", "cpu", "memory", "stdout", "stderr", "result_size"]


class SandboxLimits(Model):
    """Per-call resource limits; each maps to one enforcement mechanism in the launcher."""

    memory_mb: int = Field(default=512, ge=32, le=16384)
    """Address space of the sandboxed process (``RLIMIT_AS``); Python itself needs about 30 MB."""
    timeout_s: float = Field(default=30.0, gt=0, le=900)
    """Wall-clock limit: the whole process group is killed; CPU seconds are capped at the same."""
    max_result_bytes: int = Field(default=256 * 1024, ge=64)
    """Size of the JSON-encoded return value."""
    max_stdout_bytes: int = Field(default=64 * 1024, ge=64)
    """The user's own prints go to stderr; stdout carries only the result line."""
    max_stderr_bytes: int = Field(default=64 * 1024, ge=64)
    """Prints, warnings and tracebacks; more than this kills the call as ``output_too_large``."""
    tmpfs_mb: int = Field(default=32, ge=1, le=1024)
    """Size of the fresh, memory-backed ``/tmp``; its pages are not counted by RLIMIT_AS."""
    max_file_mb: int = Field(default=10, ge=1, le=1024)
    """Largest file the code may write (``RLIMIT_FSIZE``)."""
    max_processes: int = Field(default=64, ge=4, le=4096)
    """Processes and threads of the slot's uid (``RLIMIT_NPROC``): stops fork bombs."""
    max_open_files: int = Field(default=64, ge=16, le=4096)


class SandboxResult(Model):
    """The typed outcome of one sandboxed call; ``message`` is written for the model to read."""

    ok: bool
    value: JsonValue = None
    """The entry function's JSON return value when ``ok``."""
    error_kind: ErrorKind | None = None
    message: str = ""
    """Empty when ``ok``; otherwise what went wrong, short enough to hand to the model."""
    duration_ms: float = 0.0
    limits_hit: list[LimitName] = Field(default_factory=list)
    output_bytes: int = 0
    """Bytes the call wrote to stdout and stderr together."""
    stderr_tail: str = ""
    """The last few hundred characters of stderr (prints, tracebacks), for debugging."""

    @classmethod
    def failure(
        cls,
        kind: ErrorKind,
        message: str,
        *,
        duration_ms: float = 0.0,
        limits_hit: list[LimitName] | None = None,
        output_bytes: int = 0,
        stderr_tail: str = "",
    ) -> SandboxResult:
        return cls(
            ok=False,
            error_kind=kind,
            message=message,
            duration_ms=duration_ms,
            limits_hit=limits_hit or [],
            output_bytes=output_bytes,
            stderr_tail=stderr_tail,
        )
