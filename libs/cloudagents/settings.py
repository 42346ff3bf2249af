"""Settings, read from the environment once per process."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cloudagents.domain.errors import ConfigurationError
from cloudagents.topology import parse_node_types

Backend = Literal["gcp", "memory"]


@dataclass(frozen=True)
class Settings:
    """Process configuration. Every field has an environment variable (see ``from_env``)."""

    project: str
    workspace: str = "agents"
    location: str = "us-central1"
    backend: Backend = "gcp"
    tool_modules: tuple[str, ...] = ("cloudagents.builtin_tools",)
    broker_url: str | None = None
    api_tokens: tuple[str, ...] = ()
    snapshot_messages: int = 20
    trace_exporter: str = "none"
    service_name: str = "cloudagents"
    tasks_service_account: str | None = None
    tool_result_inline_bytes: int = 64_000
    # A tool call's lease is the tool's timeout plus this; see ToolInvoker.
    tool_lease_grace_seconds: float = 30.0
    # Where wake-up tasks are sent (the run executor's URL; runtime/wakeups.py), and how long a
    # waiting run waits for a sign of progress before its wake-up re-dispatches what it waits for.
    wake_url: str | None = None
    wake_seconds: float = 60.0
    # The length of a tools-per-minute window (60 s); tests shorten it to see many windows.
    rate_window_seconds: float = 60.0
    api_audience: str | None = None
    push_auth: str = "oidc"
    push_audience: str | None = None
    push_service_accounts: tuple[str, ...] = ()
    # Seed 004's shared LLM limits, for LimitedModel; None is unlimited.
    rate_limit_per_minute: int | None = None
    max_concurrent_executions: int | None = None
    # Graph workflows (seed 001): the node types whose tasks are push-dispatched through a
    # Cloud Tasks queue per type and band to the graph worker service (every other node type
    # travels on Pub/Sub to pull workers), that service's URL, the modules it imports for their
    # NodeRegistry objects, and the lease of a push task (renewed while it runs).
    graph_push_node_types: tuple[str, ...] = ()
    graph_worker_url: str | None = None
    graph_modules: tuple[str, ...] = ()
    graph_lease_seconds: float = 30.0

    on_emulators: bool = False

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, service_name: str = "cloudagents"
    ) -> Settings:
        env = os.environ if env is None else env
        project = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or ""
        backend = env.get("CLOUDAGENTS_BACKEND", "gcp")
        if backend not in ("gcp", "memory"):
            raise ConfigurationError(f"CLOUDAGENTS_BACKEND must be gcp or memory, not {backend!r}")
        if backend == "gcp" and not project:
            raise ConfigurationError("set GOOGLE_CLOUD_PROJECT to the project to use")
        modules = env.get("CLOUDAGENTS_TOOL_MODULES", "cloudagents.builtin_tools")
        tokens = env.get("CLOUDAGENTS_API_TOKENS", "")
        try:
            snapshot_messages = int(env.get("CLOUDAGENTS_SNAPSHOT_MESSAGES", "20"))
        except ValueError as exc:
            raise ConfigurationError("CLOUDAGENTS_SNAPSHOT_MESSAGES must be an integer") from exc
        try:
            lease_grace = float(env.get("CLOUDAGENTS_TOOL_LEASE_GRACE_SECONDS", "30"))
        except ValueError as exc:
            raise ConfigurationError(
                "CLOUDAGENTS_TOOL_LEASE_GRACE_SECONDS must be a number"
            ) from exc
        if lease_grace < 0:
            raise ConfigurationError("CLOUDAGENTS_TOOL_LEASE_GRACE_SECONDS must not be negative")
        wake_seconds = _positive(env, "CLOUDAGENTS_WAKE_SECONDS", 60.0)
        rate_window = _positive(env, "CLOUDAGENTS_RATE_WINDOW_SECONDS", 60.0)
        try:
            push_types = parse_node_types(env.get("CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES", ""))
        except ValueError as exc:
            raise ConfigurationError(f"CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES: {exc}") from exc
        graph_modules = env.get("CLOUDAGENTS_GRAPH_MODULES", "")
        return cls(
            graph_push_node_types=tuple(sorted(push_types)),
            graph_worker_url=env.get("CLOUDAGENTS_GRAPH_WORKER_URL") or None,
            graph_modules=tuple(m.strip() for m in graph_modules.split(",") if m.strip()),
            graph_lease_seconds=_positive(env, "CLOUDAGENTS_GRAPH_LEASE_SECONDS", 30.0),
            rate_limit_per_minute=_positive_int_or_none(env, "RATE_LIMIT_PER_MINUTE"),
            max_concurrent_executions=_positive_int_or_none(env, "MAX_CONCURRENT_EXECUTIONS"),
            project=project or "local-project",
            tool_lease_grace_seconds=lease_grace,
            wake_url=env.get("CLOUDAGENTS_WAKE_URL") or None,
            wake_seconds=wake_seconds,
            rate_window_seconds=rate_window,
            workspace=env.get("CLOUDAGENTS_WORKSPACE", "agents"),
            location=env.get("CLOUDAGENTS_LOCATION", "us-central1"),
            backend=backend,  # type: ignore[arg-type]
            tool_modules=tuple(m.strip() for m in modules.split(",") if m.strip()),
            broker_url=env.get("CLOUDAGENTS_BROKER_URL") or None,
            api_tokens=tuple(t.strip() for t in tokens.split(",") if t.strip()),
            snapshot_messages=snapshot_messages,
            trace_exporter=env.get("CLOUDAGENTS_TRACE_EXPORTER", "none"),
            service_name=env.get("K_SERVICE", service_name),
            tasks_service_account=env.get("CLOUDAGENTS_TASKS_SERVICE_ACCOUNT") or None,
            api_audience=env.get("CLOUDAGENTS_API_AUDIENCE") or None,
            on_emulators=bool(
                env.get("PUBSUB_EMULATOR_HOST") or env.get("FIRESTORE_EMULATOR_HOST")
            ),
            push_auth=env.get("CLOUDAGENTS_PUSH_AUTH", "oidc"),
            push_audience=env.get("CLOUDAGENTS_PUSH_AUDIENCE") or None,
            push_service_accounts=tuple(
                a.strip()
                for a in env.get("CLOUDAGENTS_PUSH_SERVICE_ACCOUNTS", "").split(",")
                if a.strip()
            ),
        )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name, str(default)))
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number") from exc
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive")
    return value


def llm_limits_from_env(env: Mapping[str, str] | None = None) -> tuple[int | None, int | None]:
    """Seed 004's ``RATE_LIMIT_PER_MINUTE`` and ``MAX_CONCURRENT_EXECUTIONS`` (``None``: unset),
    for the in-process entry points, which build their ``Settings`` without ``from_env``."""
    env = os.environ if env is None else env
    return (
        _positive_int_or_none(env, "RATE_LIMIT_PER_MINUTE"),
        _positive_int_or_none(env, "MAX_CONCURRENT_EXECUTIONS"),
    )


def _positive_int_or_none(env: Mapping[str, str], name: str) -> int | None:
    """An optional limit: unset or empty is unlimited, otherwise a positive integer."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a positive integer, not {raw!r}") from exc
    if value <= 0:
        raise ConfigurationError(f"{name} must be a positive integer (unset it for no limit)")
    return value
