"""``Sandbox``: run one user function per fresh bubblewrap sandbox, fail closed.

A call writes the user's code to a private host directory, launches the recipe from
``launcher.py`` under a free uid slot, feeds the JSON request on stdin and reads at most the
capped number of bytes from stdout and stderr. At the wall-clock limit, or when an output cap is
crossed, the whole process group is killed; ``--die-with-parent`` then tears down the sandbox's
PID namespace, so nothing the code started survives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import tempfile
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from cloudagents.domain.base import Model
from cloudagents.sandbox.canary import CANARY_CODE, CANARY_ENTRY, CANARY_IMPORTS, canary_problems
from cloudagents.sandbox.launcher import (
    BwrapLauncher,
    LaunchFiles,
    UidPool,
    become_subreaper,
    reap_zombies,
)
from cloudagents.sandbox.results import ErrorKind, LimitName, SandboxLimits, SandboxResult
from cloudagents.sandbox.seccomp import UnsupportedArchitecture, build_filter

_RUNNER_SOURCE = Path(__file__).with_name("runner.py")
_STDERR_TAIL = 600
# How long to wait for pipes to close after a kill before giving up on them.
_DRAIN_AFTER_KILL_S = 2.0
# How long a slot waits for its sandbox's processes to vanish before killing stragglers.
_SWEEP_S = 1.0


class SandboxStatus(Model):
    """The start-up canary's verdict; ``available`` False means every call fails closed."""

    available: bool
    reason: str = ""
    report: dict[str, JsonValue] = {}


@dataclass
class _Capture:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    total: int = 0
    exceeded: bool = False


class Sandbox:
    """The boundary for user-stored functions. Create one per process and share it.

    ``run`` never executes code outside the sandbox: if the canary in ``check`` fails (or cannot
    run: not root, bwrap missing, unsupported architecture), every call returns
    ``sandbox_unavailable``.
    """

    def __init__(
        self,
        *,
        launcher: BwrapLauncher | None = None,
        pool: UidPool | None = None,
    ) -> None:
        self._launcher = launcher if launcher is not None else BwrapLauncher.discover()
        self._pool = pool if pool is not None else UidPool()
        self._status: SandboxStatus | None = None
        self._check_lock: asyncio.Lock | None = None
        self._workdir: Path | None = None
        self._seccomp: bytes | None = None
        self._setup_problem = ""
        self.stragglers_killed = 0
        """Processes of a slot uid still alive after a call and killed by the sweep: the PID
        namespace should make this stay 0; the sweep is a second line, not the mechanism."""
        try:
            self._seccomp = build_filter()
        except UnsupportedArchitecture as exc:
            self._setup_problem = str(exc)

    @property
    def uids(self) -> tuple[int, ...]:
        return self._pool.uids

    @property
    def status(self) -> SandboxStatus | None:
        """The cached canary verdict, or None before ``check`` ran."""
        return self._status

    async def check(self, *, force: bool = False) -> SandboxStatus:
        """Run the canary once (or again with ``force``) and cache the verdict."""
        if self._check_lock is None:
            self._check_lock = asyncio.Lock()
        async with self._check_lock:
            if self._status is None or force:
                self._status = await self._run_canary()
            return self._status

    async def _run_canary(self) -> SandboxStatus:
        problem = self._setup_problem
        if not problem and self._launcher is None:
            problem = "bwrap, setpriv, prlimit, env or a python3 under /usr is missing"
        if not problem and os.geteuid() != 0:
            problem = "the service is not root, so it cannot drop calls to per-slot uids"
        if problem:
            return SandboxStatus(available=False, reason=problem)
        become_subreaper()
        result = await self._run_unchecked(
            CANARY_CODE,
            CANARY_ENTRY,
            {},
            limits=SandboxLimits(timeout_s=10),
            allowed_imports=CANARY_IMPORTS,
        )
        if not result.ok:
            return SandboxStatus(
                available=False,
                reason=f"canary failed: {result.error_kind}: {result.message} {result.stderr_tail}",
            )
        report = result.value if isinstance(result.value, dict) else {}
        problems = canary_problems(result.value, self._pool.uids)
        if problems:
            return SandboxStatus(available=False, reason="; ".join(problems), report=report)
        return SandboxStatus(available=True, report=report)

    async def run(
        self,
        code: str,
        entry: str,
        args: dict[str, Any],
        *,
        limits: SandboxLimits | None = None,
        allowed_imports: Iterable[str] = (),
        is_async: bool = False,
    ) -> SandboxResult:
        """Execute ``entry(**args)`` from ``code`` in a fresh sandbox; never raises for the code.

        ``is_async`` is informational: the runner awaits whatever awaitable the entry returns.
        """
        del is_async
        status = await self.check()
        if not status.available:
            return SandboxResult.failure(
                "sandbox_unavailable", f"the function sandbox is unavailable: {status.reason}"
            )
        return await self._run_unchecked(
            code, entry, args, limits=limits or SandboxLimits(), allowed_imports=allowed_imports
        )

    def close(self) -> None:
        """Remove the host directory holding the runner copy (calls after this recreate it)."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def _sweep(self, uid: int) -> None:
        """Before the slot is reused: reap its zombies, and kill anything of it still alive."""
        deadline = time.monotonic() + _SWEEP_S
        while remaining := reap_zombies(uid):
            if time.monotonic() > deadline:
                for process in remaining:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(process.pid, signal.SIGKILL)
                self.stragglers_killed += len(remaining)
                deadline = time.monotonic() + _SWEEP_S
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)

    def _runner_path(self) -> Path:
        # One copy of the runner per Sandbox, in a directory the slot uids can read.
        if self._workdir is None or not self._workdir.exists():
            self._workdir = Path(tempfile.mkdtemp(prefix="cloudagents-sandbox-"))
            self._workdir.chmod(0o755)
            # Removed when the Sandbox goes or the process exits, not only on close(): every
            # process that ran a call left one behind (hundreds in a day of test runs).
            weakref.finalize(self, shutil.rmtree, str(self._workdir), True)
            runner = self._workdir / "runner.py"
            shutil.copyfile(_RUNNER_SOURCE, runner)
            runner.chmod(0o644)
        return self._workdir / "runner.py"

    async def _run_unchecked(
        self,
        code: str,
        entry: str,
        args: dict[str, Any],
        *,
        limits: SandboxLimits,
        allowed_imports: Iterable[str],
    ) -> SandboxResult:
        if self._launcher is None or self._seccomp is None:
            return SandboxResult.failure("sandbox_unavailable", "the sandbox is not set up")
        request = {
            "entry": entry,
            "args": args,
            "allowed_imports": sorted(set(allowed_imports)),
            "max_result_bytes": limits.max_result_bytes,
        }
        runner = self._runner_path()
        code_file = _write_code(runner.parent, code)
        try:
            async with self._pool.slot() as uid:
                try:
                    return await self._launch(uid, runner, code_file, request, limits)
                finally:
                    await self._sweep(uid)
        finally:
            shutil.rmtree(code_file.parent, ignore_errors=True)

    async def _launch(
        self,
        uid: int,
        runner: Path,
        code_file: Path,
        request: dict[str, Any],
        limits: SandboxLimits,
    ) -> SandboxResult:
        assert self._launcher is not None and self._seccomp is not None
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, self._seccomp)
        finally:
            os.close(write_fd)
        files = LaunchFiles(runner=runner, code=code_file, seccomp_fd=read_fd)
        started = time.perf_counter()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._launcher.argv(uid, limits, files),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(read_fd,),
                start_new_session=True,
            )
        except OSError as exc:
            return SandboxResult.failure("sandbox_unavailable", f"cannot start bwrap: {exc}")
        finally:
            os.close(read_fd)
        out = _Capture(limits.max_stdout_bytes)
        err = _Capture(limits.max_stderr_bytes)

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

        async def feed() -> None:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                process.stdin.write(json.dumps(request).encode("utf-8"))
                await process.stdin.drain()
                process.stdin.close()

        async def capture(stream: asyncio.StreamReader | None, into: _Capture) -> None:
            assert stream is not None
            while chunk := await stream.read(65536):
                into.total += len(chunk)
                room = into.limit - len(into.data)
                into.data += chunk[: max(room, 0)]
                if into.total > into.limit and not into.exceeded:
                    into.exceeded = True
                    kill()

        work = asyncio.gather(
            feed(), capture(process.stdout, out), capture(process.stderr, err), process.wait()
        )
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(work), timeout=limits.timeout_s)
        except TimeoutError:
            timed_out = True
            kill()
            try:
                await asyncio.wait_for(work, timeout=_DRAIN_AFTER_KILL_S)
            except TimeoutError:
                work.cancel()
        duration_ms = (time.perf_counter() - started) * 1000
        return _interpret(
            returncode=process.returncode,
            out=out,
            err=err,
            timed_out=timed_out,
            limits=limits,
            duration_ms=duration_ms,
        )


def _write_code(parent: Path, code: str) -> Path:
    """A private directory per call holding the code, readable by the slot uid (bound read-only)."""
    calldir = Path(tempfile.mkdtemp(prefix="call-", dir=parent))
    calldir.chmod(0o755)
    code_file = calldir / "function.py"
    code_file.write_text(code, encoding="utf-8")
    code_file.chmod(0o644)
    return code_file


def _interpret(
    *,
    returncode: int | None,
    out: _Capture,
    err: _Capture,
    timed_out: bool,
    limits: SandboxLimits,
    duration_ms: float,
) -> SandboxResult:
    """Map what the process did to a typed result, the most specific cause first."""
    stderr_text = err.data.decode("utf-8", errors="replace")
    common: dict[str, Any] = {
        "duration_ms": duration_ms,
        "output_bytes": out.total + err.total,
        "stderr_tail": stderr_text[-_STDERR_TAIL:],
    }
    if timed_out:
        return SandboxResult.failure(
            "timeout",
            f"the function ran longer than {limits.timeout_s:g}s and was killed",
            limits_hit=["wall_clock"],
            **common,
        )
    if out.exceeded or err.exceeded:
        hit: list[LimitName] = []
        if out.exceeded:
            hit.append("stdout")
        if err.exceeded:
            hit.append("stderr")
        cap = limits.max_stdout_bytes if out.exceeded else limits.max_stderr_bytes
        return SandboxResult.failure(
            "output_too_large",
            f"the function wrote more than {cap} bytes of output and was killed",
            limits_hit=hit,
            **common,
        )
    # bwrap exits 128+N when the sandboxed process died of signal N.
    signal_number = returncode - 128 if returncode is not None and returncode > 128 else None
    if returncode is not None and returncode < 0:
        signal_number = -returncode
    # RLIMIT_CPU sends SIGXCPU at the soft limit and SIGKILL at the hard one; a SIGKILL long
    # before the CPU limit came from elsewhere (the code killing itself) and is an error.
    cpu_budget_ms = max(1, math.ceil(limits.timeout_s)) * 1000
    cpu_kill = signal_number == signal.SIGKILL and duration_ms >= cpu_budget_ms
    if (signal_number == signal.SIGXCPU or cpu_kill) and not out.data:
        return SandboxResult.failure(
            "timeout",
            f"the function used more than {limits.timeout_s:g}s of CPU and was killed",
            limits_hit=["cpu"],
            **common,
        )
    lines = out.data.decode("utf-8", errors="replace").strip().splitlines()
    try:
        reply = json.loads(lines[-1]) if lines else None
    except ValueError:
        reply = None
    if isinstance(reply, dict) and reply.get("ok") is True:
        return SandboxResult(ok=True, value=reply.get("value"), **common)
    if isinstance(reply, dict) and isinstance(reply.get("kind"), str):
        kind = _error_kind(reply["kind"])
        hits: dict[str, list[LimitName]] = {
            "memory": ["memory"],
            "output_too_large": ["result_size"],
        }
        limit_hit = hits.get(kind, [])
        return SandboxResult.failure(
            kind, str(reply.get("message", "")), limits_hit=limit_hit, **common
        )
    if "MemoryError" in stderr_text or "Cannot allocate memory" in stderr_text:
        return SandboxResult.failure(
            "memory",
            f"the function exceeded its {limits.memory_mb} MB memory limit",
            limits_hit=["memory"],
            **common,
        )
    how = f"signal {signal_number}" if signal_number else f"exit code {returncode}"
    return SandboxResult.failure(
        "error", f"the function's process ended ({how}) without a result", **common
    )


def _error_kind(kind: str) -> ErrorKind:
    known: dict[str, ErrorKind] = {
        "memory": "memory",
        "output_too_large": "output_too_large",
        "import_not_allowed": "import_not_allowed",
    }
    return known.get(kind, "error")


_shared: Sandbox | None = None


def shared_sandbox() -> Sandbox:
    """The process's one ``Sandbox`` (its uid slots are the process's: two ``Sandbox`` objects
    in one process would hand the same uid to two concurrent calls)."""
    global _shared
    if _shared is None:
        _shared = Sandbox()
    return _shared
