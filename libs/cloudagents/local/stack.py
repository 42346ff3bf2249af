"""The local stack: the four emulators, every service on localhost, and the topology on them.

``LocalStack.start()`` is what ``make up`` / ``cloudagents up`` and the integration tests run:
emulators on free ports, the topology from ``cloudagents.topology`` created on them (push
subscriptions delivering to the services exactly as production push does, with dead-letter
topics and retry policies), the services as functions-framework processes, and the demo
agents registered. The state (ports, process groups, environment) goes to a JSON file so
``down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from cloudagents.local.emulators import (
    EmulatorStack,
    default_repo_root,
    detach,
    free_ports,
    process_group_members,
    start_stack,
)
from cloudagents.topology import GRAPH_WORKER, SERVICES, Topology, build_topology

DEFAULT_PROJECT = "local-project"
DEFAULT_WORKSPACE = "agents"


def _progress(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


@dataclass
class ServiceProcess:
    """One functions-framework process."""

    name: str
    port: int
    pid: int
    log_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class StackState:
    """What ``up`` started, written to ``state.json`` for ``down`` and ``status``."""

    project: str
    workspace: str
    log_dir: str
    env: dict[str, str]
    services: dict[str, ServiceProcess]
    emulator_pids: dict[str, int] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return self.services["api"].url

    @property
    def api_token(self) -> str | None:
        """The bearer token of the first principal in ``CLOUDAGENTS_API_TOKENS``."""
        first = self.env.get("CLOUDAGENTS_API_TOKENS", "").split(",")[0]
        return first.partition("=")[2] or first or None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> StackState:
        data = json.loads(path.read_text())
        data["services"] = {k: ServiceProcess(**v) for k, v in data["services"].items()}
        return cls(**data)


def create_topology(topology: Topology, service_urls: Mapping[str, str]) -> None:
    """Create topics, push subscriptions (dead-letter + retry policy) and the bucket on the
    emulators the environment points at; idempotent (existing resources are kept)."""
    from cloudagents.bootstrap import provision_emulators

    provision_emulators(topology, service_urls)


def service_command(name: str, port: int, repo_root: Path) -> list[str]:
    """How a service is served: ``functions-framework --asgi``, except the api, which uvicorn
    serves through ``services/api/main.py:asgi_app`` (the same app plus the WebSocket route)."""
    if name == "api":
        return [
            sys.executable, "-m", "uvicorn", "--factory",
            "--app-dir", str(repo_root / "services" / "api"), "main:asgi_app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip
    return [
        str(Path(sys.executable).with_name("functions-framework")),
        "--source", str(repo_root / "services" / name / "main.py"),
        "--target", name,
        "--asgi",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip


def start_service(
    name: str,
    port: int,
    env: Mapping[str, str],
    log_dir: Path,
    repo_root: Path,
) -> ServiceProcess:
    """Start one service on ``127.0.0.1:port`` (see ``service_command``)."""
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        service_command(name, port, repo_root),
        cwd=repo_root,
        env={**os.environ, **env},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log_file.close()
    return ServiceProcess(name=name, port=port, pid=process.pid, log_path=str(log_path))


def wait_healthy(services: Iterable[ServiceProcess], timeout: float = 120.0) -> None:
    """Wait until each service answers ``GET /healthz``; quote its log if it does not."""
    deadline = time.monotonic() + timeout
    for service in services:
        while True:
            try:
                if httpx.get(f"{service.url}/healthz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not _alive(service.pid):
                tail = Path(service.log_path).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"service {service.name} did not become healthy:\n{tail}")
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL what is left (zombies, which
    an orphan's slow reaper leaves behind, do not count as left)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not process_group_members(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class LocalStack:
    """Emulators + services + topology, on one machine."""

    def __init__(
        self,
        *,
        project: str = DEFAULT_PROJECT,
        workspace: str = DEFAULT_WORKSPACE,
        log_dir: Path | None = None,
        repo_root: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        graph_push_node_types: Iterable[str] = (),
        graph_modules: Iterable[str] = (),
        tasks_max_retries: int = 100,
    ) -> None:
        """``service_env`` adds variables to one service, e.g. ``{"run_executor": {"WORKERS":
        "2"}}`` runs two executor processes behind one port, as Cloud Run runs instances.

        ``graph_push_node_types`` (graph workflows) also starts the ``graph_worker`` service,
        with a Cloud Tasks queue per node type and band and the superstep wake-up queue on the
        emulator, importing ``graph_modules`` for their node functions; every process of the
        stack (and this one) sends those node types' tasks there
        (``CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES``, ``CLOUDAGENTS_GRAPH_WORKER_URL``).
        ``tasks_max_retries``: the Cloud Tasks emulator's immediate retries of a failed task
        (0: a failed delivery is dropped, so only a wake-up can finish its work)."""
        self.repo_root = repo_root or default_repo_root()
        self.project = project
        self.workspace = workspace
        self.log_dir = log_dir or self.repo_root / ".local" / "logs"
        self.extra_env = dict(extra_env or {})
        self.service_env = {k: dict(v) for k, v in (service_env or {}).items()}
        self.graph_push_node_types = tuple(graph_push_node_types)
        self.graph_modules = tuple(graph_modules)
        self.tasks_max_retries = tasks_max_retries
        self.topology = build_topology(
            project, workspace, graph_push_node_types=self.graph_push_node_types
        )
        self.emulators: EmulatorStack | None = None
        self.services: dict[str, ServiceProcess] = {}
        self.env: dict[str, str] = {}

    def start(self) -> StackState:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _progress(f"starting the Firestore, Pub/Sub, Storage and Tasks emulators ({self.log_dir})")
        started = time.monotonic()
        self.emulators = start_stack(
            self.project,
            self.log_dir,
            location=self.topology.location,
            queue_names=[q.name for q in self.topology.queues],
            repo_root=self.repo_root,
            tasks_max_retries=self.tasks_max_retries,
        )
        try:
            return self._start_services(started)
        except BaseException:
            self.stop()
            raise

    def _start_services(self, started: float) -> StackState:
        assert self.emulators is not None
        names = [*SERVICES, *([GRAPH_WORKER] if self.graph_push_node_types else [])]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        urls: dict[str, str] = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        self.env = {
            **self.emulators.env(),
            "GOOGLE_CLOUD_PROJECT": self.project,
            "CLOUDAGENTS_WORKSPACE": self.workspace,
            "CLOUDAGENTS_LOCATION": self.topology.location,
            "CLOUDAGENTS_BROKER_URL": urls["handoff_broker"],
            "CLOUDAGENTS_WAKE_URL": urls["run_executor"],
            "CLOUDAGENTS_API_URL": urls["api"],
            "CLOUDAGENTS_TRACE_EXPORTER": f"file:{self.log_dir / 'spans.jsonl'}",
            # The emulators send no OIDC token with pushes and tasks; this switch is honoured
            # only while the emulator variables are set.
            "CLOUDAGENTS_PUSH_AUTH": "off",
            "CLOUDAGENTS_API_TOKENS": f"local={secrets.token_urlsafe(24)}",
            **self._graph_env(urls),
            **self.extra_env,
        }
        os.environ.update(self.env)
        _progress("creating topics, push subscriptions, dead-letter topics and the bucket")
        create_topology(self.topology, urls)
        _progress("starting services: " + ", ".join(f"{n} :{p}" for n, p in ports.items()))
        for name, port in ports.items():
            env = {**self.env, **self.service_env.get(name, {})}
            self.services[name] = start_service(name, port, env, self.log_dir, self.repo_root)
        wait_healthy(self.services.values())
        _progress(f"local stack ready in {time.monotonic() - started:.1f}s")
        return self.state()

    def _graph_env(self, urls: Mapping[str, str]) -> dict[str, str]:
        if not self.graph_push_node_types:
            return {}
        return {
            "CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES": ",".join(self.graph_push_node_types),
            "CLOUDAGENTS_GRAPH_WORKER_URL": urls[GRAPH_WORKER],
            "CLOUDAGENTS_GRAPH_MODULES": ",".join(self.graph_modules),
        }

    def state(self) -> StackState:
        assert self.emulators is not None
        return StackState(
            project=self.project,
            workspace=self.workspace,
            log_dir=str(self.log_dir),
            env=self.env,
            services=self.services,
            emulator_pids={p.name: p.process.pid for p in self.emulators.processes},
        )

    def restart_service(self, name: str) -> ServiceProcess:
        """Kill a service's whole process group and start it again on the same port."""
        old = self.services[name]
        kill_group(old.pid, grace=0.0)
        env = {**self.env, **self.service_env.get(name, {})}
        self.services[name] = start_service(name, old.port, env, self.log_dir, self.repo_root)
        wait_healthy([self.services[name]])
        return self.services[name]

    def detach(self) -> None:
        """Leave everything running after this process exits (``up``)."""
        if self.emulators is not None:
            detach(self.emulators.processes)

    def stop(self) -> None:
        for service in self.services.values():
            kill_group(service.pid)
        self.services = {}
        if self.emulators is not None:
            self.emulators.stop()
            self.emulators = None


def stop_from_state(state: StackState) -> list[str]:
    """Stop every process group a saved state names; returns what was stopped."""
    stopped = []
    for service in state.services.values():
        kill_group(service.pid)
        stopped.append(f"{service.name} (pid {service.pid})")
    for name, pid in state.emulator_pids.items():
        kill_group(pid)
        stopped.append(f"{name} emulator (pid {pid})")
    return stopped


def service_health(service: ServiceProcess) -> bool:
    try:
        return httpx.get(f"{service.url}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def stack_is_healthy(state: StackState) -> bool:
    return all(service_health(s) for s in state.services.values())
