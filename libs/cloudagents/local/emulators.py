"""Start and stop the four local GCP emulators (Firestore, Pub/Sub, Cloud Storage, Cloud Tasks).

Used by the tests, ``make up`` and the CLI. Every emulator runs in its own session/process group
(``start_new_session=True``) with stdout and stderr going to ``<log_dir>/<name>.log``;
:meth:`EmulatorProcess.stop` signals the whole group, because the gcloud emulators are a Python
launcher (plus, for Firestore, a bash wrapper) around a JVM, and killing only the launcher leaves
the JVM running.

Commands (``PORT`` is a free loopback port unless one is given):

* Firestore: ``gcloud beta emulators firestore start --host-port=127.0.0.1:PORT``
* Pub/Sub: ``gcloud beta emulators pubsub start --host-port=127.0.0.1:PORT --project=PROJECT``
* Cloud Storage: ``python -m gcp_storage_emulator start --host 127.0.0.1 --port PORT --in-memory``
* Cloud Tasks: ``.venv-tasks/bin/gcloud-tasks-emulator start --port PORT --max-retries N
  --default-queue projects/P/locations/L/queues/Q ...`` (its own virtualenv: it needs protobuf<5).

Notes on the Cloud Tasks emulator (gcloud-tasks-emulator 0.6.2), from its source:

* Queues exist only if given with ``--default-queue`` (full resource name) or created through the
  API (``CreateQueue``); it has no ``GetTask``/``DeleteTask`` and never de-duplicates task names.
* HTTP tasks are POSTed (or the task's method) to ``http_request.url`` exactly as given, with the
  task's own headers plus ``X-CloudTasks-QueueName`` (the *full* queue path, unlike production),
  ``X-CloudTasks-TaskName``, ``X-CloudTasks-TaskRetryCount``, ``X-CloudTasks-TaskExecutionCount``
  (both ``dispatch_count - 1``) and ``X-CloudTasks-TaskETA``. No OIDC token is sent.
* ``schedule_time`` is honoured (polled every 0.1 s). A non-2xx answer or a connection error puts
  the task back at the end of the queue and it is retried at once, with no backoff, until
  ``--max-retries`` is exceeded. Dispatch is sequential per queue and has no timeout.
* The client libraries do not read ``CLOUD_TASKS_EMULATOR_HOST``: build the client with
  ``CloudTasksGrpcTransport(channel=grpc.insecure_channel(host))``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "EmulatorError",
    "EmulatorProcess",
    "EmulatorStack",
    "default_repo_root",
    "ensure_tasks_emulator_venv",
    "free_port",
    "free_ports",
    "gcloud_emulator_available",
    "port_is_free",
    "process_group_members",
    "queue_path",
    "start_firestore",
    "start_pubsub",
    "start_stack",
    "start_storage",
    "start_tasks",
]

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
TASKS_VENV_DIRNAME = ".venv-tasks"
TASKS_REQUIREMENTS = Path("infra") / "tasks-emulator" / "requirements.txt"
_MARKER_NAME = ".cloudagents-requirements.sha256"
_LOG_TAIL_LINES = 40
# Lines in an emulator's log that mean it will never become ready (the Pub/Sub JVM, for one,
# stays alive after failing to bind its port).
_FATAL_LOG_MARKERS = ("Address already in use", "BindException", "Failed to bind")


class EmulatorError(RuntimeError):
    """An emulator could not be installed, started or stopped."""


class _PortTakenError(EmulatorError):
    """The emulator's port was taken by someone else; retry on another port."""


def _progress(message: str) -> None:
    print(f"[emulators] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Ports and process groups
# --------------------------------------------------------------------------------------------


# Ports this process has handed out, so that emulators started in parallel never get the same one
# (one emulator's readiness probe could otherwise be answered by another).
_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now and not handed out before by this process."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free ports (all sockets are held open together)."""
    with _HANDED_OUT_LOCK, contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:
                ports.append(port)
        _HANDED_OUT.update(ports)
        return ports


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could listen on ``host:port`` now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def process_group_members(pgid: int) -> list[int]:
    """PIDs of the live (non-zombie) processes in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: all we can tell is whether the group exists at all
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after "(comm)": state ppid pgrp ...; comm may itself contain spaces or parens.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _http_says_ok(url: str, timeout: float = 1.0) -> bool:
    """True if ``GET url`` answers 200 with the body ``Ok`` (the emulators' health checks)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return bool(response.status == 200 and response.read().strip().lower() == b"ok")
    except (OSError, ValueError):
        return False


def _encode_string_field(number: int, value: str) -> bytes:
    data = value.encode()
    length = len(data)
    varint = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(varint) + data


def _tasks_lists_queues(endpoint: str, parent: str, queues: Sequence[str]) -> bool:
    """True if a Cloud Tasks server at ``endpoint`` answers ListQueues(parent) with ``queues``.

    Speaks raw gRPC (hand-encoded ``ListQueuesRequest``) so only grpcio is needed.
    """
    import grpc

    channel = grpc.insecure_channel(endpoint, options=[("grpc.enable_http_proxy", 0)])
    try:
        list_queues = channel.unary_unary(
            "/google.cloud.tasks.v2.CloudTasks/ListQueues",
            request_serializer=None,
            response_deserializer=None,
        )
        reply: bytes = list_queues(_encode_string_field(1, parent), timeout=2.0)
    except grpc.RpcError:
        return False
    finally:
        channel.close()
    return all(queue.encode() in reply for queue in queues)


# --------------------------------------------------------------------------------------------
# One emulator process
# --------------------------------------------------------------------------------------------

_LIVE: set[EmulatorProcess] = set()
_LIVE_LOCK = threading.Lock()


@dataclass(eq=False)
class EmulatorProcess:
    """A running emulator: the launcher process, which leads its own process group."""

    name: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_seconds: float = field(default=0.0)
    _stopped: bool = field(default=False, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        """``host:port``, the form the ``*_EMULATOR_HOST`` variables take."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def pgid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return bool(process_group_members(self.pgid))

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """SIGTERM the whole process group, wait up to ``timeout`` s, then SIGKILL it.

        Idempotent. Raises :class:`EmulatorError` only if processes survive SIGKILL.
        """
        if self._stopped:  # the group's id may belong to an unrelated process by now
            return
        with _LIVE_LOCK:
            _LIVE.discard(self)
        self._signal_group(signal.SIGTERM)
        if not self._wait_group_gone(timeout):
            self._signal_group(signal.SIGKILL)
            if not self._wait_group_gone(5.0):
                left = process_group_members(self.pgid)
                raise EmulatorError(f"{self.name}: processes {left} survived SIGKILL")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1.0)
        self._stopped = True

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.process.poll() is not None and not process_group_members(self.pgid):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _wait_group_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.process.poll()  # reap the launcher so it does not linger as a zombie
            if not process_group_members(self.pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _stop_leftovers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for emulator in leftovers:
        with contextlib.suppress(Exception):
            emulator.stop(timeout=2.0)


atexit.register(_stop_leftovers)


def detach(processes: Sequence[EmulatorProcess]) -> None:
    """Let these emulators outlive this Python process (``cloudagents up`` returns while they
    run; ``cloudagents down`` stops them from the saved state)."""
    with _LIVE_LOCK:
        for emulator in processes:
            _LIVE.discard(emulator)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return "<no log>"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # A PYTHONPATH meant for the project's venv would break the tasks venv (protobuf<5).
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"):
        env.pop(key, None)
    # The emulators are local: never send their traffic (e.g. task dispatch) through a proxy.
    for key in ("NO_PROXY", "no_proxy"):
        parts = [p for p in env.get(key, "").split(",") if p]
        for host in ("127.0.0.1", "localhost", "::1"):
            if host not in parts:
                parts.append(host)
        env[key] = ",".join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    env["CLOUDSDK_CORE_DISABLE_PROMPTS"] = "1"
    if extra:
        env.update(extra)
    return env


def _launch(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    log_dir: Path,
    probe: Callable[[EmulatorProcess], bool],
    ready_timeout: float,
    env_extra: dict[str, str] | None = None,
) -> EmulatorProcess:
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    if not port_is_free(port):
        raise _PortTakenError(f"{name}: port {port} on {LOOPBACK} is already in use")
    started = time.monotonic()
    with log_path.open("wb") as log:
        log.write(f"$ {shlex.join(argv)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(env_extra),
                cwd=log_dir,
                start_new_session=True,
            )
        except OSError as exc:
            raise EmulatorError(f"{name}: cannot run {argv[0]!r}: {exc}") from exc
    emulator = EmulatorProcess(name, LOOPBACK, port, process, log_path)
    with _LIVE_LOCK:
        _LIVE.add(emulator)
    try:
        _wait_ready(emulator, probe, ready_timeout)
    except BaseException:
        emulator.stop(timeout=2.0)
        raise
    emulator.ready_seconds = time.monotonic() - started
    return emulator


def _wait_ready(
    emulator: EmulatorProcess, probe: Callable[[EmulatorProcess], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = emulator.process.poll()
        if any(marker in emulator.log_tail(200) for marker in _FATAL_LOG_MARKERS):
            raise _PortTakenError(
                f"{emulator.name} could not bind {emulator.endpoint}; "
                f"last lines of {emulator.log_path}:\n{emulator.log_tail()}"
            )
        if code is not None:
            raise EmulatorError(
                f"{emulator.name} exited with code {code} before it was ready; "
                f"last lines of {emulator.log_path}:\n{emulator.log_tail()}"
            )
        if probe(emulator):
            return
        if time.monotonic() >= deadline:
            raise EmulatorError(
                f"{emulator.name} did not answer on {emulator.endpoint} within {timeout:.0f} s; "
                f"last lines of {emulator.log_path}:\n{emulator.log_tail()}"
            )
        time.sleep(0.1)


def _launch_on_port(
    name: str,
    build_argv: Callable[[int], Sequence[str]],
    *,
    port: int | None,
    log_dir: Path,
    probe: Callable[[EmulatorProcess], bool],
    ready_timeout: float,
    env_extra: dict[str, str] | None = None,
) -> EmulatorProcess:
    """Launch on ``port``, or on a free port, retrying twice if a chosen port gets taken."""
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        try:
            return _launch(
                name,
                build_argv(chosen),
                port=chosen,
                log_dir=log_dir,
                probe=probe,
                ready_timeout=ready_timeout,
                env_extra=env_extra,
            )
        except _PortTakenError:
            if attempt + 1 >= attempts:
                raise
            _progress(f"{name}: port {chosen} was taken, retrying on another port")
    raise AssertionError("unreachable")


def _http_probe(path: str) -> Callable[[EmulatorProcess], bool]:
    def probe(emulator: EmulatorProcess) -> bool:
        return _http_says_ok(f"{emulator.url}{path}")

    return probe


# --------------------------------------------------------------------------------------------
# The four emulators
# --------------------------------------------------------------------------------------------


def _gcloud() -> str:
    path = shutil.which("gcloud")
    if path is None:
        raise EmulatorError(
            "gcloud not found on PATH: install the Google Cloud CLI with the "
            "cloud-firestore-emulator and pubsub-emulator components"
        )
    return path


def gcloud_emulator_available(component: str) -> bool:
    """True if ``gcloud`` is on PATH and ``component`` is installed.

    ``component`` is a directory under the SDK's ``platform/``: ``cloud-firestore-emulator`` or
    ``pubsub-emulator``.
    """
    path = shutil.which("gcloud")
    if path is None or shutil.which("java") is None:
        return False
    sdk_root = Path(os.path.realpath(path)).parent.parent
    return (sdk_root / "platform" / component).is_dir()


def start_firestore(
    project: str,
    log_dir: Path,
    port: int | None = None,
    *,
    ready_timeout: float = READY_TIMEOUT_S,
) -> EmulatorProcess:
    """Start the Firestore emulator (native mode); ready when ``GET /`` answers.

    The emulator serves every project id; ``project`` is accepted for symmetry.
    """
    del project
    gcloud = _gcloud()
    return _launch_on_port(
        "firestore",
        lambda p: [
            gcloud,
            "beta",
            "emulators",
            "firestore",
            "start",
            f"--host-port={LOOPBACK}:{p}",
        ],
        port=port,
        log_dir=log_dir,
        probe=_http_probe("/"),
        ready_timeout=ready_timeout,
    )


def start_pubsub(
    project: str,
    log_dir: Path,
    port: int | None = None,
    *,
    ready_timeout: float = READY_TIMEOUT_S,
) -> EmulatorProcess:
    """Start the Pub/Sub emulator; ready when ``GET /`` answers."""
    gcloud = _gcloud()
    return _launch_on_port(
        "pubsub",
        lambda p: [
            gcloud,
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port={LOOPBACK}:{p}",
            f"--project={project}",
        ],
        port=port,
        log_dir=log_dir,
        probe=_http_probe("/"),
        ready_timeout=ready_timeout,
    )


def _storage_command() -> list[str]:
    if importlib.util.find_spec("gcp_storage_emulator") is not None:
        return [sys.executable, "-m", "gcp_storage_emulator"]
    for candidate in (Path(sys.executable).parent / "gcp-storage-emulator",):
        if candidate.exists():
            return [str(candidate)]
    found = shutil.which("gcp-storage-emulator")
    if found is None:
        raise EmulatorError(
            "gcp-storage-emulator is not installed (it is in the project's 'local' dependency "
            "group: uv sync)"
        )
    return [found]


def start_storage(
    log_dir: Path,
    port: int | None = None,
    *,
    ready_timeout: float = READY_TIMEOUT_S,
) -> EmulatorProcess:
    """Start the Cloud Storage emulator (in memory); ready when its health check answers."""
    command = _storage_command()
    return _launch_on_port(
        "storage",
        lambda p: [*command, "start", "--host", LOOPBACK, "--port", str(p), "--in-memory"],
        port=port,
        log_dir=log_dir,
        probe=_http_probe("/"),
        ready_timeout=ready_timeout,
    )


def queue_path(project: str, location: str, queue: str) -> str:
    return f"projects/{project}/locations/{location}/queues/{queue}"


def start_tasks(
    project: str,
    location: str,
    queue_names: Sequence[str],
    log_dir: Path,
    port: int | None = None,
    repo_root: Path | None = None,
    *,
    max_retries: int = 100,
    quiet: bool = False,
    ready_timeout: float = READY_TIMEOUT_S,
) -> EmulatorProcess:
    """Start the Cloud Tasks emulator with ``queue_names`` created up front.

    ``queue_names`` are short ids (``"runs"``) or full paths (``projects/../queues/runs``).
    ``max_retries`` bounds the emulator's immediate, backoff-free retries of failed tasks (-1:
    forever; production's default queue config makes 100 attempts). ``quiet`` logs errors only;
    otherwise the log gets ten lines a second per task scheduled in the future.
    """
    executable = ensure_tasks_emulator_venv(repo_root or default_repo_root())
    full_names = [
        queue if queue.startswith("projects/") else queue_path(project, location, queue)
        for queue in queue_names
    ]
    queue_flags = [flag for full in full_names for flag in ("--default-queue", full)]

    def argv(p: int) -> list[str]:
        command = [str(executable), "start", "--port", str(p), "--max-retries", str(max_retries)]
        return [*command, *(["--quiet"] if quiet else []), *queue_flags]

    def probe(emulator: EmulatorProcess) -> bool:
        # The emulator lists the queues whose names start with ``parent``: "projects/" is all.
        return _tasks_lists_queues(emulator.endpoint, "projects/", full_names)

    return _launch_on_port(
        "tasks",
        argv,
        port=port,
        log_dir=log_dir,
        probe=probe,
        ready_timeout=ready_timeout,
        env_extra={"PYTHONWARNINGS": "ignore::FutureWarning"},
    )


# --------------------------------------------------------------------------------------------
# The tasks emulator's virtualenv
# --------------------------------------------------------------------------------------------


def default_repo_root() -> Path:
    """The checkout holding ``infra/tasks-emulator/requirements.txt``.

    Looked for above this file (editable install), then above the working directory.
    """
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for candidate in (start, *start.parents):
            if (candidate / TASKS_REQUIREMENTS).is_file():
                return candidate
    raise EmulatorError(f"cannot find {TASKS_REQUIREMENTS} above {starts[0]} or {starts[1]}")


def _find_uv(repo_root: Path) -> str | None:
    for candidate in (os.environ.get("UV"), repo_root / ".tools" / "uv" / "bin" / "uv"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("uv")


def _run_step(description: str, argv: Sequence[str]) -> None:
    _progress(description)
    result = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_child_env(),
        check=False,
    )
    if result.returncode != 0:
        output = "\n".join(result.stdout.decode("utf-8", "replace").splitlines()[-30:])
        raise EmulatorError(
            f"{description} failed (exit {result.returncode}): {shlex.join(argv)}\n{output}"
        )


@contextlib.contextmanager
def _file_lock(key: Path) -> Iterator[None]:
    """An exclusive lock shared by every process preparing the same virtualenv."""
    digest = hashlib.sha256(str(key).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"cloudagents-venv-tasks-{digest}.lock"
    handle: IO[bytes] = lock_path.open("ab")
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


def _venv_bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def _python_works(python: Path) -> bool:
    if not python.exists():
        return False
    try:
        result = subprocess.run(
            [str(python), "-c", "import sys"], capture_output=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def ensure_tasks_emulator_venv(repo_root: Path) -> Path:
    """Make ``<repo_root>/.venv-tasks`` hold exactly the pinned tasks emulator; return its CLI.

    Creates the virtualenv if missing or broken and (re)installs
    ``infra/tasks-emulator/requirements.txt`` when its hash differs from the one recorded in the
    venv. Uses uv when available (``$UV``, ``.tools/uv/bin/uv`` or PATH), else venv + pip.
    """
    repo_root = Path(repo_root).resolve()
    requirements = repo_root / TASKS_REQUIREMENTS
    if not requirements.is_file():
        raise EmulatorError(f"missing {requirements}")
    venv = repo_root / TASKS_VENV_DIRNAME
    executable = _venv_bin(venv, "gcloud-tasks-emulator")
    python = _venv_bin(venv, "python")
    marker = venv / _MARKER_NAME
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()

    def up_to_date() -> bool:
        return (
            executable.is_file()
            and marker.is_file()
            and marker.read_text().strip() == wanted
            and python.exists()
        )

    if up_to_date():
        return executable
    with _file_lock(venv):
        if up_to_date() and _python_works(python):
            return executable
        started = time.monotonic()
        uv = _find_uv(repo_root)
        if venv.exists() and not _python_works(python):
            _progress(f"removing broken {venv}")
            shutil.rmtree(venv)
        if not venv.exists():
            if uv is not None:
                command = [uv, "venv", "--quiet", "--python", sys.executable, str(venv)]
            else:
                command = [sys.executable, "-m", "venv", str(venv)]
            _run_step(f"creating {venv} (Cloud Tasks emulator, first time only)", command)
        marker.unlink(missing_ok=True)
        if uv is not None:
            install = [uv, "pip", "sync", "--quiet", "--python", str(python), str(requirements)]
        else:
            install = [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)]
        _run_step(f"installing {requirements.relative_to(repo_root)} into {venv}", install)
        if not executable.is_file():
            raise EmulatorError(f"{executable} missing after installing {requirements}")
        marker.write_text(wanted + "\n")
        _progress(f"Cloud Tasks emulator ready in {venv} ({time.monotonic() - started:.0f} s)")
    return executable


# --------------------------------------------------------------------------------------------
# All four together
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class EmulatorStack:
    """The four emulators, started together by :func:`start_stack`."""

    project: str
    location: str
    firestore: EmulatorProcess
    pubsub: EmulatorProcess
    storage: EmulatorProcess
    tasks: EmulatorProcess

    @property
    def processes(self) -> list[EmulatorProcess]:
        return [self.firestore, self.pubsub, self.storage, self.tasks]

    def env(self) -> dict[str, str]:
        """Variables that point the Google client libraries at the emulators.

        ``STORAGE_EMULATOR_HOST`` carries its scheme (google-cloud-storage uses it verbatim as
        the API endpoint); ``CLOUD_TASKS_EMULATOR_HOST`` is read by our own adapter only.
        """
        return {
            "FIRESTORE_EMULATOR_HOST": self.firestore.endpoint,
            "PUBSUB_EMULATOR_HOST": self.pubsub.endpoint,
            "STORAGE_EMULATOR_HOST": self.storage.url,
            "CLOUD_TASKS_EMULATOR_HOST": self.tasks.endpoint,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }

    def stop(self) -> None:
        """Stop all four in parallel; raise the first error after trying every one."""
        _stop_all(self.processes)

    def __enter__(self) -> EmulatorStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _stop_all(processes: Sequence[EmulatorProcess]) -> None:
    if not processes:
        return
    with ThreadPoolExecutor(max_workers=len(processes)) as pool:
        futures = [pool.submit(p.stop) for p in processes]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors and errors[0] is not None:
        raise errors[0]


def start_stack(
    project: str,
    log_dir: Path,
    *,
    location: str = "us-central1",
    queue_names: Sequence[str] = (),
    repo_root: Path | None = None,
    tasks_max_retries: int = 100,
    tasks_quiet: bool = True,
    ready_timeout: float = READY_TIMEOUT_S,
) -> EmulatorStack:
    """Start all four emulators in parallel on free ports. On any failure none are left running."""
    log_dir = Path(log_dir)
    root = repo_root or default_repo_root()
    starters: dict[str, Callable[[], EmulatorProcess]] = {
        "firestore": lambda: start_firestore(project, log_dir, ready_timeout=ready_timeout),
        "pubsub": lambda: start_pubsub(project, log_dir, ready_timeout=ready_timeout),
        "storage": lambda: start_storage(log_dir, ready_timeout=ready_timeout),
        "tasks": lambda: start_tasks(
            project,
            location,
            queue_names,
            log_dir,
            repo_root=root,
            max_retries=tasks_max_retries,
            quiet=tasks_quiet,
            ready_timeout=ready_timeout,
        ),
    }
    with ThreadPoolExecutor(max_workers=len(starters)) as pool:
        futures: dict[str, Future[EmulatorProcess]] = {
            name: pool.submit(start) for name, start in starters.items()
        }
    started = {n: f.result() for n, f in futures.items() if f.exception() is None}
    failures = {n: f.exception() for n, f in futures.items() if f.exception() is not None}
    if failures:
        with contextlib.suppress(EmulatorError):
            _stop_all(list(started.values()))
        name, error = next(iter(failures.items()))
        raise EmulatorError(f"could not start the {name} emulator: {error}") from error
    return EmulatorStack(project=project, location=location, **started)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cloudagents.local.emulators``: run the stack until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT", "local"))
    parser.add_argument("--location", default="us-central1")
    parser.add_argument("--queue", action="append", default=[], help="Cloud Tasks queue id")
    parser.add_argument("--log-dir", type=Path, default=Path(".local") / "emulators")
    args = parser.parse_args(argv)
    stack = start_stack(args.project, args.log_dir, location=args.location, queue_names=args.queue)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        for key, value in stack.env().items():
            print(f"export {key}={shlex.quote(value)}", flush=True)
        _progress(f"logs in {args.log_dir}; Ctrl-C to stop")
        while not stop.wait(0.5):
            dead = [p.name for p in stack.processes if p.process.poll() is not None]
            if dead:
                _progress(f"emulator(s) {', '.join(dead)} exited; see {args.log_dir}")
                return 1
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
