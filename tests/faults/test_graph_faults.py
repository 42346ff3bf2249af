"""Graph workflows under faults: every node task delivered twice, pull worker processes and the
run executor SIGKILLed mid-superstep (replacements started), over many workflow runs of a graph
with a fan-out of 4, a join, a bounded conditional loop and an agent node
(``tests/faults/graph_scenario.py``).

What is checked, per workflow run, against the in-process reference run of the same graph:
the run completed (none lost), its final state equals the reference's, every task result was
applied exactly once (``log`` holds one entry per applied result, and the entries are the
reference's), and its agent node started exactly one child agent run, linked to its task. Node
functions may run more than once after a kill (a killed worker's task is re-dispatched); that
count is a figure, not a failure: what the protocol promises is that results apply once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
from google.cloud.firestore import FieldFilter

from cloudagents import Agent, AgentDefinition
from cloudagents.graphs import NodeRegistry, Orchestrator
from cloudagents.graphs.agents import child_run_id
from cloudagents.graphs.distributed import DistributedOrchestrator
from tests.faults import figures
from tests.faults.graph_scenario import (
    EXECUTIONS,
    FUNCTIONS,
    build,
    route_merge,
    summariser,
)
from tests.faults.graph_worker import DISPATCH_SECONDS
from tests.faults.harness import (
    PROJECT,
    ROOT,
    WORKSPACE,
    FaultStack,
    PushProxy,
    Supervisor,
    sized,
    unique,
)

RUNS = sized(50, 200)
WORKERS = 3
KILLS = sized(6, 20)
SEED = 20261202
SECTION = "graph workflows (SIGKILL + every task twice)"


class Workers:
    """The pull worker processes; a killed one is replaced by a new one at once."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started = 0
        self.lock = threading.Lock()

    def spawn(self) -> subprocess.Popen[bytes]:
        self.started += 1
        worker_id = f"gf-worker-{self.started}"
        log = open(os.path.join(self.log_dir, f"{worker_id}.log"), "wb")  # noqa: SIM115
        env = {
            **os.environ,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.graph_worker", worker_id],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        log.close()
        self.processes.append(process)
        return process

    def kill_one(self, rng: random.Random) -> None:
        with self.lock:
            alive = [p for p in self.processes if p.poll() is None]
            victim = rng.choice(alive)
            victim.kill()  # SIGKILL: its leases stop being renewed, its pulls are not acked
            victim.wait()
            self.processes.remove(victim)
            self.spawn()

    def stop(self) -> None:
        with self.lock:
            for process in self.processes:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
                if process.stdout is not None:
                    process.stdout.close()
            self.processes.clear()


def wait_ready(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.strip() == b"ready":
            return
        if not line and process.poll() is not None:
            raise RuntimeError(f"graph worker exited with {process.returncode}")
    raise RuntimeError("graph worker did not get ready")


def chaos(
    workers: Workers, supervisor: Supervisor, stop: threading.Event, kills: Counter[str]
) -> None:
    rng = random.Random(SEED)
    for i in range(KILLS):
        if stop.wait(rng.uniform(1.5, 3.5)):
            return
        if i % 3 == 2:
            supervisor.kill("run_executor")  # the supervisor brings it back
            kills["run_executor"] += 1
        else:
            workers.kill_one(rng)
            kills["pull worker"] += 1


async def reference_state() -> dict[str, Any]:
    registry = NodeRegistry()
    for name, func in FUNCTIONS.items():
        registry.register_node(name, func)
    registry.register_router("route_merge")(route_merge)
    registry.register_agent(Agent(AgentDefinition.model_validate(summariser())))
    state = await Orchestrator(registry=registry).execute(
        build(), {"topic": "faults"}, workflow_id="gf-reference"
    )
    return state.to_dict()["data"]


def normalised(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "log": sorted(state["log"]), "parts": sorted(state["parts"])}


@pytest.mark.timeout(sized(600, 2400))
def test_graph_runs_survive_killed_workers_and_executor_with_every_task_twice(
    stack: FaultStack, tmp_path: Any
) -> None:
    stack.register(summariser())
    reference = asyncio.run(reference_state())
    expected_log = sorted(reference["log"])
    workers = Workers(str(tmp_path))
    supervisor = Supervisor(stack).start()
    proxy = PushProxy(stack, duplicate=False).start()
    proxy.route(stack.original_endpoints)
    stop = threading.Event()
    kills: Counter[str] = Counter()
    wids = [unique("gf") for _ in range(RUNS)]
    outcomes: dict[str, Any] = {}
    started = time.monotonic()
    thread: threading.Thread | None = None
    try:
        for process in [workers.spawn() for _ in range(WORKERS)]:
            wait_ready(process)
        chaos_thread = thread = threading.Thread(
            target=chaos, args=(workers, supervisor, stop, kills), daemon=True
        )

        async def drive() -> None:
            orchestrator = DistributedOrchestrator(
                project_id=PROJECT,
                workspace=WORKSPACE,
                copies=2,
                poll_interval=1.0,
                tend_interval=2.0,
                dispatch_timeout=DISPATCH_SECONDS,
            )
            async with orchestrator:
                for wid in wids:
                    await orchestrator.start(build(), {"topic": "faults"}, workflow_id=wid)
                chaos_thread.start()

                async def one(wid: str) -> None:
                    try:
                        outcomes[wid] = (await orchestrator.wait(wid)).to_dict()["data"]
                    except Exception as error:  # counted as lost below, with its cause
                        outcomes[wid] = error

                async with asyncio.timeout(sized(400, 2000)):
                    await asyncio.gather(*(one(w) for w in wids))

        asyncio.run(drive())
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        if thread is not None and thread.is_alive():
            thread.join(timeout=30)
        workers.stop()
        supervisor.stop()
        proxy.stop()

    completed = {w: s for w, s in outcomes.items() if isinstance(s, dict)}
    lost = sorted(set(wids) - set(completed))
    equal = [w for w, s in completed.items() if normalised(s) == normalised(reference)]
    applied: Counter[int] = Counter()  # how many times each task result shows in a state
    for state in completed.values():
        applied.update(Counter(Counter(state["log"]).values()))
    missing = sum(len(set(expected_log) - set(s["log"])) for s in completed.values())

    executions: Counter[int] = Counter()
    for snap in stack.db.collection(EXECUTIONS).stream():
        data = snap.to_dict()
        if data.get("workflow_id") in completed:
            executions[data["n"]] += 1
    dispatches = claims = 0
    for wid in wids:
        for snap in stack.db.collection("workflow_runs").document(wid).collection("tasks").stream():
            data = snap.to_dict()
            dispatches += data["dispatches"] - 1
            claims += data["claims"]
    children: Counter[str] = Counter()
    linked_right = 0
    for i in range(0, len(wids), 30):
        query = stack.db.collection("agent_runs").where(
            filter=FieldFilter("graph_task.workflow_id", "in", wids[i : i + 30])
        )
        for snap in query.stream():
            data = snap.to_dict()
            link = data["graph_task"]
            children[link["workflow_id"]] += 1
            expected_id = child_run_id(link["workflow_id"], link["task_id"])
            if snap.id == expected_id and link["node"] == "summary":
                linked_right += 1

    figures.record(SECTION, "workflow runs", RUNS)
    figures.record(SECTION, "node tasks per run (fan-out 4, join, 2 loop rounds, agent node)", 13)
    figures.record(SECTION, "copies of every dispatch", 2)
    figures.record(
        SECTION, "pull worker processes killed (SIGKILL, replaced)", kills["pull worker"]
    )
    figures.record(SECTION, "run_executor killed (SIGKILL, restarted)", kills["run_executor"])
    figures.record(SECTION, "runs lost (not completed)", len(lost))
    figures.record(SECTION, "final state equal to the in-process reference", len(equal))
    figures.record(
        SECTION, "task results applied twice", sum(c for n, c in applied.items() if n > 1)
    )
    figures.record(SECTION, "task results missing from a final state", missing)
    figures.record(SECTION, "tasks re-dispatched (lease or dispatch expired)", dispatches)
    figures.record(SECTION, "task claims (a claim per execution started)", claims)
    figures.record(
        SECTION,
        "node functions run more than once (re-run after a kill; result applied once)",
        sum(c for n, c in executions.items() if n > 1),
    )
    figures.record(SECTION, "agent node child runs", sum(children.values()))
    figures.record(
        SECTION, "agent nodes with a second child run", sum(1 for c in children.values() if c > 1)
    )
    figures.record(SECTION, "wall seconds", round(elapsed, 1))

    assert not lost, {w: repr(outcomes.get(w)) for w in lost[:5]}
    assert len(equal) == RUNS, [normalised(s) for w, s in completed.items() if w not in equal][:1]
    assert set(applied) == {1} and missing == 0
    assert sum(children.values()) == RUNS and set(children.values()) == {1}
    assert linked_right == RUNS
    assert sum(kills.values()) == KILLS
