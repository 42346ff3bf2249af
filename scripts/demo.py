"""`make demo`: the product end to end on the local emulators.

Starts the local stack (or reuses a running one), then:
  1. a run started over HTTP (POST /runs) that calls a tool,
  2. a run started by publishing an IntentionMessage to the workspace topic on Pub/Sub,
  3. a run that hands its task to another agent by capability,
  4. a run whose refund waits for a person, approved with `cloudagents approvals approve`,
  5. an orchestrator that calls two peer agents (child runs) and composes their answers,
  6. seed 004's workflows: a transition that runs the content-reviewer on a token, and the
     classification place agent that runs on Cloud Tasks and moves its token on,
following each run's events live and printing every LoopResult.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from cloudagents.cli import follow_run, load_state, print_result, publish_intent
from cloudagents.cli import main as cli
from cloudagents.client import CloudAgentsClient
from cloudagents.runtime.ui import viewer_link


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 76 - len(text)), flush=True)


def model_choice() -> tuple[str, dict[str, str] | None]:
    if os.environ.get("OPENAI_API_KEY"):
        return "openai (gpt-4o-mini), because OPENAI_API_KEY is set", {
            "provider": "openai",
            "name": "gpt-4o-mini",
        }
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "anthropic (claude-3-5-haiku-latest), because ANTHROPIC_API_KEY is set", {
            "provider": "anthropic",
            "name": "claude-3-5-haiku-latest",
        }
    return (
        "the scripted provider (deterministic replies from examples/agents.yaml; no model, no key)",
        None,
    )


def distributed_workflow(client: CloudAgentsClient, state: Any) -> int:
    """Seed 001's ``distributed_workflow.py`` as written (two pull workers of different node
    types and the orchestrator, in one process) against the stack's emulators; then the run as
    the api shows it: its final state and one checkpoint per superstep."""
    example = Path(__file__).resolve().parents[1] / "examples" / "workflows"
    env = {**os.environ, **state.env}
    before = {r["workflow_id"] for r in client.list_workflow_runs()}
    print("$ python examples/workflows/distributed_workflow.py")
    done = subprocess.run(
        [sys.executable, str(example / "distributed_workflow.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    print(done.stdout.rstrip())
    if done.returncode != 0:
        print(done.stderr[-2000:])
        return 1
    new = [r for r in client.list_workflow_runs() if r["workflow_id"] not in before]
    if len(new) != 1:
        print(f"expected one new workflow run, found {len(new)}")
        return 1
    workflow_id = new[0]["workflow_id"]
    print(f"$ cloudagents workflows show {workflow_id}")
    failures = cli(["workflows", "show", workflow_id])
    print(f"$ cloudagents workflows checkpoints {workflow_id} --state")
    return failures + cli(["workflows", "checkpoints", workflow_id, "--state"])


def main() -> int:
    banner("starting the local stack (Firestore, Pub/Sub, Storage, Tasks emulators + 5 services)")
    if cli(["up"]) != 0:
        return 1
    state = load_state()
    client = CloudAgentsClient(state.api_url, token=state.api_token)
    description, real_model = model_choice()
    print(f"\nmodel for agent 'arithmetic': {description}")
    if real_model is not None:
        agent = client.get_agent("arithmetic")
        agent["model"] = real_model
        client.put_agent(agent)
    failures = 0

    banner("1. a run started over HTTP: POST /runs (agent 'arithmetic', one calculator call)")
    started = time.monotonic()
    run_id = client.start_run("arithmetic", "What is (17 + 25) * 3?")
    print(f"run {run_id}: events as they happen")
    follow_run(client, run_id)
    failures += print_result(client.wait(run_id))
    print(f"({time.monotonic() - started:.2f}s end to end)")

    banner("2. a run started by an IntentionMessage published to the workspace topic")
    run_id = f"intent-{uuid.uuid4().hex[:12]}"
    publish_intent(state, "arithmetic", "What is (17 + 25) * 3?", run_id)
    emulator = state.env["PUBSUB_EMULATOR_HOST"]
    print(f"published to Pub/Sub topic '{state.workspace}' (emulator {emulator})")
    follow_run(client, run_id)
    failures += print_result(client.wait(run_id))

    banner("3. a handoff by capability: 'triage' offers the task to an agent with 'ocr'")
    source_id = client.start_run("triage", "Here is scan-0042.png, an invoice. What is the total?")
    follow_run(client, source_id)
    source = client.wait(source_id)
    failures += print_result(source)
    offer_id = source["result"]["payload"]["offer_id"]
    deadline = time.monotonic() + 60
    while (offer := client.handoff(offer_id))["status"] == "open" and time.monotonic() < deadline:
        time.sleep(0.2)
    print(f"offer {offer_id}: {offer['status']} by {offer['claimed_by_agent']}")
    target_id = offer["target_run_id"]
    follow_run(client, target_id)
    target = client.wait(target_id)
    failures += print_result(target)
    chain = " -> ".join(f"{link['agent_id']} ({link['exit']})" for link in target["handoff_chain"])
    print(f"handoff chain: {chain}")

    banner("4. a run that waits for approval: 'refunds' calls refund_order (high risk)")
    run_id = client.start_run("refunds", "Order A-1001 arrived damaged; please refund it.")
    deadline = time.monotonic() + 60
    while client.get_run(run_id)["status"] != "waiting_approval":
        if time.monotonic() > deadline:
            print(f"run {run_id} never waited for approval")
            return 1
        time.sleep(0.2)
    print(f"run {run_id} is waiting_approval; its other tool call ran meanwhile.")
    print("$ cloudagents approvals list")
    cli(["approvals", "list"])
    print(f"$ cloudagents approvals approve {run_id} --reason 'damage confirmed'")
    if cli(["approvals", "approve", run_id, "--reason", "damage confirmed"]) != 0:
        return 1
    follow_run(client, run_id)
    failures += print_result(client.wait(run_id))

    banner("5. agent-to-agent calls: 'trip-planner' asks 'weather-desk' and 'budget-desk'")
    run_id = client.start_run("trip-planner", "Plan a weekend in Lisbon for two.")
    follow_run(client, run_id)
    failures += print_result(client.wait(run_id))
    print(f"$ cloudagents runs tree {run_id}")
    failures += cli(["runs", "tree", run_id])

    banner("6. seed 004: a token moved by 'ai_review' (content-reviewer), then a place agent")
    examples = Path(__file__).resolve().parents[1] / "examples" / "transitions"
    for name in ("document_review.yaml", "classification.yaml"):
        failures += cli(["transitions", "apply", "-f", str(examples / name)])
    doc = f"doc-{uuid.uuid4().hex[:8]}"
    document = json.dumps({"content": "Q3 revenue grew 12%."})
    failures += cli(
        [
            "tokens",
            "create",
            "document-review",
            "--id",
            doc,
            "--data",
            document,
            "--metadata",
            json.dumps({"type": "report", "priority": "high"}),
        ]
    )
    failures += cli(["tokens", "fire", doc, "ai_review", "--wait"])
    item = f"item-{uuid.uuid4().hex[:8]}"
    failures += cli(
        [
            "tokens",
            "create",
            "content-intake",
            "--id",
            item,
            "--data",
            document,
            "--metadata",
            json.dumps({"type": "article", "status": "unclassified"}),
        ]
    )
    print("the classifier runs after its schedule's initial delay (5 s), on Cloud Tasks")
    deadline = time.monotonic() + 60
    while client._call("GET", f"/tokens/{item}")["place"] != "categorized":
        if time.monotonic() > deadline:
            print(f"token {item} was not categorized")
            failures += 1
            break
        time.sleep(0.5)
    failures += cli(["tokens", "show", item])

    banner("7. seed 001: a graph workflow across two workers (researcher, writer) on the stack")
    failures += distributed_workflow(client, state)

    banner("done")
    print(f"api: {state.api_url}   logs: {state.log_dir}")
    print(f"run viewer: {viewer_link(state.api_url, state.api_token)}")
    print("try: .venv/bin/cloudagents run arithmetic 'What is 2**10?' --follow")
    print("stop the stack: make down")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
