"""Human approval on the emulator stack: every service a process, Firestore, Pub/Sub and Cloud
Tasks the emulators. Each approved call is executed exactly once and each rejected or expired
call never, counted in the suite's ledger (``charge_card`` records every execution with its
idempotency key ``{run}:{seq}:{index}``).

The agent's step calls ``word_count`` (runs at once) and ``charge_card`` (medium risk, at the
policy's threshold: it waits for a person)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.faults.harness import APPROVER_TOKENS, ROOT, FaultStack, unique

CHARGE = {"customer": "c-9", "amount_cents": 500}


def approving_agent(agent_id: str, **approval: Any) -> dict[str, Any]:
    return {
        "id": agent_id,
        "instructions": "You charge customers after checking the order.",
        "model": {
            "provider": "scripted",
            "name": "scripted-approvals",
            "script": [
                {
                    "tool_calls": [
                        {"name": "word_count", "arguments": {"text": "order c-9 ok"}},
                        {"name": "charge_card", "arguments": CHARGE},
                    ]
                },
                {"content": "done"},
            ],
        },
        "tools": ["word_count", "charge_card"],
        "approval": {"threshold": "medium", "timeout_seconds": 120, **approval},
    }


def as_principal(stack: FaultStack, who: str) -> httpx.Client:
    assert stack.state is not None
    return httpx.Client(
        base_url=stack.state.api_url,
        timeout=30.0,
        headers={"Authorization": f"Bearer {APPROVER_TOKENS[who]}"},
    )


def start(stack: FaultStack, agent: dict[str, Any]) -> str:
    stack.register(agent)
    run_id = unique(agent["id"])
    stack.start_http(agent["id"], "charge order c-9", run_id)
    return run_id


def wait_approval(stack: FaultStack, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The run's approval once the run waits for it (its sibling call already done)."""
    assert stack.api is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = stack.api.get(f"/runs/{run_id}").json()
        if run.get("status") == "waiting_approval":
            (approval,) = stack.api.get(f"/runs/{run_id}/approvals").json()["approvals"]
            return dict(approval)
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never waited for approval")


def charges(stack: FaultStack, run_id: str) -> list[dict[str, Any]]:
    return [e for e in stack.ledger("charge_card") if e["key"] == f"{run_id}:0:1"]


def decide(client: httpx.Client, approval: dict[str, Any], **body: Any) -> httpx.Response:
    return client.post(f"/runs/{approval['run_id']}/approvals/{approval['approval_id']}", json=body)


def tool_result(stack: FaultStack, run_id: str, name: str) -> str:
    (call,) = [c for c in stack.sub(run_id, "tool_calls") if c["call"]["name"] == name]
    return str(call["result"])


def test_approve_runs_the_call_once_and_the_sibling_ran_meanwhile(stack: FaultStack) -> None:
    run_id = start(stack, approving_agent("ap-yes"))
    approval = wait_approval(stack, run_id)
    assert approval["status"] == "pending" and approval["tool"] == "charge_card"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the other call of the step does not wait for it
        # (the sibling's document exists once its claim creates it: run version 6)
        calls = {c["call"]["name"]: c["status"] for c in stack.sub(run_id, "tool_calls")}
        if calls.get("word_count") == "done":
            break
        time.sleep(0.2)
    assert calls == {"word_count": "done", "charge_card": "pending"}
    assert charges(stack, run_id) == []
    assert stack.api is not None
    inbox = stack.api.get("/approvals", params={"status": "pending"}).json()["approvals"]
    assert any(a["run_id"] == run_id for a in inbox)
    with as_principal(stack, "alice") as alice:
        answer = decide(alice, approval, decision="approve", reason="looks right")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "approved"
        again = decide(alice, approval, decision="reject")
        assert again.status_code == 409 and again.json()["approval"]["status"] == "approved"
    run = stack.wait_finished([run_id], 60)[run_id]
    assert run["result"]["exit"] == "SATISFIED"
    assert len(charges(stack, run_id)) == 1
    events = [e["type"] for e in stack.events(run_id)]
    assert "approval_requested" in events
    audit = [a.to_dict() for a in stack.db.collection("audit_log").stream()]
    mine = [a["action"] for a in audit if a.get("target") == run_id]
    assert "approval requested" in mine and "approval approved" in mine


def test_reject_never_runs_it_and_the_model_reads_who_and_why(stack: FaultStack) -> None:
    run_id = start(stack, approving_agent("ap-no"))
    approval = wait_approval(stack, run_id)
    with as_principal(stack, "bob") as bob:
        answer = decide(bob, approval, decision="reject", reason="card flagged")
        assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    run = stack.wait_finished([run_id], 60)[run_id]
    assert run["result"]["exit"] == "SATISFIED"
    assert charges(stack, run_id) == []
    tool_messages = [m for m in stack.transcript(run_id) if m.get("role") == "tool"]
    assert any("rejected by bob: card flagged" in (m.get("content") or "") for m in tool_messages)


def test_edited_arguments_are_checked_and_are_what_runs(stack: FaultStack) -> None:
    run_id = start(stack, approving_agent("ap-edit"))
    approval = wait_approval(stack, run_id)
    with as_principal(stack, "alice") as alice:
        bad = decide(alice, approval, decision="approve", arguments={"amount_cents": "lots"})
        assert bad.status_code == 422 and "edited arguments" in bad.json()["error"]
        good = decide(
            alice, approval, decision="approve", arguments={"customer": "c-9", "amount_cents": 50}
        )
        assert good.status_code == 200, good.text
    stack.wait_finished([run_id], 60)
    (charge,) = charges(stack, run_id)
    assert charge["amount_cents"] == 50
    stored = stack.api.get(f"/runs/{run_id}/approvals/{approval['approval_id']}").json()  # type: ignore[union-attr]
    assert stored["arguments"] == CHARGE and stored["edited_arguments"]["amount_cents"] == 50


def test_quorum_of_two_needs_both_and_refuses_strangers(stack: FaultStack) -> None:
    run_id = start(stack, approving_agent("ap-quorum", approvers=["alice", "bob"], quorum=2))
    approval = wait_approval(stack, run_id)
    assert stack.api is not None
    stranger = decide(stack.api, approval, decision="approve")
    assert stranger.status_code == 403
    with as_principal(stack, "alice") as alice, as_principal(stack, "bob") as bob:
        first = decide(alice, approval, decision="approve")
        assert first.status_code == 200 and first.json()["status"] == "pending"
        assert decide(alice, approval, decision="approve").status_code == 409
        time.sleep(1.0)
        assert charges(stack, run_id) == []  # one approval of two runs nothing
        second = decide(bob, approval, decision="approve")
        assert second.status_code == 200 and second.json()["status"] == "approved"
        assert second.json()["decided_by"] == ["alice", "bob"]
    stack.wait_finished([run_id], 60)
    assert len(charges(stack, run_id)) == 1


def test_expiry_denies_in_its_own_words_and_halt_ends_the_run(stack: FaultStack) -> None:
    deny = start(stack, approving_agent("ap-deny", timeout_seconds=2))
    halt = start(stack, approving_agent("ap-halt", timeout_seconds=2, on_timeout="halt"))
    docs = stack.wait_finished([deny, halt], 90)
    assert docs[deny]["result"]["exit"] == "SATISFIED"
    assert "denied automatically" in tool_result(stack, deny, "charge_card")
    assert docs[halt]["result"]["exit"] == "APPROVAL_TIMEOUT"
    assert "expired after 2 s" in docs[halt]["result"]["payload"]["reason"]
    assert charges(stack, deny) == [] and charges(stack, halt) == []
    late = stack.api.get(f"/runs/{halt}/approvals").json()["approvals"][0]  # type: ignore[union-attr]
    with as_principal(stack, "alice") as alice:
        answer = decide(alice, late, decision="approve")
    assert answer.status_code == 409 and answer.json()["approval"]["status"] == "expired"


def test_a_decision_racing_the_expiry_has_exactly_one_winner(stack: FaultStack) -> None:
    """At each approval's expiry instant, three approvals by alice and three expiry tasks
    POSTed to the run executor at once (besides the approval's own Cloud Task): whichever
    lands first decides, and the call runs exactly when it was approved."""
    run_ids = [start(stack, approving_agent("ap-race", timeout_seconds=4)) for _ in range(3)]
    approvals = [wait_approval(stack, r) for r in run_ids]
    executor = stack.local.services["run_executor"].url
    wins: dict[str, list[int]] = {a["run_id"]: [] for a in approvals}

    def race(approval: dict[str, Any]) -> None:
        wake = {"run_id": approval["run_id"], "seq": 1, "approval": approval["approval_id"]}
        with as_principal(stack, "alice") as alice, httpx.Client(timeout=30.0) as tasks:
            barrier = threading.Barrier(6)

            def human() -> None:
                barrier.wait()
                wins[approval["run_id"]].append(
                    decide(alice, approval, decision="approve").status_code
                )

            def timer() -> None:
                barrier.wait()
                tasks.post(f"{executor}/tasks/wake", content=json.dumps(wake))

            racers = [threading.Thread(target=f) for f in (human, timer) * 3]
            for racer in racers:
                racer.start()
            for racer in racers:
                racer.join()

    timers = [
        threading.Timer(max(0.0, _epoch(a["expires_at"]) - time.time() - 0.02), race, (a,))
        for a in approvals
    ]
    for timer_thread in timers:
        timer_thread.start()
    for timer_thread in timers:
        timer_thread.join()
    docs = stack.wait_finished(run_ids, 90)
    assert stack.api is not None
    for run_id, approval in zip(run_ids, approvals, strict=True):
        final = stack.api.get(f"/runs/{run_id}/approvals/{approval['approval_id']}").json()
        executed = len(charges(stack, run_id))
        assert final["status"] in ("approved", "expired")
        assert executed == (1 if final["status"] == "approved" else 0), (final, executed)
        assert wins[run_id].count(200) == (1 if final["status"] == "approved" else 0)
        assert docs[run_id]["result"]["exit"] == "SATISFIED"


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_a_redelivered_step_does_not_decide_again(stack: FaultStack) -> None:
    run_id = start(stack, approving_agent("ap-redeliver"))
    approval = wait_approval(stack, run_id)
    step = json.dumps({"run_id": run_id, "seq": 0}).encode()
    for _ in range(3):
        stack.publish(stack.topic("steps"), step)
    time.sleep(2.0)
    assert stack.api is not None
    listed = stack.api.get(f"/runs/{run_id}/approvals").json()["approvals"]
    assert [a["requested_at"] for a in listed] == [approval["requested_at"]]
    assert stack.api.get(f"/runs/{run_id}").json()["status"] == "waiting_approval"
    with as_principal(stack, "alice") as alice:
        assert decide(alice, approval, decision="approve").status_code == 200
    stack.wait_finished([run_id], 60)
    assert len(charges(stack, run_id)) == 1


def test_killed_between_decision_and_dispatch_the_call_still_runs_once(stack: FaultStack) -> None:
    """A process decides (the same ``Approvals.decide`` as the api) and dies right after the
    commit, before it publishes the tool message: the wake-up it scheduled first dispatches the
    approved call, once."""
    run_id = start(stack, approving_agent("ap-killed"))
    approval = wait_approval(stack, run_id)
    assert stack.state is not None
    env = {
        **os.environ,
        **stack.state.env,
        "CLOUDAGENTS_CRASH_POINTS": "approvals.after_decide=1",
        "CLOUDAGENTS_TOOL_MODULES": "cloudagents.builtin_tools,tests.faults.fault_tools",
        "PYTHONPATH": str(ROOT),
    }
    script = (
        "import asyncio, sys\n"
        "from cloudagents.bootstrap import get_deps\n"
        "from cloudagents.runtime.approvals import Approvals\n"
        "async def main():\n"
        "    deps = await get_deps()\n"
        "    await Approvals(deps).decide(sys.argv[1], sys.argv[2], principal='alice',"
        " verdict='approve')\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, run_id, approval["approval_id"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 137, done.stderr[-2000:]
    assert "injected crash at approvals.after_decide" in done.stderr
    assert stack.api is not None
    stored = stack.api.get(f"/runs/{run_id}/approvals/{approval['approval_id']}").json()
    assert stored["status"] == "approved"
    run = stack.wait_finished([run_id], 90)[run_id]
    assert run["result"]["exit"] == "SATISFIED"
    assert len(charges(stack, run_id)) == 1


@pytest.mark.parametrize("body", [{"decision": "maybe"}, {"decision": "approve", "x": 1}])
def test_bad_decisions_are_4xx(stack: FaultStack, body: dict[str, Any]) -> None:
    assert stack.api is not None
    answer = stack.api.post("/runs/nope/approvals/000000-000", json=body)
    assert answer.status_code == 422
    missing = stack.api.post("/runs/nope/approvals/000000-000", json={"decision": "approve"})
    assert missing.status_code == 404
