"""The escape suite: each probe tries one way out of the sandbox and states what must happen.

A probe "escapes" when it reaches something of the host: a secret, a file, a socket, a process
that outlives the call, or resources beyond its limits. Every probe is recorded in the tally
printed at the end (``sandbox escapes: N tried, M succeeded``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudagents.functions import FunctionStore, InMemoryFunctionRepository
from cloudagents.sandbox import Sandbox, SandboxLimits, SandboxResult, processes_of_uid
from tests.sandbox.conftest import Prober

SECRET = f"cloudagents-fake-secret-{uuid.uuid4().hex}"
CHECKOUT = str(Path(__file__).resolve().parents[2])
# The host's first passwd line: seeing it from inside would mean the host's /etc leaked.
HOST_PASSWD = Path("/etc/passwd").read_text().splitlines()[0]


@pytest.fixture(autouse=True)
def _secret_in_parent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A secret the service process holds, as Cloud Run injects them: it must never be visible.
    monkeypatch.setenv("CLOUDAGENTS_PROBE_SECRET", SECRET)


def _leaks(result: SandboxResult, *needles: str) -> bool:
    text = f"{result.value!r} {result.message} {result.stderr_tail}"
    return any(needle in text for needle in needles)


# ---- secrets and host files -------------------------------------------------------------


async def test_environment_and_proc_environ(prober: Prober) -> None:
    code = """
import os
def probe():
    seen = {"env": dict(os.environ)}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    seen[pid] = f.read().decode(errors="replace")
            except OSError as exc:
                seen[pid] = str(exc)
    return seen
"""
    result = await prober.attempt(
        "env and /proc/*/environ", code, escaped=lambda r: _leaks(r, SECRET)
    )
    assert result.ok and isinstance(result.value, dict)
    assert "1" in result.value, "the probe should see bwrap as pid 1 and read its (empty) environ"


async def test_host_files(prober: Prober) -> None:
    code = f'''
import os
def probe():
    seen = {{}}
    for path in ["/etc/passwd", "/etc/shadow", "/root", "{CHECKOUT}", "{CHECKOUT}/Makefile",
                 "/proc/1/root/etc/passwd", "/proc/1/cwd", "/home", "/work"]:
        try:
            seen[path] = os.listdir(path) if os.path.isdir(path) else open(path).read()
        except OSError as exc:
            seen[path] = "denied: " + type(exc).__name__
    return seen
'''

    def read_something(r: SandboxResult) -> bool:
        # The keys are the paths asked for; only what came back (the values) can leak.
        values = list(r.value.values()) if isinstance(r.value, dict) else [r.value]
        return any(
            needle in str(values) for needle in (HOST_PASSWD, ".PHONY", "pyproject.toml", ".bashrc")
        ) or any(isinstance(v, list) and v for v in values)

    result = await prober.attempt(
        "host files (/etc/passwd, /root, checkout)", code, escaped=read_something
    )
    assert result.ok


async def test_writes_outside_tmp(prober: Prober) -> None:
    marker = f"probe-{uuid.uuid4().hex}"
    code = f"""
def probe():
    written = []
    for directory in ["/", "/usr", "/usr/lib", "/sandbox", "/dev", "/bin", "/tmp"]:
        try:
            with open(directory.rstrip("/") + "/{marker}", "w") as f:
                f.write("x")
            written.append(directory)
        except OSError:
            pass
    return written
"""
    result = await prober.attempt(
        "writes outside /tmp",
        code,
        escaped=lambda r: r.value != ["/tmp"] or Path(f"/usr/{marker}").exists(),
    )
    assert result.value == ["/tmp"]


# ---- network ---------------------------------------------------------------------------

_CONNECT = """
import socket
def probe(family: str, host: str, port: int):
    fam = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}[family]
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(host if family == "unix" else (host, port))
        return "connected"
    except OSError as exc:
        return "refused: " + str(exc)
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    yield server
    server.close()


def _accepted(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except (TimeoutError, BlockingIOError):
        return False
    connection.close()
    return True


async def test_tcp_to_a_localhost_server_of_the_host(
    prober: Prober, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    result = await prober.attempt(
        "TCP to host localhost",
        _CONNECT,
        args={"family": "inet", "host": "127.0.0.1", "port": port},
        escaped=lambda r: r.value == "connected" or _accepted(listener),
    )
    assert str(result.value).startswith("refused")


async def test_metadata_server(prober: Prober) -> None:
    result = await prober.attempt(
        "169.254.169.254 metadata server",
        _CONNECT,
        args={"family": "inet", "host": "169.254.169.254", "port": 80},
        escaped=lambda r: r.value == "connected",
    )
    assert "unreachable" in str(result.value).lower()


async def test_dns_resolution(prober: Prober) -> None:
    code = """
import socket
def probe():
    found = {}
    for name in ["metadata.google.internal", "example.com", "localhost"]:
        try:
            found[name] = [a[4][0] for a in socket.getaddrinfo(name, 80)]
        except OSError as exc:
            found[name] = "failed: " + str(exc)
    return found
"""

    def resolved(r: SandboxResult) -> bool:
        value = r.value if isinstance(r.value, dict) else {}
        return any(
            isinstance(value.get(n), list) for n in ("metadata.google.internal", "example.com")
        )

    result = await prober.attempt("DNS resolution", code, escaped=resolved)
    assert result.ok


async def test_ipv6(prober: Prober) -> None:
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        server.bind(("::1", 0))
    except OSError:
        server.close()
        pytest.skip("the host has no IPv6 loopback to aim at")
    server.listen(8)
    server.settimeout(0.2)
    try:
        port = server.getsockname()[1]
        for name, host in (("IPv6 to host ::1", "::1"), ("IPv6 global", "2001:4860:4860::8888")):
            result = await prober.attempt(
                name,
                _CONNECT,
                args={"family": "inet6", "host": host, "port": port if host == "::1" else 53},
                escaped=lambda r: r.value == "connected" or _accepted(server),
            )
            assert str(result.value).startswith("refused")
    finally:
        server.close()


async def test_abstract_unix_socket(prober: Prober) -> None:
    name = f"\0cloudagents-probe-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(8)
    server.settimeout(0.2)
    try:
        result = await prober.attempt(
            "abstract unix socket of the host",
            _CONNECT,
            args={"family": "unix", "host": name, "port": 0},
            escaped=lambda r: r.value == "connected" or _accepted(server),
        )
        assert str(result.value).startswith("refused")
    finally:
        server.close()


# ---- resources -------------------------------------------------------------------------


async def test_memory_bomb(prober: Prober) -> None:
    code = """
def probe():
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))
        if len(hoard) * 16 > 2048:
            return len(hoard) * 16
"""
    result = await prober.attempt(
        "memory bomb",
        code,
        limits=SandboxLimits(memory_mb=128, timeout_s=10),
        escaped=lambda r: r.ok,
    )
    assert result.error_kind == "memory" and "memory" in result.limits_hit


async def test_cpu_spin(prober: Prober, sandbox: Sandbox) -> None:
    killed_before = sandbox.stragglers_killed
    started = time.monotonic()
    result = await prober.attempt(
        "CPU spin",
        "def probe():\n    while True:\n        pass\n",
        limits=SandboxLimits(timeout_s=1),
        escaped=lambda r: r.ok or time.monotonic() - started > 4,
    )
    assert result.error_kind == "timeout" and result.limits_hit == ["wall_clock"]
    # Killing the launcher's process group took the whole PID namespace with it.
    await _assert_no_processes_left(prober, sandbox, "CPU spin survives the kill")
    assert sandbox.stragglers_killed == killed_before


async def test_fork_bomb(prober: Prober, sandbox: Sandbox) -> None:
    code = """
import os, time
def probe():
    children = 0
    while children < 1000:
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            try:
                while True:
                    os.fork()  # every child keeps forking too
            except OSError:
                time.sleep(30)
            os._exit(0)
        children += 1
    return children
"""
    result = await prober.attempt(
        "fork bomb",
        code,
        limits=SandboxLimits(max_processes=16, timeout_s=5),
        escaped=lambda r: not isinstance(r.value, int) or r.value >= 16,
    )
    assert isinstance(result.value, int) and result.value < 16
    await _assert_no_processes_left(prober, sandbox, "fork bomb survivors")


async def test_tmpfs_fill(prober: Prober) -> None:
    code = """
import os
def probe():
    written = 0
    chunk = b"x" * (1024 * 1024)
    for i in range(1000):
        try:
            with open(f"/tmp/fill-{i}", "wb") as f:
                for _ in range(8):
                    f.write(chunk)
                    written += len(chunk)
        except OSError:
            break
    return written // (1024 * 1024)
"""
    result = await prober.attempt(
        "tmpfs fill",
        code,
        limits=SandboxLimits(tmpfs_mb=16),
        escaped=lambda r: not isinstance(r.value, int) or r.value > 17,
    )
    assert isinstance(result.value, int) and result.value <= 17


async def test_recursion_bomb(prober: Prober) -> None:
    for name, code in (
        ("recursion bomb", "def probe():\n    return probe()\n"),
        (
            "recursion bomb past the C stack",
            "import sys\nsys.setrecursionlimit(10**7)\ndef probe(n=0):\n    return probe(n + 1)\n",
        ),
    ):
        # CPython 3.11 keeps Python-to-Python calls off the C stack: the deep one is a memory
        # bomb in disguise, stopped by the address-space limit (or the clock).
        result = await prober.attempt(
            name,
            code,
            limits=SandboxLimits(memory_mb=128, timeout_s=5),
            escaped=lambda r: r.ok or r.duration_ms > 7_000,
        )
        assert result.error_kind in ("error", "memory", "timeout"), result


async def test_output_flood(prober: Prober) -> None:
    result = await prober.attempt(
        "stdout/stderr flood",
        "import os\ndef probe():\n    while True:\n        os.write(1, b'x' * 65536)\n",
        limits=SandboxLimits(timeout_s=10),
        escaped=lambda r: r.ok or r.output_bytes > 10 * 1024 * 1024,
    )
    assert result.error_kind == "output_too_large"
    huge = await prober.attempt(
        "oversized result",
        "def probe():\n    return 'x' * 1_000_000\n",
        escaped=lambda r: r.ok,
    )
    assert huge.error_kind == "output_too_large" and huge.limits_hit == ["result_size"]


async def _assert_no_processes_left(prober: Prober, sandbox: Sandbox, name: str) -> None:
    deadline = time.monotonic() + 2
    left: list[int] = []
    while time.monotonic() < deadline:
        left = [pid for uid in sandbox.uids for pid in processes_of_uid(uid)]
        if not left:
            break
        await asyncio.sleep(0.05)
    prober.record(name, bool(left), left)


async def test_orphan_daemon_does_not_survive(prober: Prober, sandbox: Sandbox) -> None:
    code = """
import os, time
def probe():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(60)
        os._exit(0)
    time.sleep(0.1)
    return os.getpid()
"""
    killed_before = sandbox.stragglers_killed
    result = await prober.attempt("orphan daemon (double fork)", code, escaped=lambda r: False)
    assert result.ok
    await _assert_no_processes_left(prober, sandbox, "orphan daemon survives the call")
    # The PID namespace ended the daemon; the slot's sweep did not have to.
    assert sandbox.stragglers_killed == killed_before


# ---- kernel attack surface ---------------------------------------------------------------


async def test_ptrace_and_process_memory(prober: Prober) -> None:
    code = """
import ctypes, os
def probe():
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    out["attach_pid1"] = libc.ptrace(16, 1, None, None)  # PTRACE_ATTACH to bwrap
    out["traceme"] = libc.ptrace(0, 0, None, None)
    out["process_vm_readv"] = libc.syscall(310, 1, None, 0, None, 0, 0)
    out["errno"] = ctypes.get_errno()
    return out
"""
    result = await prober.attempt(
        "ptrace / process_vm_readv",
        code,
        escaped=lambda r: (
            not isinstance(r.value, dict)
            or any(r.value[k] != -1 for k in ("attach_pid1", "traceme", "process_vm_readv"))
        ),
    )
    assert isinstance(result.value, dict) and result.value["errno"] == 1  # EPERM


async def test_nested_namespaces(prober: Prober) -> None:
    code = """
import ctypes, subprocess
def probe():
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    for name, flag in [("user", 0x10000000), ("net", 0x40000000), ("mount", 0x20000)]:
        out[name] = libc.unshare(flag)
    out["setns"] = libc.syscall(308, 0, 0)
    run = subprocess.run(["/usr/bin/unshare", "-U", "-r", "id"], capture_output=True)
    out["unshare_cli"] = run.returncode
    return out
"""
    result = await prober.attempt(
        "nested namespaces (unshare/setns)",
        code,
        escaped=lambda r: (
            not isinstance(r.value, dict)
            or any(r.value[k] == 0 for k in ("user", "net", "mount", "setns", "unshare_cli"))
        ),
    )
    assert result.ok


async def test_the_sandboxs_pid_1_is_no_stepping_stone(prober: Prober) -> None:
    # /proc/1/mem of bwrap's PID-1 helper can be opened (same uid, no Yama here); taking it over
    # must gain nothing: it carries the same seccomp filter, no capabilities, no_new_privs.
    code = """
def probe():
    fields = {}
    with open("/proc/1/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return {k: fields.get(k) for k in ("Seccomp", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs")}
"""
    result = await prober.attempt(
        "pid 1 of the sandbox without filter or capabilities",
        code,
        escaped=lambda r: (
            r.value
            != {
                "Seccomp": "2",
                "CapEff": "0000000000000000",
                "CapPrm": "0000000000000000",
                "CapBnd": "0000000000000000",
                "NoNewPrivs": "1",
            }
        ),
    )
    assert result.ok


async def test_seccomp_denies_kernel_interfaces(prober: Prober) -> None:
    code = """
import ctypes
def probe():
    libc = ctypes.CDLL(None, use_errno=True)
    calls = {"keyctl": (250, 0), "add_key": (248, 0), "bpf": (321, 0), "userfaultfd": (323, 0),
             "perf_event_open": (298, 0), "io_uring_setup": (425, 1), "personality": (135, 0),
             "mount": (165, 0), "kexec_load": (246, 0), "init_module": (175, 0)}
    return {name: [libc.syscall(nr, arg, 0, 0, 0, 0), ctypes.get_errno()]
            for name, (nr, arg) in calls.items()}
"""
    result = await prober.attempt(
        "seccomp-denied syscalls",
        code,
        escaped=lambda r: (
            not isinstance(r.value, dict) or any(rc != -1 for rc, _ in r.value.values())
        ),
    )
    assert isinstance(result.value, dict)
    assert {err for _, err in result.value.values()} == {1}  # all EPERM


async def test_tiocsti_injection(prober: Prober) -> None:
    code = """
import fcntl, os, termios
def probe():
    out = {}
    for name in ["/dev/tty", 0, 1, 2]:
        try:
            fd = os.open(name, os.O_RDWR) if isinstance(name, str) else name
            fcntl.ioctl(fd, termios.TIOCSTI, b"x")
            out[str(name)] = "injected"
        except OSError as exc:
            out[str(name)] = "refused: " + str(exc)
    return out
"""
    result = await prober.attempt(
        "TIOCSTI injection",
        code,
        escaped=lambda r: "injected" in str(r.value),
    )
    assert result.ok


async def test_one_call_cannot_see_another_calls_tmp(prober: Prober) -> None:
    token = uuid.uuid4().hex
    writer = f"""
import time
def probe():
    with open("/tmp/{token}", "w") as f:
        f.write("mine")
    time.sleep(0.8)
    return "written"
"""
    reader = """
import os, time
def probe():
    time.sleep(0.2)
    return os.listdir("/tmp")
"""
    first, second = await asyncio.gather(
        prober.attempt("first call writes /tmp", writer, escaped=lambda r: False),
        prober.attempt(
            "concurrent call sees the first call's /tmp",
            reader,
            escaped=lambda r: token in str(r.value),
        ),
    )
    assert first.value == "written" and second.value == []
    later = await prober.attempt(
        "later call sees an earlier call's /tmp", reader, escaped=lambda r: token in str(r.value)
    )
    assert later.value == []


# ---- the import policy and CPython's object graph ---------------------------------------


async def test_imports_off_the_allow_list(prober: Prober) -> None:
    attempts = {
        "import statement": "import os\ndef probe():\n    return os.getcwd()\n",
        "__import__": "def probe():\n    return __import__('os').getcwd()\n",
        "importlib": "import importlib\ndef probe():\n    return importlib.import_module('os').getcwd()\n",
        "exec'd import": "def probe():\n    exec('import os')\n    return 'imported'\n",
        "forged globals": (
            "def probe():\n    return __import__('os', {'__name__': 'json'}).getcwd()\n"
        ),
    }
    for name, code in attempts.items():
        result = await prober.attempt(
            f"import off the allow-list ({name})", code, imports=("json",), escaped=lambda r: r.ok
        )
        assert result.error_kind == "import_not_allowed", (name, result)


_WALK_SETUP = """
def _real_import():
    # The runner's hook keeps the real __import__ in its closure: CPython cannot hide it.
    hook = __builtins__["__import__"] if isinstance(__builtins__, dict) else __builtins__.__import__
    return [c.cell_contents for c in hook.__closure__ if callable(c.cell_contents)][0]
"""


async def test_object_graph_walks_reach_nothing(prober: Prober) -> None:
    code = (
        _WALK_SETUP
        + f"""
def probe():
    found = {{}}
    subclasses = ().__class__.__base__.__subclasses__()
    wrap_close = [c for c in subclasses if c.__name__ == "_wrap_close"][0]
    os_ = wrap_close.__init__.__globals__["sys"].modules["os"]
    found["walk_reached_os"] = True
    try:
        raise RuntimeError
    except RuntimeError as exc:
        frame = exc.__traceback__.tb_frame
        while frame.f_back is not None:
            frame = frame.f_back
        found["frame_walk_globals"] = sorted(frame.f_globals)[:5]
    subprocess = _real_import()("subprocess")
    found["shell"] = subprocess.run(
        "id; cat /etc/passwd; ls /root {CHECKOUT}; cat /proc/1/environ; env",
        shell=True, capture_output=True, text=True,
    ).stdout + subprocess.run(["/bin/sh", "-c", "ls /"], capture_output=True, text=True).stdout
    found["environ"] = dict(os_.environ)
    return found
"""
    )
    result = await prober.attempt(
        "object-graph and frame walks",
        code,
        imports=("json",),
        escaped=lambda r: _leaks(r, SECRET, HOST_PASSWD, "Makefile", "uid=0("),
    )
    # The walks themselves succeed (CPython cannot stop them); they reach only the sandbox.
    assert result.ok and isinstance(result.value, dict), result
    assert result.value["walk_reached_os"] is True
    assert "uid=61" in str(result.value["shell"])


async def test_storing_code_does_not_import_it(
    prober: Prober, sandbox: Sandbox, tmp_path: Path
) -> None:
    marker = tmp_path / "top-level-ran"
    code = f"""
try:
    open({str(marker)!r}, "w").write("the store ran my top level")
except OSError:
    pass  # inside the sandbox the host's directory does not exist

def sneaky(x: int) -> int:
    return x + 1
"""
    store = FunctionStore(InMemoryFunctionRepository(), sandbox)
    version = await store.store_function("sneaky", code)
    prober.record("storing code runs its top level", marker.exists())
    # Executing it runs the top level inside the sandbox, whose /tmp is its own.
    assert await store.execute_function(version.ref, {"x": 1}) == 2
    prober.record("executing code writes to the host's /tmp", marker.exists())


# ---- the suite can fail ----------------------------------------------------------------


async def test_weakened_sandbox_leaks_and_fails_closed(sandbox: Sandbox) -> None:
    """Without the launcher's ``env -i`` the environment probe leaks: the suite can fail."""
    from dataclasses import replace

    from cloudagents.sandbox import BwrapLauncher, UidPool

    launcher = BwrapLauncher.discover()
    assert launcher is not None
    # Its own uid slot, so that it never shares a uid with the suite's sandbox.
    weak = Sandbox(launcher=replace(launcher, clear_env=False), pool=UidPool(61100, size=1))
    probe = """
def probe():
    with open("/proc/1/environ", "rb") as f:
        return f.read().decode(errors="replace")
"""
    leaked = await weak._run_unchecked(
        probe, "probe", {}, limits=SandboxLimits(), allowed_imports=()
    )
    assert SECRET in str(leaked.value), "a weakened launcher should leak bwrap's environment"
    same_probe_hardened = await sandbox.run(probe, "probe", {})
    assert same_probe_hardened.ok and SECRET not in str(same_probe_hardened.value)
    # And the canary notices: the weakened sandbox refuses every call.
    status = await weak.check()
    assert not status.available and "/proc/1/environ" in status.reason
    refused = await weak.run("def probe():\n    return 1\n", "probe", {})
    assert refused.error_kind == "sandbox_unavailable"
    weak.close()


def test_parent_env_really_holds_the_secret() -> None:
    assert os.environ["CLOUDAGENTS_PROBE_SECRET"] == SECRET
