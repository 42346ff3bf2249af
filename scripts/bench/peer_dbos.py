"""(e) DBOS: the same 10-step agent as a durable workflow on PostgreSQL.

Runs in ``.venv-bench``: ``python -m scripts.bench.peer_dbos --dsn DSN`` (the server of
``postgres.py``; the peer creates its own database ``dbos_bench`` there and hands DBOS its URL as
the system database). The agent loop is a ``@DBOS.workflow()``; each model call and each tool call
is a ``@DBOS.step()``, so DBOS records every step's output in Postgres (``dbos.operation_outputs``)
before the workflow goes on, and a workflow interrupted by a crash is resumed from its last
recorded step when the same application restarts. The model replays the script with zero latency
(the turn is the number of assistant messages so far, as the other peers' models do); the tool is
the shared calculator. The functions are synchronous, DBOS's native form (its async API runs each
database call through ``asyncio.to_thread``). Each run is a new workflow id.

Measured: ms per step (run time / steps, as every peer) and database writes per step, counted by
PostgreSQL itself (``pgcount.py``: ``pg_stat_statements`` of this database, between a snapshot
before and after the timed runs). Every run is checked: its answer, and that DBOS recorded one
row per step in this server. If PostgreSQL cannot be reached, the peer exits 2 with the reason;
if it goes away during the runs (DBOS then blocks, retrying), it exits 3 after 60 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from typing import Any

import psycopg
import sqlalchemy.exc
from dbos import DBOS, DBOSConfig, SetWorkflowID
from scripts.bench.common import (
    FINAL_ANSWER,
    INSTRUCTIONS,
    STEPS,
    USER_MESSAGE,
    calculate,
    emit,
    progress,
    script,
    summarize,
)
from scripts.bench.pgcount import CountingUnavailable, WriteCounter, create_database, url

DATABASE = "dbos_bench"
STALL_SECONDS = 60.0  # a run takes milliseconds; DBOS blocks, retrying, while Postgres is away
_steps = STEPS  # the script's length; set by main() before any workflow runs


@DBOS.step()
def call_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The scripted model: a calculator call per turn, then the answer."""
    turn = sum(1 for m in messages if m["role"] == "assistant")
    turns = script(_steps)
    expr = turns[min(turn, len(turns) - 1)]
    if expr is None:
        return {"role": "assistant", "content": FINAL_ANSWER, "tool_calls": []}
    call = {"id": f"call_{turn}", "name": "calculator", "arguments": {"expression": expr}}
    return {"role": "assistant", "content": "", "tool_calls": [call]}


@DBOS.step()
def calculator(expression: str) -> float | int:
    return calculate(expression)


TOOLS = {"calculator": calculator}


@DBOS.workflow()
def agent(message: str) -> str:
    """The agent loop: model step, then a tool step per call, until the model answers."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": message},
    ]
    for _ in range(_steps + 5):
        reply = call_model(messages)
        messages.append(reply)
        if not reply["tool_calls"]:
            return str(reply["content"])
        for call in reply["tool_calls"]:
            result = TOOLS[call["name"]](**call["arguments"])
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": str(result)})
    raise RuntimeError("the agent did not answer within its iteration budget")


class Watchdog:
    """Exits the process, loudly, when DBOS stalls: it retries its database calls until the
    connection comes back, so a Postgres that goes away mid-run would otherwise hang the peer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.timer: threading.Timer | None = None

    def arm(self, what: str) -> None:
        self.disarm()
        self.timer = threading.Timer(self.seconds, self._fire, args=(what,))
        self.timer.daemon = True
        self.timer.start()

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fire(self, what: str) -> None:
        print(
            f"peer_dbos: {what} did not finish within {self.seconds:.0f} s: DBOS cannot reach "
            "PostgreSQL (it blocks and retries until the connection comes back; see its "
            "warnings above)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(3)


def recorded_steps(dsn: str, workflow_id: str) -> int:
    """Rows DBOS wrote for the workflow's steps, read back from the server."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = %s", (workflow_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def measure(
    dsn: str, runs: int, warmup: int, steps: int, stall: float = STALL_SECONDS
) -> dict[str, Any]:
    global _steps
    _steps = steps
    db_dsn = create_database(dsn, DATABASE)
    with psycopg.connect(db_dsn, connect_timeout=10) as conn:
        server = conn.execute("SHOW server_version").fetchone()
    try:
        counter: WriteCounter | None = WriteCounter(dsn, DATABASE)
        counting_error = None
    except CountingUnavailable as exc:
        counter, counting_error = None, str(exc)
    config: DBOSConfig = {
        "name": "cloudagents-bench",
        "system_database_url": url(db_dsn),
        "log_level": "WARNING",
    }
    DBOS(config=config)
    watchdog = Watchdog(stall)
    try:
        watchdog.arm("DBOS.launch()")
        DBOS.launch()
        per_step: list[float] = []
        expected = 2 * steps - 1  # a model step per turn and a tool step per call
        before = None
        for i in range(warmup + runs):
            if i == warmup and counter is not None:
                before = counter.snapshot()
            workflow_id = f"bench-{uuid.uuid4().hex}"
            watchdog.arm(f"run {i + 1} (workflow {workflow_id})")
            started = time.perf_counter()
            with SetWorkflowID(workflow_id):
                answer = agent(USER_MESSAGE)
            elapsed = time.perf_counter() - started
            if answer != FINAL_ANSWER:
                raise RuntimeError(f"unexpected answer: {answer!r}")
            if i >= warmup:
                per_step.append(elapsed * 1000 / steps)
        after = counter.snapshot() if counter is not None else None
        recorded = recorded_steps(db_dsn, workflow_id)
        if recorded != expected:
            raise RuntimeError(
                f"DBOS recorded {recorded} steps of workflow {workflow_id} in {DATABASE}, "
                f"expected {expected}: its steps are not durable in this server"
            )
        watchdog.disarm()
    finally:
        watchdog.arm("DBOS.destroy()")
        DBOS.destroy()
        watchdog.disarm()
    result: dict[str, Any] = {
        "ms_per_step": summarize(per_step),
        "dbos_steps_per_run": recorded,
        "postgres": f"PostgreSQL {server[0] if server else '?'}",
    }
    if counter is not None and before is not None and after is not None:
        writes = WriteCounter.writes(before, after)
        result["db_writes"] = {
            "method": "pg_stat_statements",
            "runs": runs,
            "steps": runs * steps,
            "write_statements_per_step": writes["write_statements"] / (runs * steps),
            "rows_written_per_step": writes["rows_written"] / (runs * steps),
            "write_transactions_per_step": writes["write_transactions"] / (runs * steps),
            "statements": writes["statements"],
        }
    else:
        result["db_writes_unavailable"] = counting_error
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True, help="libpq DSN of the benchmark's server")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument(
        "--stall-seconds", type=float, default=STALL_SECONDS, help="fail when a run stalls"
    )
    args = parser.parse_args()
    try:
        result = measure(args.dsn, args.runs, args.warmup, args.steps, args.stall_seconds)
    except (psycopg.OperationalError, sqlalchemy.exc.OperationalError) as exc:
        print(f"peer_dbos: cannot reach PostgreSQL ({args.dsn}): {exc}", file=sys.stderr)
        return 2
    from importlib.metadata import version

    result["versions"] = {"dbos": version("dbos"), "python": sys.version.split()[0]}
    progress(
        f"(e) DBOS: median {result['ms_per_step']['median']:.3g} ms/step, "
        f"{result.get('db_writes', {}).get('rows_written_per_step', float('nan')):.3g} rows "
        "written per step"
    )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
