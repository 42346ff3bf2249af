"""No run is ever stuck: rate-limited calls are deferred (never dead-lettered), a lost message or
a dead holder is recovered by the run's wake-up, and a run past its timeout ends with the reason.

The stack runs with ``CLOUDAGENTS_WAKE_SECONDS=10`` and 10-second rate-limit windows
(``harness.WAKE_SECONDS``, ``harness.RATE_WINDOW_SECONDS``); the mechanisms are the production
ones, only the clocks are shorter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.faults import figures
from tests.faults.harness import (
    RATE_WINDOW_SECONDS,
    WAKE_SECONDS,
    FaultStack,
    proxied,
    unique,
)
from tests.faults.scenarios import INTERRUPTED, scripted

RATE_RUNS = 40
PER_WINDOW = 5


def one_tool_agent(agent_id: str, call: dict, **overrides: object) -> dict:
    return scripted(
        agent_id,
        [{"tool_calls": [call], "total_tokens": 10}, {"content": "done", "total_tokens": 5}],
        tools=[call["name"]],
        **overrides,
    )


@pytest.mark.timeout(600)
def test_rate_limited_calls_wait_through_windows_and_all_finish(stack: FaultStack) -> None:
    agent_id = unique("lv").replace("-", "")
    stack.register(
        one_tool_agent(
            agent_id,
            {"name": "rate_probe", "arguments": {"tag": "lv"}},
            budget={"max_tools_per_minute": PER_WINDOW, "max_iterations": 5},
        )
    )
    run_ids = [unique("lv") for _ in range(RATE_RUNS)]
    started = time.time()
    stack.publish_many([(stack.topic("intents"), stack.intent(r, agent_id, "go")) for r in run_ids])
    docs = stack.wait_finished(run_ids, 300, follow_handoffs=False)
    elapsed = time.time() - started

    exits = Counter(d["result"]["exit"] for d in docs.values())
    ledger = [e for e in stack.ledger("rate_probe") if str(e["key"]).split(":")[0] in set(run_ids)]
    windows = Counter(int(e["at"] // RATE_WINDOW_SECONDS) for e in ledger)
    spill = Counter(
        int(e["at"] // RATE_WINDOW_SECONDS) for e in ledger if e["at"] % RATE_WINDOW_SECONDS < 1.0
    )
    log = stack.service_log("tool_invoker")
    deferrals = sum(
        1
        for line in log.splitlines()
        if "deferred by the tools-per-minute limit" in line and any(r in line for r in run_ids)
    )
    letters = stack.dead_letter_docs(run_ids)
    parked = stack.parked("faults-tool-invoker")
    section = "liveness: rate limit"
    figures.record(
        section,
        "runs / calls allowed per window / window seconds",
        f"{RATE_RUNS} / {PER_WINDOW} / {RATE_WINDOW_SECONDS}",
    )
    figures.record(section, "exits", dict(exits))
    figures.record(
        section,
        "windows used / max executions in one window",
        f"{len(windows)} / {max(windows.values(), default=0)}",
    )
    figures.record(section, "deferrals (acknowledged, rescheduled)", deferrals)
    figures.record(
        section,
        "dead letters (Firestore) / parked on the dead-letter topic",
        f"{len(letters)} / {parked}",
    )
    figures.record(section, "seconds to finish all runs", round(elapsed, 1))

    executed = Counter(str(e["key"]) for e in ledger)
    figures.record(
        section,
        "calls executed more than once (idempotent tool: allowed)",
        sum(1 for n in executed.values() if n > 1),
    )
    assert exits == {"SATISFIED": RATE_RUNS}, exits
    # Every call ran; an idempotent tool may run again for a duplicate delivery, but only on a
    # slot of its own (the per-window check below counts every execution).
    assert len(executed) == RATE_RUNS
    assert deferrals >= RATE_RUNS - 2 * PER_WINDOW, "the backlog was never deferred"
    for window, n in windows.items():
        assert n <= PER_WINDOW + spill[window], (window, n, spill[window])
    assert len(windows) >= RATE_RUNS // PER_WINDOW
    assert letters == [] and parked == 0
    assert "tools-per-minute limit" not in stack.service_log("run_executor")


@pytest.mark.timeout(600)
def test_a_lost_tool_message_and_a_killed_holder_are_recovered_by_wake_ups(
    stack: FaultStack,
) -> None:
    lost_agent = unique("lost").replace("-", "")
    held_agent = unique("held").replace("-", "")
    stack.register(
        one_tool_agent(
            lost_agent, {"name": "charge_card", "arguments": {"customer": "c", "amount_cents": 5}}
        )
    )
    stack.register(
        one_tool_agent(
            held_agent,
            {
                "name": "slow_charge",
                "arguments": {"customer": "c", "amount_cents": 7, "seconds": 8},
            },
        )
    )
    lost_run, held_run = unique("lost"), unique("held")
    started = time.time()
    with proxied(stack, duplicate=False) as proxy:
        dropped: list[str] = []
        killed = threading.Event()
        held_dropped: list[int] = []

        def drop_first(subscription: str, data: bytes) -> bool:
            if subscription != "faults-tool-invoker":
                return False
            run_id = json.loads(data).get("run_id")
            if run_id == lost_run and not dropped:
                dropped.append(lost_run)
                return True
            if run_id == held_run and killed.is_set() and not stack.woken_runs().get(held_run):
                # After the kill, Pub/Sub's own redelivery of the held call would race the
                # wake-up: until the run's wake-up has looked at it, those pushes are dropped,
                # so what recovers the call is the wake-up (or a later one), as promised.
                held_dropped.append(1)
                return True
            return False

        proxy.drop = drop_first
        stack.publish(stack.topic("intents"), stack.intent(lost_run, lost_agent, "pay"))
        stack.publish(stack.topic("intents"), stack.intent(held_run, held_agent, "pay"))
        # Kill the tool invoker while it holds the slow payment's lease.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            calls = stack.sub(held_run, "tool_calls")
            if calls and calls[0]["status"] == "running":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the slow payment never started")
        os.killpg(stack.local.services["tool_invoker"].pid, signal.SIGKILL)
        killed.set()
        killed_at = time.time()
        stack.local.restart_service("tool_invoker")
        docs = stack.wait_finished([lost_run, held_run], 180, follow_handoffs=False)
    elapsed = time.time() - started

    woken = stack.woken_runs()
    executions = Counter(
        str(e["key"]).split(":")[0]
        for e in stack.ledger()
        if str(e["key"]).split(":")[0] in (lost_run, held_run)
    )
    held_result = next(m for m in stack.transcript(held_run) if m["role"] == "tool")["content"]
    section = "liveness: recovery"
    figures.record(section, "tool message dropped (acknowledged, not delivered)", len(dropped))
    figures.record(section, "tool invoker SIGKILLed while holding a lease", 1)
    figures.record(
        section, "runs finished / executions per run", f"{len(docs)} / {dict(executions)}"
    )
    figures.record(
        section, "what the wake-ups did", {r: woken.get(r, []) for r in (lost_run, held_run)}
    )
    figures.record(
        section, "held call's redeliveries dropped before its wake-up", len(held_dropped)
    )
    figures.record(
        section,
        "seconds from start / from the kill to both runs finished",
        f"{elapsed:.1f} / {time.time() - killed_at:.1f}",
    )

    assert dropped == [lost_run]
    assert {d["result"]["exit"] for d in docs.values()} == {"SATISFIED"}
    assert executions[lost_run] == 1  # the re-dispatched message ran it, once
    assert executions[held_run] <= 1  # never twice; the holder may have died before its record
    assert INTERRUPTED in held_result or "charged" in held_result
    assert woken.get(lost_run), "the lost message was not recovered by a wake-up"
    assert woken.get(held_run), "the dead holder's call was not recovered by a wake-up"
    assert WAKE_SECONDS < 60


@pytest.mark.timeout(300)
def test_a_tool_that_never_returns_ends_the_run_at_its_timeout(stack: FaultStack) -> None:
    agent_id = unique("hang").replace("-", "")
    stack.register(
        one_tool_agent(
            agent_id, {"name": "hang", "arguments": {"seconds": 240}}, timeout_seconds=15
        )
    )
    run_id = unique("hang")
    started = time.time()
    stack.publish(stack.topic("intents"), stack.intent(run_id, agent_id, "wait"))
    docs = stack.wait_finished([run_id], 120, follow_handoffs=False)
    elapsed = time.time() - started
    result = docs[run_id]["result"]
    reason = "timed out after 15 s waiting for tool calls: hang#0"
    figures.record(
        "liveness: timeout", "exit / reason", f"{result['exit']} / {result['payload']['reason']}"
    )
    figures.record(
        "liveness: timeout", "seconds from start to the end of the run", round(elapsed, 1)
    )
    assert result["exit"] == "ERROR"
    assert result["payload"]["reason"] == reason
    assert result["errors"] == [reason]


LOCK_HOLDER = r"""
import os
from google.cloud import firestore
db = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])
transaction = db.transaction()
transaction._begin()
db.collection("agent_runs").document(os.environ["LOCKED_RUN"]).get(transaction=transaction)
os._exit(0)  # dies holding the transaction's lock: no commit, no rollback
"""


@pytest.mark.timeout(600)
def test_a_run_the_emulator_keeps_locked_finishes_late(stack: FaultStack) -> None:
    """The Firestore emulator's lock stall, made on purpose: a client dies inside a transaction
    that read the run document (as a SIGKILLed service does), and the emulator refuses every
    write to that document for about a minute (`409 Transaction lock timeout`). The tool call's
    result is saved on its own document, but taking it off the run's pending list fails, and no
    redelivery is allowed here (the proxy abandons every 5xx): only the run's wake-ups can
    finish it, once the lock is gone."""
    agent_id = unique("lock").replace("-", "")
    run_id = unique("lock")
    # The tool returns only once the lock is in place, so its finish meets the lock whatever
    # the machine's load (a fixed delay raced the lock holder's start-up).
    flag = Path(tempfile.gettempdir()) / f"{run_id}.gate"
    gate = {"name": "gate", "arguments": {"flag": str(flag), "seconds": 120}}
    stack.register(one_tool_agent(agent_id, gate))
    with proxied(stack, duplicate=False) as proxy:
        proxy.max_redeliveries = 0
        started = time.time()
        stack.publish(stack.topic("intents"), stack.intent(run_id, agent_id, "wait"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            calls = stack.sub(run_id, "tool_calls")
            if calls and calls[0]["status"] == "running":
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the tool call never started")
        env = {**os.environ, "LOCKED_RUN": run_id, "GOOGLE_CLOUD_PROJECT": stack.local.project}
        subprocess.run([sys.executable, "-c", LOCK_HOLDER], env=env, check=True, timeout=60)
        locked_at = time.time()
        flag.touch()  # open the gate: the tool returns, and its finish meets the lock
        time.sleep(4)
        locked = stack.locked_documents(run_id)
        docs = stack.wait_finished([run_id], 240, follow_handoffs=False)
    finished_at = time.time()
    woken = stack.woken_runs().get(run_id, [])
    section = "liveness: emulator lock stall"
    figures.record(section, "run document locked by a dead client's transaction", bool(locked))
    figures.record(
        section, "5xx abandoned by the proxy (no redelivery)", len(proxy.stats.abandoned)
    )
    figures.record(section, "what the wake-ups did", woken)
    figures.record(
        section,
        "seconds from the lock to the end of the run / whole run",
        f"{finished_at - locked_at:.1f} / {finished_at - started:.1f}",
    )
    assert locked, "the dead client's transaction did not lock the run document"
    assert docs[run_id]["result"]["exit"] == "SATISFIED"
    assert woken, "the run finished without a wake-up: the test did not stall it"
