"""Cold start: a service's import + app build, and its clients, against the Google libraries.

Each figure comes from a fresh ``python`` subprocess (so nothing is imported yet) and is timed
inside it, from the first statement (the interpreter's own start-up is the same for all and is
left out):

* ``app``: ``create_asgi_app(target, source)``, what functions-framework does on start: it
  imports ``services/NAME/main.py`` and builds the Starlette app (the api, which uvicorn serves
  through its factory ``main:asgi_app`` in the Dockerfile and the local stack, is built that
  way: the same app plus the WebSocket route);
* ``app + deps``: then ``await get_deps(NAME)`` and the clients of the service's usual
  request (``USES``), which its first request pays for: the adapters are built on first use
  (``bootstrap._OnFirstUse``), so a service imports and builds only the client libraries it
  touches (no network: client construction connects nothing, so fake emulator addresses are
  set);
* ``google libs``: importing ``google.cloud.firestore``, ``pubsub_v1``, ``storage`` and
  ``tasks_v2`` alone (what every service built before adapters were built on first use).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from cloudagents.topology import SERVICES

ROOT = Path(__file__).resolve().parents[2]

# The adapters (``Deps`` fields) a service's usual request touches, so its client is built in the
# probe: its first request pays for these. Others are built if a rarer path needs them: Cloud
# Storage for a large tool result (executor, invoker) or a stored function (api, invoker),
# Cloud Tasks for a deferred tool call (invoker) or an approval's timer (api).
USES: dict[str, tuple[str, ...]] = {
    "api": ("runs", "bus"),
    "run_executor": ("runs", "bus", "tasks"),
    "tool_invoker": ("runs", "bus"),
    "handoff_broker": ("runs", "bus", "tasks", "blobs"),
    "context_snapshotter": ("runs", "blobs"),
}

_SERVICE_PROBE = """
import time
t0 = time.perf_counter()
from functions_framework.aio import create_asgi_app
create_asgi_app({name!r}, {source!r})
t1 = time.perf_counter()"""

# The api is served by uvicorn through its factory (``main:asgi_app``: the same app plus the
# WebSocket route), in the Dockerfile and the local stack alike: build it that way.
_FACTORY_PROBE = """
import time
t0 = time.perf_counter()
import sys
sys.path.insert(0, {app_dir!r})
import main
main.asgi_app()
t1 = time.perf_counter()"""

_DEPS_PROBE = """
import asyncio
from cloudagents.bootstrap import get_deps
async def first_request():
    deps = await get_deps({name!r})
    for field in {uses!r}:
        adapter = getattr(deps, field)
        getattr(adapter, "_target", lambda: adapter)()
asyncio.run(first_request())
t2 = time.perf_counter()
import json
print(json.dumps({{"app": (t1 - t0) * 1000, "app_deps": (t2 - t0) * 1000}}))
"""

_GOOGLE_PROBE = """
import time
t0 = time.perf_counter()
from google.cloud import firestore, pubsub_v1, storage, tasks_v2
t1 = time.perf_counter()
import json
print(json.dumps({"google": (t1 - t0) * 1000}))
"""

_FAKE_ENV = {
    "GOOGLE_CLOUD_PROJECT": "bench-coldstart",
    "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9",
    "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
    "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
    "CLOUD_TASKS_EMULATOR_HOST": "127.0.0.1:9",
    "CLOUDAGENTS_TRACE_EXPORTER": "none",
    "CLOUDAGENTS_API_TOKENS": "bench=coldstart-token-0123456789",
    "CLOUDAGENTS_PUSH_AUTH": "off",
    "CLOUDAGENTS_BACKEND": "gcp",
}


def _probe(code: str) -> dict[str, float]:
    env = {**os.environ, **_FAKE_ENV, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _build(name: str) -> tuple[str, str]:
    """How the service's app is built on start: the probe's first half, and its description."""
    source = ROOT / "services" / name / "main.py"
    if name == "api" and "def asgi_app(" in source.read_text():
        code = _FACTORY_PROBE.format(app_dir=str(source.parent))
        return code, "uvicorn factory main:asgi_app()"
    return _SERVICE_PROBE.format(name=name, source=str(source)), "create_asgi_app(target, source)"


def measure(repeats: int = 3) -> dict[str, Any]:
    built = {name: _build(name) for name in SERVICES}
    probes = {
        name: code + _DEPS_PROBE.format(name=name, uses=USES[name])
        for name, (code, _) in built.items()
    }
    # One discarded round first: the first process to import a library pays for the disk cache.
    _probe(_GOOGLE_PROBE)
    _probe(probes[SERVICES[0]])
    google: list[float] = []
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in SERVICES}
    for _ in range(repeats):  # interleaved, so a slow moment of the machine hits all alike
        google.append(_probe(_GOOGLE_PROBE)["google"])
        for name in SERVICES:
            samples[name].append(_probe(probes[name]))
    libs = statistics.median(google)
    services: dict[str, Any] = {}
    for name in SERVICES:
        app = statistics.median(s["app"] for s in samples[name])
        app_deps = statistics.median(s["app_deps"] for s in samples[name])
        services[name] = {
            "app_ms": app,
            "app_and_deps_ms": app_deps,
            "app_over_google_libs": app / libs,
            "app_and_deps_over_google_libs": app_deps / libs,
            "built_with": built[name][1],
            "clients_built": list(USES[name]),
        }
    return {"repeats": repeats, "google_libs_import_ms": libs, "services": services}
