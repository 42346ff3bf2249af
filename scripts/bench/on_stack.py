"""Benchmarks on the running local stack: step overhead, throughput, peak memory.

The stack is ``cloudagents.local.stack.LocalStack``: the four emulators and the five services as
separate functions-framework processes, exactly what ``make up`` starts.

A run's end time is its document's ``updated_at``, which the executor sets in the transaction
that finishes the run (the services and this script share the machine's clock), so polling
``GET /runs/{id}`` (every 25 ms for single runs, every second under load) only detects the end
and adds nothing to the figure.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from scripts.bench.common import USER_MESSAGE, cloudagents_agent, progress, summarize

from cloudagents.client import CloudAgentsClient
from cloudagents.local.emulators import process_group_members
from cloudagents.local.stack import StackState

LOCK_TIMEOUT = "Transaction lock timeout"


def finished_at(run: dict[str, Any]) -> float:
    return datetime.fromisoformat(run["updated_at"]).timestamp()


def lock_timeouts(state: StackState) -> int:
    """How many transactions the Firestore emulator has aborted on a lock timeout so far."""
    log = Path(state.log_dir) / "firestore.log"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if "WARNING" in line and LOCK_TIMEOUT in line)


def step_overhead(state: StackState, runs: int, warmup: int, steps: int) -> dict[str, Any]:
    """Serial runs of the 10-step agent: ms per step from POST /runs to the run's finish."""
    client = CloudAgentsClient(state.api_url, state.api_token)
    agent_id = "bench-steps"
    client.put_agent(cloudagents_agent(agent_id, steps))
    per_step: list[float] = []
    locks_before = 0
    exits: Counter[str] = Counter()
    try:
        for i in range(warmup + runs):
            if i == warmup:
                locks_before = lock_timeouts(state)
            started = time.time()
            run_id = client.start_run(agent_id, USER_MESSAGE)
            deadline = time.monotonic() + 120
            while True:
                run = client.get_run(run_id)
                if run["status"] == "finished":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run {run_id} did not finish in 120 s")
                time.sleep(0.025)
            result = run["result"]
            if i < warmup:
                continue
            exits[result["exit"]] += 1
            if result["exit"] != "SATISFIED" or result["iterations"] != steps:
                raise RuntimeError(f"run {run_id} ended {result['exit']}: {result}")
            per_step.append((finished_at(run) - started) * 1000 / steps)
            if (i - warmup + 1) % 5 == 0:
                progress(f"step overhead on the stack: {i - warmup + 1}/{runs} runs")
    finally:
        client.close()
    return {
        "ms_per_step": summarize(per_step),
        "firestore_lock_timeouts": lock_timeouts(state) - locks_before,
        "exits": dict(exits),
    }


async def _start_all(
    state: StackState, agent_id: str, runs: int, concurrency: int
) -> tuple[dict[str, float], int]:
    """POST ``runs`` runs, ``concurrency`` at a time; each run's start time, and the retries.

    Run ids are chosen here, so a POST that fails in transport is retried safely: the api
    starts one run per id."""
    headers = {"Authorization": f"Bearer {state.api_token}"}
    limits = httpx.Limits(max_connections=concurrency)
    started: dict[str, float] = {}
    retries = 0
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=state.api_url, headers=headers, timeout=60, limits=limits
    ) as api:

        async def one(run_id: str) -> None:
            nonlocal retries
            body = {"agent_id": agent_id, "message": USER_MESSAGE, "run_id": run_id}
            async with gate:
                started[run_id] = time.time()
                for attempt in range(5):
                    try:
                        response = await api.post("/runs", json=body)
                        response.raise_for_status()
                        return
                    except httpx.TransportError as exc:
                        retries += 1
                        progress(f"POST /runs {run_id}: {type(exc).__name__}, retrying")
                        if attempt == 4:
                            raise
                        await asyncio.sleep(0.5)

        ids = [f"load-{uuid.uuid4().hex[:16]}" for _ in range(runs)]
        await asyncio.gather(*(one(run_id) for run_id in ids))
    return started, retries


def throughput(
    state: StackState, label: str, runs: int, steps: int, timeout: float
) -> dict[str, Any]:
    """``runs`` runs started at once; steps per second, run latency, and what got lost."""
    client = CloudAgentsClient(state.api_url, state.api_token)
    agent_id = f"bench-load-{uuid.uuid4().hex[:8]}"
    client.put_agent(cloudagents_agent(agent_id, steps))
    dead_before = len(client.dead_letters())
    locks_before = lock_timeouts(state)
    cpu_before = cpu_seconds(state)
    began = time.time()
    started, retries = asyncio.run(_start_all(state, agent_id, runs, concurrency=32))
    posted = time.time()
    progress(f"throughput {label}: {runs} runs posted in {posted - began:.1f}s")
    finished: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    last_report = 0
    try:
        while len(finished) < runs and time.monotonic() < deadline:
            time.sleep(1.0)
            for run in client.list_runs(agent=agent_id, status="finished", limit=500):
                if run["run_id"] in started:
                    finished[run["run_id"]] = run
            if len(finished) - last_report >= 50:
                last_report = len(finished)
                progress(f"throughput {label}: {len(finished)}/{runs} finished")
        cpu_after = cpu_seconds(state)
        dead_letters = len(client.dead_letters()) - dead_before
    finally:
        client.close()
    latencies = [(finished_at(r) - started[i]) for i, r in finished.items()]
    exits = Counter(str((r.get("result") or {}).get("exit")) for r in finished.values())
    end = max((finished_at(r) for r in finished.values()), default=time.time())
    elapsed = end - min(started.values())
    satisfied = exits.get("SATISFIED", 0)
    return {
        "label": label,
        "runs": runs,
        "steps_per_run": steps,
        "finished": len(finished),
        "satisfied": satisfied,
        "lost": runs - len(finished),
        "exits": dict(exits),
        "dead_letters": dead_letters,
        "wall_seconds": elapsed,
        "steps_per_second": satisfied * steps / elapsed if elapsed > 0 else 0.0,
        "run_latency_s": summarize(latencies),
        "post_seconds": posted - began,
        "post_retries": retries,
        "firestore_lock_timeouts": lock_timeouts(state) - locks_before,
        "all_satisfied": satisfied == runs,
        # CPU seconds each component used while the runs ran (the machine has 2 cores).
        "cpu_seconds": {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()},
    }


def cpu_seconds(state: StackState) -> dict[str, float]:
    """User + system CPU seconds so far of each service's and each emulator's processes."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {name: service.pid for name, service in state.services.items()}
    groups.update({f"{name} emulator": pid for name, pid in state.emulator_pids.items()})
    used: dict[str, float] = {}
    for name, pgid in groups.items():
        total = 0
        for pid in process_group_members(pgid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        used[name] = total / tick
    return used


def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss(state: StackState) -> dict[str, Any]:
    """VmHWM (peak resident set) of every process of every service, in MiB.

    A functions-framework service is a gunicorn master that builds the app and forks the
    workers that serve (``WORKERS``); a service run by plain uvicorn is one process. ``peak_mib``
    is the largest process of the service (a serving worker, or the only process)."""
    services: dict[str, Any] = {}
    for name, service in state.services.items():
        members = sorted(process_group_members(service.pid))
        peaks = {pid: _status_kib(pid, "VmHWM") for pid in members}
        known = {pid: kib / 1024 for pid, kib in peaks.items() if kib is not None}
        services[name] = {
            "processes": len(known),
            "peak_mib": max(known.values(), default=None),
            "leader_mib": known.get(service.pid),
            "total_mib": sum(known.values()),
        }
    return services
