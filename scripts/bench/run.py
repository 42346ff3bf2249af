"""``make bench``: cloudagents side by side with its peers, all in one run on this machine.

Prints the tables to stdout (progress lines go to stderr) and writes ``bench-results/
results.json`` and ``bench-results/chart.png``. What is measured, and how, is in
``docs/performance.md``; each figure's own script says the details:

1. step overhead of the same 10-step agent: (a) cloudagents on the emulator stack
   (``on_stack.py``), (b) its in-process runner (``inprocess.py``), (c) LangGraph with a
   Postgres checkpointer (``peer_langgraph.py``), (d) the OpenAI Agents SDK
   (``peer_openai_agents.py``), (e) DBOS, a durable workflow on the same Postgres
   (``peer_dbos.py``), and the floor of the design (``floor.py``); the Postgres peers' writes
   are counted by the server (``pgcount.py``);
2. cost per step, counted by the adapters with every service in one process (``cost.py``);
3. throughput of 200 concurrent runs with one and with two executor processes;
4. cold start per service (``coldstart.py``) and each service's peak RSS;
5. graph supersteps: the same 10-node chain in process (``graph_inprocess.py``), distributed
   on the emulators (``graph_distributed.py``) and in LangGraph with its Postgres checkpointer
   (``peer_langgraph_graph.py``).

The peers run in ``.venv-bench`` (created here with uv from ``requirements.txt``), never in
``.venv``. Speed is only ever printed here, never asserted by a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a file: make ``scripts.bench`` importable
    sys.path.insert(0, str(ROOT))

from scripts.bench import coldstart, floor, on_stack, postgres  # noqa: E402
from scripts.bench.common import STEPS, parse_emitted, progress, started  # noqa: E402
from scripts.bench.report import render  # noqa: E402

from cloudagents.local.stack import LocalStack  # noqa: E402

HERE = Path(__file__).resolve().parent
BENCH_VENV = ROOT / ".venv-bench"
REQUIREMENTS = HERE / "requirements.txt"
UV = ROOT / ".tools" / "uv" / "bin" / "uv"
DBOS_LABEL = "(e) DBOS workflow + Postgres"

# Sizes: the whole of ``make bench`` stays under 15 minutes on 2 cores.
FULL = {
    "stack_runs": 20,
    "stack_warmup": 2,
    "peer_runs": 30,
    "peer_warmup": 3,
    "cost_runs": 5,
    "load_runs": 200,
    "load_steps": 5,
    "load_timeout": 240.0,
    "cold_repeats": 3,
    "floor_samples": 40,
}
QUICK = {
    "stack_runs": 4,
    "stack_warmup": 1,
    "peer_runs": 8,
    "peer_warmup": 1,
    "cost_runs": 1,
    "load_runs": 30,
    "load_steps": 5,
    "load_timeout": 120.0,
    "cold_repeats": 1,
    "floor_samples": 8,
}


def ensure_bench_venv() -> Path:
    """``.venv-bench`` with the pinned peers, (re)built when ``requirements.txt`` changes."""
    python = BENCH_VENV / "bin" / "python"
    stamp = BENCH_VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    if not UV.exists():
        raise RuntimeError(f"{UV} is missing: run `make install` first")
    progress(f"installing the peers into {BENCH_VENV.name} (requirements.txt, pinned)")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    steps = [
        [str(UV), "venv", "--quiet", "--allow-existing", "--python", sys.executable],
        [str(UV), "pip", "install", "--quiet", "--python", str(python), "-r", str(REQUIREMENTS)],
    ]
    steps[0].append(str(BENCH_VENV))
    for command in steps:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-1500:]
            raise RuntimeError(f"`{' '.join(command[:3])} ...` failed: {tail}")
    stamp.write_text(digest)
    return python


def child(python: Path | str, module: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``python -m scripts.bench.MODULE ARGS`` from the repo root; its BENCH-RESULT.

    The child's progress lines are passed on as they come; the tail of its stderr goes into
    the error when it fails."""
    command = [str(python), "-m", f"scripts.bench.{module}", *args]
    env = {**os.environ, "BENCH_STARTED": repr(started())}
    tail: deque[str] = deque(maxlen=12)
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.PIPE, text=True
        )
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            assert process.stderr is not None
            for line in process.stderr:
                if line.startswith("[bench"):
                    print(line, end="", file=sys.stderr, flush=True)
                else:
                    tail.append(line.rstrip())
            returncode = process.wait()
        finally:
            timer.cancel()
        out.seek(0)
        stdout = out.read()
    if returncode != 0:
        raise RuntimeError(f"{module} exited {returncode}:\n" + "\n".join(tail))
    return parse_emitted(stdout)


class Bench:
    def __init__(self, sizes: dict[str, Any], out: Path) -> None:
        self.sizes = sizes
        self.out = out
        self.results: dict[str, Any] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "sizes": sizes,
            "steps_per_run": STEPS,
            "machine": machine(),
            "step_overhead": [],
            "errors": {},
        }
        self.bench_python: Path | None = None
        self.last_error = ""

    def phase(self, name: str, action: Callable[[], Any]) -> Any:
        """Run one phase; a failure is recorded with its reason and the bench goes on."""
        started = time.monotonic()
        try:
            return action()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".strip()
            self.results["errors"][name] = reason
            self.last_error = reason
            progress(f"{name} FAILED: {reason}")
            traceback.print_exc(file=sys.stderr)
            return None
        finally:
            progress(f"{name}: {time.monotonic() - started:.1f}s")

    def step_row(self, key: str, label: str, data: dict[str, Any] | None, **extra: Any) -> None:
        row = {"key": key, "label": label, **extra}
        if data is not None:
            row.update(data)
        elif "unavailable" not in row:
            row["unavailable"] = self.last_error or "no result"
        self.results["step_overhead"].append(row)

    # -- phases -------------------------------------------------------------------------------

    def in_process(self) -> None:
        s = self.sizes
        runs = ["--runs", str(s["peer_runs"]), "--warmup", str(s["peer_warmup"])]
        progress("(b) cloudagents in-process runner")
        data = self.phase("inprocess", lambda: child(sys.executable, "inprocess", *runs))
        self.step_row("b", "(b) cloudagents in-process runner", data)
        self.bench_python = self.phase("bench venv", ensure_bench_venv)
        if self.bench_python is None:
            why = self.results["errors"]["bench venv"]
            self.step_row("c", "(c) LangGraph", None, unavailable=f"not installed: {why}")
            self.step_row("d", "(d) OpenAI Agents SDK", None, unavailable=f"not installed: {why}")
            self.step_row("e", DBOS_LABEL, None, unavailable=f"not installed: {why}")
            return
        pg = self.phase("postgres", postgres.start)
        try:
            if pg is not None:
                self.results["postgres"] = {
                    "version": pg.version,
                    "settings": "defaults (fsync on)"
                    + (", pg_stat_statements preloaded" if pg.stat_statements else ""),
                }
            self.langgraph(runs, pg)
            self.dbos(runs, pg)
            self.graphs(runs, pg)
        finally:
            if pg is not None:
                pg.stop()
        progress("(d) OpenAI Agents SDK with a fake Model")
        data = self.phase(
            "openai-agents", lambda: child(self.bench_python or "", "peer_openai_agents", *runs)
        )
        self.step_row(
            "d",
            "(d) OpenAI Agents SDK, fake Model",
            data,
            **({} if data else {"unavailable": self.results["errors"].get("openai-agents")}),
        )

    def langgraph(self, runs: list[str], pg: postgres.Postgres | None) -> None:
        python = self.bench_python or ""
        saver_note = None
        if pg is not None:
            progress(f"(c) LangGraph + AsyncPostgresSaver on {pg.version}")
            args = ["--saver", "postgres", "--dsn", pg.dsn, *runs]
            data = self.phase("langgraph", lambda: child(python, "peer_langgraph", *args))
            label = "(c) LangGraph + PostgresSaver"
        else:
            saver_note = f"SQLite saver used: {self.results['errors']['postgres']}"
            progress(f"(c) LangGraph + AsyncSqliteSaver ({saver_note})")
            path = str(self.out / "langgraph-checkpoints.sqlite")
            Path(path).unlink(missing_ok=True)
            args = ["--saver", "sqlite", "--path", path, *runs]
            data = self.phase("langgraph", lambda: child(python, "peer_langgraph", *args))
            label = "(c) LangGraph + SqliteSaver"
        extra: dict[str, Any] = {"note": saver_note} if saver_note else {}
        if data is None:
            extra["unavailable"] = self.results["errors"].get("langgraph")
        self.step_row("c", label, data, **extra)
        progress("LangGraph + InMemorySaver (reference: the framework without a database)")
        args = ["--saver", "memory", *runs]
        data = self.phase("langgraph-memory", lambda: child(python, "peer_langgraph", *args))
        self.step_row("c0", "    LangGraph + InMemorySaver (no durability)", data)

    def graph_row(self, key: str, label: str, data: dict[str, Any] | None, **extra: Any) -> None:
        row = {"key": key, "label": label, **extra, **(data or {})}
        if data is None:
            row.setdefault("unavailable", self.last_error or "no result")
        self.results.setdefault("graph_supersteps", []).append(row)

    def graphs(self, runs: list[str], pg: postgres.Postgres | None) -> None:
        """Section 5: the same 10-node chain in process and in LangGraph + Postgres."""
        progress("(g1) cloudagents graph workflow in process: 10-node chain")
        data = self.phase(
            "graph inprocess", lambda: child(sys.executable, "graph_inprocess", *runs)
        )
        self.graph_row(
            "g1", "(g1) cloudagents graphs, in process", data, durability="none (memory)"
        )
        progress("(g2) cloudagents graph workflow distributed on the emulators: 10-node chain")
        data = self.phase(
            "graph distributed", lambda: child(sys.executable, "graph_distributed", *runs)
        )
        self.graph_row(
            "g2",
            "(g2) cloudagents graphs, distributed (Firestore + Pub/Sub emulators)",
            data,
            durability="a checkpoint per superstep, any process",
        )
        if pg is None:
            why = f"needs PostgreSQL: {self.results['errors'].get('postgres')}"
            self.graph_row("g3", "(g3) LangGraph + PostgresSaver", None, unavailable=why)
            return
        progress(f"(g3) LangGraph + AsyncPostgresSaver: 10-node chain on {pg.version}")
        args = ["--saver", "postgres", "--dsn", pg.dsn, *runs]
        python = self.bench_python or ""
        data = self.phase("graph langgraph", lambda: child(python, "peer_langgraph_graph", *args))
        self.graph_row(
            "g3",
            "(g3) LangGraph + PostgresSaver",
            data,
            durability="a checkpoint per superstep; one process",
        )

    def dbos(self, runs: list[str], pg: postgres.Postgres | None) -> None:
        label = DBOS_LABEL
        if pg is None:
            why = f"needs PostgreSQL: {self.results['errors'].get('postgres')}"
            self.step_row("e", label, None, unavailable=why)
            return
        progress(f"(e) DBOS: a workflow with a step per model and tool call, on {pg.version}")
        args = ["--dsn", pg.dsn, *runs]
        data = self.phase("dbos", lambda: child(self.bench_python or "", "peer_dbos", *args))
        extra = {} if data else {"unavailable": self.results["errors"].get("dbos")}
        self.step_row("e", label, data, **extra)

    def on_stack(self) -> None:
        s = self.sizes
        stack = LocalStack(
            project="bench-project",
            workspace="bench",
            log_dir=self.out / "logs",
            service_env={"run_executor": {"WORKERS": "1"}},
        )
        progress("starting the local stack (4 emulators + 5 service processes)")
        state = self.phase("stack start", stack.start)
        if state is None:
            self.step_row("a", "(a) cloudagents on the emulator stack", None)
            return
        try:
            project = state.project
            progress("floor: Firestore transaction + Pub/Sub push round trip")
            self.results["floor"] = self.phase(
                "floor", lambda: floor.measure(project, s["floor_samples"])
            )
            progress(f"(a) cloudagents on the emulator stack: {s['stack_runs']} runs")
            data = self.phase(
                "stack steps",
                lambda: on_stack.step_overhead(state, s["stack_runs"], s["stack_warmup"], STEPS),
            )
            self.step_row("a", "(a) cloudagents on the emulator stack", data)
            progress(f"cost: {s['cost_runs']} runs with all services in one process")
            os.environ.update(state.env)
            self.results["cost"] = self.phase(
                "cost", lambda: child(sys.executable, "cost", "--runs", str(s["cost_runs"]))
            )
            self.results["throughput"] = []
            for workers in ("1", "2"):
                if workers != "1":
                    progress(f"restarting run_executor with WORKERS={workers}")
                    stack.service_env["run_executor"] = {"WORKERS": workers}
                    stack.restart_service("run_executor")
                    state = stack.state()
                label = f"{workers} executor process" + ("es" if workers != "1" else "")
                progress(f"throughput, {label}: {s['load_runs']} runs x {s['load_steps']} steps")

                def load(current: Any = state, label: str = label) -> dict[str, Any]:
                    return on_stack.throughput(
                        current, label, s["load_runs"], s["load_steps"], s["load_timeout"]
                    )

                row = self.phase(f"throughput {workers}", load)
                if row:
                    self.results["throughput"].append(row)
            self.results["peak_rss"] = self.phase("peak rss", lambda: on_stack.peak_rss(state))
        finally:
            progress("stopping the local stack")
            stack.stop()

    def cold_start(self) -> None:
        progress(f"cold start: fresh processes, median of {self.sizes['cold_repeats']}")
        self.results["cold_start"] = self.phase(
            "cold start", lambda: coldstart.measure(self.sizes["cold_repeats"])
        )

    def chart(self, results_path: Path) -> None:
        if self.bench_python is None:
            self.results["errors"]["chart"] = "no .venv-bench (matplotlib): see 'bench venv'"
            return
        chart = self.out / "chart.png"
        command = [str(self.bench_python), "-m", "scripts.bench.chart"]
        done = subprocess.run(
            [*command, str(results_path), str(chart)], cwd=ROOT, capture_output=True, text=True
        )
        if done.returncode != 0:
            self.results["errors"]["chart"] = done.stderr.strip()[-1500:]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    memory = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "memory_gib": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": list(os.getloadavg()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small samples (a smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    started = time.monotonic()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(QUICK if args.quick else FULL, out)
    bench.cold_start()
    bench.in_process()
    bench.on_stack()
    bench.results["wall_seconds"] = time.monotonic() - started
    bench.results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results_path = out / "results.json"
    results_path.write_text(json.dumps(bench.results, indent=2, default=str))
    bench.chart(results_path)
    bench.results["wall_seconds"] = time.monotonic() - started
    results_path.write_text(json.dumps(bench.results, indent=2, default=str))
    print(render(bench.results))
    progress(f"wrote {results_path} and {out / 'chart.png'}")
    core = ("stack start", "stack steps", "cost", "throughput 1", "throughput 2")
    failed = [name for name in core if name in bench.results["errors"]]
    lost = [r for r in bench.results.get("throughput", []) if not r["all_satisfied"]]
    return 1 if failed or lost else 0


if __name__ == "__main__":
    sys.exit(main())
