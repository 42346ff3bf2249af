"""The command line that puts one call inside the boundary, and the uid slots it runs under.

The recipe (docs/functions.md, designs/functions.md), outermost first:

- ``env -i`` so that bwrap's own process, visible as ``/proc/1`` inside, carries no secret
  (``--clearenv`` clears only bwrap's child);
- ``setpriv`` to an unprivileged uid per concurrent slot, because root is exempt from
  ``RLIMIT_NPROC`` and a fork bomb would otherwise run free; ``--no-new-privs`` for good measure;
- ``prlimit`` for address space, CPU seconds, processes, file size, open files and no core dumps;
- ``bwrap`` with every namespace unshared (no network but a private loopback), read-only
  ``/usr``, a fresh sized tmpfs ``/tmp`` (the only writable path: ``/`` and ``/dev`` are
  remounted read-only), the code bound read-only, no capabilities, no nested user namespaces
  and the seccomp filter from ``seccomp.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cloudagents.sandbox.results import SandboxLimits

SANDBOX_DIR = "/sandbox"
RUNNER_PATH = f"{SANDBOX_DIR}/runner.py"
CODE_PATH = f"{SANDBOX_DIR}/function.py"
# / is an empty tmpfs inside bwrap; these re-create Debian's merged-/usr symlinks in it.
_USR_SYMLINKS = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"))
_OPTIONAL_SYMLINKS = (("usr/lib64", "/lib64"), ("usr/lib32", "/lib32"))


def find_interpreter() -> str | None:
    """A python3 under /usr (the only tree bound into the sandbox), or None."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True)
class LaunchFiles:
    """Host paths bound read-only into one call's sandbox."""

    runner: Path
    code: Path
    seccomp_fd: int


@dataclass(frozen=True)
class BwrapLauncher:
    """Builds the argv of one sandboxed call.

    ``clear_env`` exists for one reason: the escape suite turns it off to show that the
    environment probe then *does* leak, i.e. that the suite can fail. Production never sets it.
    """

    interpreter: str = "/usr/bin/python3"
    env: str = "/usr/bin/env"
    setpriv: str = "/usr/bin/setpriv"
    prlimit: str = "/usr/bin/prlimit"
    bwrap: str = "/usr/bin/bwrap"
    clear_env: bool = True

    @classmethod
    def discover(cls) -> BwrapLauncher | None:
        """The launcher with tools found on PATH, or None when one of them is missing."""
        found = {name: shutil.which(name) for name in ("env", "setpriv", "prlimit", "bwrap")}
        interpreter = find_interpreter()
        if interpreter is None or any(path is None for path in found.values()):
            return None
        return cls(
            interpreter=interpreter,
            env=found["env"] or "",
            setpriv=found["setpriv"] or "",
            prlimit=found["prlimit"] or "",
            bwrap=found["bwrap"] or "",
        )

    def argv(self, uid: int, limits: SandboxLimits, files: LaunchFiles) -> list[str]:
        cpu_seconds = max(1, math.ceil(limits.timeout_s))
        memory = limits.memory_mb * 1024 * 1024
        command = [self.env, "-i"] if self.clear_env else [self.env]
        command += [
            self.setpriv,
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--no-new-privs",
            self.prlimit,
            f"--as={memory}",
            # Soft limit sends SIGXCPU, the hard one a second later SIGKILL.
            f"--cpu={cpu_seconds}:{cpu_seconds + 1}",
            f"--nproc={limits.max_processes}",
            f"--fsize={limits.max_file_mb * 1024 * 1024}",
            f"--nofile={limits.max_open_files}",
            "--core=0",
            self.bwrap,
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for target, link in _USR_SYMLINKS:
            command += ["--symlink", target, link]
        for target, link in _OPTIONAL_SYMLINKS:
            if os.path.exists(f"/{target}"):
                command += ["--symlink", target, link]
        command += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(limits.tmpfs_mb * 1024 * 1024),
            "--tmpfs",
            "/tmp",
            "--ro-bind",
            str(files.runner),
            RUNNER_PATH,
            "--ro-bind",
            str(files.code),
            CODE_PATH,
            # Only /tmp is writable: the root and /dev are unsized tmpfs mounts that code could
            # otherwise fill with the host's memory.
            "--remount-ro",
            "/dev",
            "--remount-ro",
            "/",
            "--chdir",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--disable-userns",
            "--seccomp",
            str(files.seccomp_fd),
            self.interpreter,
            "-I",
            "-S",
            RUNNER_PATH,
            CODE_PATH,
        ]
        return command


SLOT_LOCK_DIR = os.path.join(tempfile.gettempdir(), "cloudagents-sandbox-slots")


def _lock_uid(uid: int) -> int | None:
    """An exclusive host-wide lock on ``uid`` (its file descriptor), or ``None`` if another
    process (or pool) holds it."""
    os.makedirs(SLOT_LOCK_DIR, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(SLOT_LOCK_DIR, f"{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class UidPool:
    """One unprivileged uid per concurrent slot; a uid runs one call at a time on this host.

    Per-uid limits (``RLIMIT_NPROC``) and the orphan check (which kills what a slot's uid left
    running) both rely on a uid never being shared by two calls at once, in any process: every
    service process has a pool over the same uids, so a slot also holds the uid's ``flock``
    (``SLOT_LOCK_DIR``) while its call runs, and a uid another process holds is passed over.
    """

    def __init__(self, first_uid: int = 61000, size: int = 4) -> None:
        if first_uid < 1000 or size < 1:
            raise ValueError("uids must be unprivileged (>= 1000) and the pool non-empty")
        self.uids = tuple(range(first_uid, first_uid + size))
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for uid in self.uids:
            self._free.put_nowait(uid)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        delay = 0.01
        while True:
            uid = await self._free.get()
            held = _lock_uid(uid)
            if held is not None:
                break
            self._free.put_nowait(uid)  # another process runs a call as this uid: try the next
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        try:
            yield uid
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
            os.close(held)
            self._free.put_nowait(uid)


@dataclass(frozen=True)
class HostProcess:
    """One line of /proc as the sweep after a call needs it."""

    pid: int
    ppid: int
    zombie: bool


def host_processes_of_uid(uid: int) -> list[HostProcess]:
    """Host processes whose real uid is ``uid``."""
    found: list[HostProcess] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # the process exited while we looked
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) != uid:
            continue
        found.append(
            HostProcess(
                pid=int(entry.name),
                ppid=int(fields.get("PPid", "0")),
                zombie=fields.get("State", "").strip().startswith("Z"),
            )
        )
    return found


def processes_of_uid(uid: int) -> list[int]:
    """Pids of live (non-zombie) host processes of ``uid``: after a call there must be none."""
    return [p.pid for p in host_processes_of_uid(uid) if not p.zombie]


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER).

    bwrap's outer process exits as soon as it has the exit status, a moment before the
    sandbox's PID-1 helper; that helper is then reparented. On Cloud Run the service is PID 1
    and never reaps, so without this and ``reap_zombies`` every call would leave a zombie of its
    slot uid, and after ``max_processes`` calls ``RLIMIT_NPROC`` would refuse the next fork.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_zombies(uid: int) -> list[HostProcess]:
    """Reap the zombies of ``uid`` that are our children; return the processes still there.

    Only pids that asyncio did not start are reaped here (the sandbox's PID-1 helper), so this
    never steals an exit status from asyncio's child watcher.
    """
    remaining: list[HostProcess] = []
    for process in host_processes_of_uid(uid):
        if process.zombie and process.ppid == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(process.pid, os.WNOHANG)
            continue
        if not process.zombie:
            remaining.append(process)
    return remaining
