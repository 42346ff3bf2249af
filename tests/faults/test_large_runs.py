"""A long run with large tool outputs: no Firestore document near its 1 MiB limit, and the
context snapshots stay intact (the last snapshot holds the transcript's last 20 messages).

Every document the run wrote is measured with Firestore's documented storage-size formula
(https://cloud.google.com/firestore/docs/storage-size): the run document, and every document of
its ``steps`` (a step's messages, events and interaction record), ``messages``,
``tool_calls``, ``model_calls`` and ``events`` sub-collections, and the run's ``budgets`` /
``rate_limits`` counters.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.faults import figures
from tests.faults.fault_tools import BIG_OUTPUT_BYTES
from tests.faults.harness import FaultStack, document_size, sized, unique
from tests.faults.scenarios import scripted

STEPS = sized(300, 600)
MIB = 1024 * 1024


def long_agent(agent_id: str, steps: int) -> dict:
    turns = [
        {"tool_calls": [{"name": "big_output", "arguments": {"n": i}}], "total_tokens": 10}
        for i in range(steps)
    ]
    turns.append({"content": f"read {steps} large outputs", "total_tokens": 10})
    return scripted(
        agent_id,
        turns,
        tools=["big_output"],
        budget={"max_iterations": steps + 5},
    )


@pytest.mark.timeout(sized(1200, 3600))
def test_long_run_with_large_tool_outputs(stack: FaultStack) -> None:
    agent_id = "lg-reader"
    stack.register(long_agent(agent_id, STEPS))
    run_id = unique("lg")
    started = time.monotonic()
    stack.publish(stack.topic("intents"), stack.intent(run_id, agent_id, "read them all"))
    run = stack.wait_finished([run_id], sized(900, 3600), poll=2.0)[run_id]
    elapsed = time.monotonic() - started
    assert run["result"]["exit"] == "SATISFIED", run["result"]
    assert run["result"]["iterations"] == STEPS + 1
    assert run["result"]["tool_calls"] == STEPS

    # The final snapshot (seq = final seq) is written after the run finished.
    deadline = time.monotonic() + 60
    while ((pointer := stack.snapshot(run_id)) or {}).get("seq") != run["seq"]:
        assert time.monotonic() < deadline, pointer
        time.sleep(0.5)
        run = stack.run_docs([run_id])[run_id]

    sizes: dict[str, int] = {}
    run_ref = stack.db.collection("agent_runs").document(run_id)
    sizes[f"agent_runs/{run_id}"] = document_size(f"agent_runs/{run_id}", run)
    for collection in ("steps", "messages", "tool_calls", "model_calls", "events"):
        for doc in run_ref.collection(collection).stream():
            path = f"agent_runs/{run_id}/{collection}/{doc.id}"
            sizes[path] = document_size(path, doc.to_dict())
    from google.cloud import firestore

    legacy = stack.db.collection("interactions").where(
        filter=firestore.FieldFilter("run_id", "==", run_id)
    )
    for snap in legacy.stream():  # runs written before step documents
        path = f"interactions/{snap.id}"
        sizes[path] = document_size(path, snap.to_dict())
    for collection in ("rate_limits", "budgets"):
        for doc in stack.db.collection(collection).stream():
            if doc.id.startswith(f"{agent_id}:"):
                path = f"{collection}/{doc.id}"
                sizes[path] = document_size(path, doc.to_dict())
    largest_path = max(sizes, key=sizes.__getitem__)
    kinds: dict[str, int] = {}
    for path, size in sizes.items():
        parts = path.split("/")
        kind = parts[2] if len(parts) > 2 else parts[0]
        kinds[kind] = max(kinds.get(kind, 0), size)

    transcript = stack.transcript(run_id)
    assert (
        pointer is not None and run.get("snapshot") is None
    )  # found in the bucket, not on the run
    snapshot_uri = pointer["uri"]
    from google.cloud import storage  # type: ignore[attr-defined]

    bucket_name, _, name = snapshot_uri.removeprefix("gs://").partition("/")
    blob = storage.Client(project=stack.local.project).bucket(bucket_name).blob(name)
    snapshot_bytes = blob.download_as_bytes()
    snapshot = json.loads(snapshot_bytes)
    last = [{k: v for k, v in m.items() if k != "i"} for m in transcript[-20:]]
    snapped = [
        {k: v for k, v in m.items() if v is not None and v != [] and v != {}}
        for m in snapshot["messages"]
    ]
    last = [{k: v for k, v in m.items() if v is not None and v != [] and v != {}} for m in last]

    section = "large runs"
    figures.record(section, "steps (model calls with a ~20 KB tool output each)", STEPS)
    figures.record(section, "tool output bytes", BIG_OUTPUT_BYTES)
    figures.record(section, "documents measured", len(sizes))
    figures.record(section, "largest document (bytes)", sizes[largest_path])
    figures.record(section, "largest document", largest_path.replace(run_id, "RUN"))
    figures.record(section, "largest by kind (bytes)", kinds)
    figures.record(section, "transcript messages", len(transcript))
    figures.record(section, "snapshot object bytes", len(snapshot_bytes))
    figures.record(section, "seconds", round(elapsed, 1))
    figures.record(section, "seconds per step", round(elapsed / (STEPS + 1), 3))

    assert sizes[largest_path] < MIB, (largest_path, sizes[largest_path])
    assert len(transcript) == 2 + 2 * STEPS + 1
    assert snapshot["seq"] == run["seq"] and snapshot["message_count"] == len(transcript)
    assert len(snapped) == 20
    assert snapped == last
