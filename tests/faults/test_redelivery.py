"""At-least-once delivery: every message delivered two or three times changes nothing.

Every push of every subscription goes through ``PushProxy(duplicate=True)``: each logical
message is delivered 2-3 times in all, by duplicate publishes to the same topic and by
handler-level replays of the same push body (concurrent with the first delivery, or after it was
acknowledged). The runs pay with a non-idempotent tool (``charge_card``) and hand off to a second
agent that pays again, so intents, steps, tool calls, snapshots and handoff offers are all
duplicated. Counted from Firestore against a reference run of the same agents: no step applied
twice, no non-idempotent execution twice, no run lost.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.faults import figures
from tests.faults.harness import FaultStack, proxied, sized, unique
from tests.faults.scenarios import RunSnapshot, Tally, fulfil_agent, order_agent, scripted

SOURCES = sized(50, 150)  # each hands off to a second run: 2x runs in all
TIMEOUT = sized(420, 3000)


def reference(stack: FaultStack, agent: str) -> tuple[str, dict[str, RunSnapshot]]:
    run_id = unique("ref")
    stack.publish(stack.topic("intents"), stack.intent(run_id, agent, "Order c-1, please."))
    docs = stack.wait_finished([run_id], 60)
    return run_id, {r: RunSnapshot.read(stack, r, d) for r, d in docs.items()}


def child_of(run_id: str, docs: dict[str, dict]) -> str | None:
    children = docs.get(run_id, {}).get("child_run_ids") or []
    return children[0] if children else None


@pytest.mark.timeout(sized(1200, 5400))
def test_every_message_delivered_two_or_three_times(stack: FaultStack) -> None:
    # A run that the emulator's locks keep from finishing ends at its timeout (with the reason):
    # 420 s bounds how long such a run holds the suite up (a run takes under 150 s otherwise).
    stack.register({**fulfil_agent("rd-fulfil", "rd-shipping"), "timeout_seconds": TIMEOUT})
    stack.register({**order_agent("rd-order", "rd-shipping"), "timeout_seconds": TIMEOUT})
    ref_id, ref = reference(stack, "rd-order")
    ref_child = child_of(ref_id, {r: s.doc for r, s in ref.items()})
    assert ref_child is not None
    assert ref[ref_id].doc["result"]["exit"] == "HANDOFF"
    assert ref[ref_child].doc["result"]["exit"] == "SATISFIED"

    started = time.monotonic()
    run_ids = [unique("rd") for _ in range(SOURCES)]
    with proxied(stack, duplicate=True, seed=20261122) as proxy:
        intents = [
            (stack.topic("intents"), stack.intent(r, "rd-order", "Order c-1, please."))
            for r in run_ids
        ]
        stack.publish_many(intents)
        # Normally done in about 300 s. Past 360 s, the unfinished runs are probed: a run the
        # Firestore emulator keeps locked (a plain write gets "Transaction lock timeout") is
        # woken by its wake-ups once the lock goes, so it gets 300 s more to finish late, or to
        # end at its timeout; any other unfinished run gets 540 s more. Runs still locked after
        # that, and locked runs that ended at their timeout, are set aside: their sources are
        # not checked, and the test ends as an expected failure naming them after every other
        # run has been checked (docs/reliability.md, "No run is ever stuck").
        stalled: dict[str, list[str]] = {}
        late: dict[str, list[str]] = {}
        try:
            docs = stack.wait_finished(run_ids, sized(360, 3600))
        except AssertionError as slow:
            late = locked_sources(stack, run_ids, "locked at the first deadline")
            try:
                docs = stack.wait_finished(run_ids, sized(300 if late else 540, 1800))
            except AssertionError as still:
                stalled = locked_sources(stack, run_ids, "still locked at the second deadline")
                if not stalled:
                    raise still from slow
                docs = stack.run_docs(run_ids)
                docs.update(
                    stack.run_docs({c for d in docs.values() for c in d.get("child_run_ids") or []})
                )
        for source, locked in late.items():
            if source not in stalled and timed_out(docs, source):
                stalled[source] = locked
        section = "redelivery"
        figures.record(
            section,
            "runs locked by the emulator past 360 s / finished late / ended at their timeout",
            f"{len(late)} / {len([r for r in late if r not in stalled])} / "
            f"{len([r for r in stalled if timed_out(docs, r)])}",
        )
        finished_at = time.monotonic()
        deadline = time.monotonic() + 60
        while proxy.busy() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3.0)  # late duplicates (republished copies) land, and must change nothing
    docs = stack.run_docs(docs)

    checked = [r for r in run_ids if r not in stalled]
    tally = Tally()
    sources = 0
    for run_id in checked:
        sources += 1
        tally.check(RunSnapshot.read(stack, run_id, docs[run_id]), ref[ref_id], run_id, ref_id)
        child = child_of(run_id, docs)
        if child is None:
            tally.lost.append(f"{run_id} (no handoff target)")
            continue
        tally.check(RunSnapshot.read(stack, child, docs[child]), ref[ref_child], run_id, ref_id)

    ours = set(checked) | {c for r in checked for c in docs[r].get("child_run_ids") or []}
    ledger = [e for e in stack.ledger("charge_card") if str(e["key"]).split(":")[0] in ours]
    executions = Counter(e["key"] for e in ledger)
    twice = sorted(k for k, n in executions.items() if n > 1)
    expected_keys = 2 * len(checked)  # one payment in the order run, one in the fulfilment run
    statuses = Counter(
        str(r.get("status")) for replies in proxy.stats.responses.values() for r in replies
    )
    deliveries = sum(proxy.stats.deliveries.values())

    figures.record(section, "runs started (sources + handoff targets)", 2 * SOURCES)
    figures.record(section, "runs finished", tally.finished)
    figures.record(section, "runs lost", len(tally.lost))
    figures.record(section, "steps applied twice", len(tally.steps_applied_twice))
    figures.record(section, "non-idempotent executions twice", len(twice))
    figures.record(section, "non-idempotent calls executed", len(executions))
    figures.record(
        section,
        "non-idempotent results replaced by 'interrupted'",
        len(tally.interrupted_non_idempotent),
    )
    figures.record(
        section,
        "transcripts differing from the reference otherwise",
        len(tally.transcript_mismatch),
    )
    figures.record(section, "pushes from Pub/Sub", deliveries)
    figures.record(section, "handler-level replays", proxy.stats.replays)
    figures.record(section, "duplicate publishes", proxy.stats.republished)
    figures.record(section, "5xx answers redelivered", proxy.stats.redelivered)
    figures.record(
        section,
        "model calls made / applied",
        f"{tally.model_calls_made} / {tally.model_calls_applied}",
    )
    figures.record(
        section, "tool call attempts histogram", dict(sorted(tally.tool_attempts.items()))
    )
    figures.record(section, "handler outcomes", dict(statuses.most_common()))
    figures.record(section, "seconds to finish all runs", round(finished_at - started, 1))

    assert proxy.stats.abandoned == []
    assert tally.lost == [], tally.lost[:5]
    assert tally.steps_applied_twice == [], tally.steps_applied_twice[:5]
    assert twice == [], twice[:5]
    assert len(executions) == expected_keys, (len(executions), expected_keys)
    assert tally.interrupted_non_idempotent == [], tally.interrupted_non_idempotent[:5]
    assert tally.usage_mismatch == [], tally.usage_mismatch[:5]
    assert tally.transcript_mismatch == [], tally.first_difference
    figures.record(section, "runs set aside (stalled behind an emulator lock)", len(stalled))
    if stalled:
        pytest.xfail(
            f"{len(checked)} of {SOURCES} sources checked and correct; the others stalled "
            f"behind a Firestore emulator lock (held past 660 s, or until the run's timeout): "
            f"{stalled}"
        )


def timed_out(docs: dict[str, dict], source: str) -> bool:
    """The source run, or its handoff target, ended at its timeout."""
    runs = [source, *(docs.get(source, {}).get("child_run_ids") or [])]
    reasons = [str(((docs.get(r) or {}).get("result") or {}).get("payload")) for r in runs]
    return any("timed out after" in reason for reason in reasons)


def locked_sources(stack: FaultStack, run_ids: list[str], when: str) -> dict[str, list[str]]:
    """Source run -> the documents of it (or of its handoff target) that no write can reach,
    when every unfinished run has such a document (a lock the Firestore emulator holds for
    minutes: docs/reliability.md); ``{}`` when some unfinished run is not locked (a real stall,
    or just slow)."""
    docs = stack.run_docs(run_ids)
    source_of = {c: r for r, d in docs.items() for c in d.get("child_run_ids") or []}
    docs.update(stack.run_docs(source_of))
    unfinished = [r for r, d in docs.items() if d.get("status") != "finished"]
    unfinished += [r for r in run_ids if r not in docs]
    locked = {r: stack.locked_documents(r) for r in unfinished}
    figures.record("redelivery", f"unfinished runs and their locked documents, {when}", locked)
    if not unfinished or not all(locked.values()):
        return {}
    return {source_of.get(r, r): found for r, found in locked.items()}


def test_duplicate_of_a_running_non_idempotent_call_keeps_the_real_result(
    stack: FaultStack,
) -> None:
    stack.register(
        scripted(
            "rd-slowpay",
            [
                {
                    "tool_calls": [
                        {
                            "name": "slow_charge",
                            "arguments": {"customer": "c-9", "amount_cents": 700, "seconds": 3},
                        }
                    ]
                },
                {"content": "paid"},
            ],
            tools=["slow_charge"],
        )
    )
    run_id = unique("rdslow")
    stack.publish(stack.topic("intents"), stack.intent(run_id, "rd-slowpay", "pay"))
    call_ref = stack.db.collection("agent_runs").document(run_id).collection("tool_calls")
    deadline = time.monotonic() + 30
    while not [c for c in call_ref.stream() if c.get("status") == "running"]:
        assert time.monotonic() < deadline, "the tool call never started"
        time.sleep(0.05)
    # Pub/Sub redelivers the tool message while the first delivery is still running the tool.
    body = {
        "message": {
            "data": base64.b64encode(
                json.dumps({"run_id": run_id, "seq": 0, "index": 0}).encode()
            ).decode(),
            "messageId": f"dup-{run_id}",
        },
        "subscription": "projects/faults-project/subscriptions/faults-tool-invoker",
    }
    url = stack.original_endpoints["faults-tool-invoker"]
    answers: list[dict] = []
    thread = threading.Thread(
        target=lambda: answers.append(httpx.post(url, json=body, timeout=30).json())
    )
    thread.start()
    thread.join()
    run = stack.wait_finished([run_id], 60)[run_id]
    executions = [e for e in stack.ledger("slow_charge") if e["key"] == f"{run_id}:0:0"]
    figures.record(
        "redelivery",
        "duplicate of a running non-idempotent call answered",
        answers[0].get("status"),
    )
    assert answers[0].get("status") == "retry", answers  # 503: Pub/Sub redelivers it later
    assert len(executions) == 1  # at most once: holds
    assert run["result"]["exit"] == "SATISFIED"
    tool_message = next(m for m in stack.transcript(run_id) if m["role"] == "tool")
    assert "interrupted" not in str(tool_message["content"]), tool_message["content"]
