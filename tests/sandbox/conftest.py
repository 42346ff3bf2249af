"""Fixtures of the escape suite: the real sandbox, and the tally of escape attempts.

Every probe records whether it escaped; the terminal summary prints
``sandbox escapes: N tried, M succeeded`` and the session fails if M > 0.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cloudagents.sandbox import Sandbox, SandboxLimits, SandboxResult

# Modules the probes use to attack; the allow-list is not what is under test here.
ATTACK_IMPORTS = (
    "os",
    "sys",
    "socket",
    "time",
    "ctypes",
    "fcntl",
    "termios",
    "subprocess",
    "signal",
    "errno",
    "json",
    "pathlib",
)


def sandbox_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the sandbox suite needs root (to drop each call to a per-slot uid)"
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (make install installs it when run as root)"
    return None


@dataclass
class EscapeTally:
    """Escape attempts of this session: (probe name, escaped?)."""

    attempts: list[tuple[str, bool]] = field(default_factory=list)

    def record(self, name: str, escaped: bool) -> None:
        self.attempts.append((name, escaped))

    @property
    def succeeded(self) -> list[str]:
        return [name for name, escaped in self.attempts if escaped]


TALLY = EscapeTally()


@dataclass
class Prober:
    """Runs one escape probe through the real sandbox and records its verdict."""

    sandbox: Sandbox
    tally: EscapeTally

    async def attempt(
        self,
        name: str,
        code: str,
        *,
        escaped: Callable[[SandboxResult], bool],
        entry: str = "probe",
        args: dict[str, Any] | None = None,
        imports: Iterable[str] = ATTACK_IMPORTS,
        limits: SandboxLimits | None = None,
    ) -> SandboxResult:
        result = await self.sandbox.run(
            code, entry, args or {}, limits=limits, allowed_imports=imports
        )
        self.record(name, escaped(result), result)
        return result

    def record(self, name: str, escaped: bool, evidence: object = None) -> None:
        self.tally.record(name, escaped)
        assert not escaped, f"sandbox escape {name!r}: {evidence}"


@pytest.fixture(scope="session")
async def sandbox() -> AsyncIterator[Sandbox]:
    reason = sandbox_skip_reason()
    if reason:
        pytest.skip(reason)
    box = Sandbox()
    status = await box.check()
    # Root with bwrap installed: an unavailable sandbox is a failure here, not a skip.
    assert status.available, f"sandbox canary failed: {status.reason}"
    yield box
    box.close()


@pytest.fixture
def prober(sandbox: Sandbox) -> Prober:
    return Prober(sandbox, TALLY)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY.attempts:
        return
    line = f"sandbox escapes: {len(TALLY.attempts)} tried, {len(TALLY.succeeded)} succeeded"
    terminalreporter.write_sep("=", line)
    for name in TALLY.succeeded:
        terminalreporter.write_line(f"  escaped: {name}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if TALLY.succeeded:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
