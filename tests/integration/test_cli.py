"""Every ``cloudagents`` command against the emulator stack, through ``cloudagents.cli.main``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from google.cloud import pubsub_v1

from cloudagents import cli
from cloudagents.client import CloudAgentsClient
from cloudagents.local.emulators import free_ports
from cloudagents.local.stack import ServiceProcess, StackState
from tests.integration.conftest import register, wait_for_run, wait_until

pytestmark = pytest.mark.integration

REPLY = "Forty-two: six times seven, checked with the calculator, no rounding involved. " * 2


def scripted(agent_id: str, script: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": agent_id,
        "instructions": "You do arithmetic with the calculator.",
        "model": {"provider": "scripted", "name": "scripted-cli", "script": script},
        "tools": ["calculator"],
        **extra,
    }


CALC = [
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
    {"content": REPLY, "delay_seconds": 1.0},
]
AGENTS = [
    scripted("cli-calc", CALC, capabilities=["math"]),
    scripted("cli-guarded", CALC, guardrails={"blocked_patterns": ["password"]}),
    scripted("cli-sleepy", [{"content": "zzz", "delay_seconds": 5}]),
]


class Recorder(io.StringIO):
    """stdout that remembers when each piece was written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((time.time(), text))
        return super().write(text)


class Cli:
    def __init__(self, state: StackState) -> None:
        self.state = state
        self.stdout = Recorder()

    def __call__(self, *args: str, api: bool = True) -> tuple[int, str, str]:
        self.stdout = Recorder()
        stderr = io.StringIO()
        base = ["--api", self.state.api_url, "--token", self.state.api_token or ""] if api else []
        with contextlib.redirect_stdout(self.stdout), contextlib.redirect_stderr(stderr):
            code = cli.main([*base, *args])
        return code, self.stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def agents_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "agents.yaml"
    path.write_text(yaml.safe_dump({"agents": AGENTS}))
    return path


@pytest.fixture
def run_cli(
    stack_state: StackState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, agents_file: Path
) -> Cli:
    state_file = tmp_path / "state.json"
    stack_state.save(state_file)
    monkeypatch.setenv("CLOUDAGENTS_STATE", str(state_file))
    return Cli(stack_state)


@pytest.fixture(scope="module")
def finished_run(api: httpx.Client, agents_file: Path) -> str:
    for definition in AGENTS:
        register(api, definition)
    run_id = api.post("/runs", json={"agent_id": "cli-calc", "message": "6*7?"}).json()["run_id"]
    wait_for_run(api, run_id)
    return str(run_id)


def test_status_and_up_on_the_running_stack(run_cli: Cli) -> None:
    code, out, _ = run_cli("status", api=False)
    assert code == cli.EXIT_OK
    assert all(f"{name}" in out for name in run_cli.state.services) and "DOWN" not in out
    assert "FIRESTORE_EMULATOR_HOST" in out
    code, out, _ = run_cli("up", api=False)
    assert code == cli.EXIT_OK
    assert "already running" in out and f"CLOUDAGENTS_API_URL={run_cli.state.api_url}" in out
    assert f"run viewer: {run_cli.state.api_url}/ui#token=" in out


def test_agents_apply_list_show(run_cli: Cli, agents_file: Path) -> None:
    code, out, _ = run_cli("agents", "apply", "-f", str(agents_file))
    assert code == cli.EXIT_OK
    assert out.splitlines() == [f"applied agent {a['id']}" for a in AGENTS]
    code, out, _ = run_cli("agents", "list")
    assert code == cli.EXIT_OK
    line = next(x for x in out.splitlines() if x.startswith("cli-calc "))
    assert "scripted:scripted-cli" in line and "capabilities=math" in line
    code, out, _ = run_cli("agents", "show", "cli-calc")
    assert code == cli.EXIT_OK
    shown = yaml.safe_load(out)
    assert shown["id"] == "cli-calc" and shown["tools"] == ["calculator"]


def test_run_follow_prints_events_live_then_the_loop_result(
    run_cli: Cli, finished_run: str
) -> None:
    code, out, _ = run_cli("run", "cli-calc", "What is 6*7?", "--follow")
    assert code == cli.EXIT_OK
    lines = out.splitlines()
    assert lines[0].startswith("started run run-") and lines[0].endswith(" over HTTP")
    assert '  [step 0] tool call   calculator({"expression": "6*7"})' in lines
    assert "  [step 0] tool result calculator -> 42" in lines
    assert f"  [step 1] model: {REPLY}" in lines
    assert any(x.startswith("  [step 1] completed: SATISFIED") for x in lines)
    assert lines.index("  [step 0] tool result calculator -> 42") < lines.index(
        f"  [step 1] model: {REPLY}"
    )
    result_at = next(i for i, x in enumerate(lines) if x.startswith("LoopResult for run-"))
    assert yaml.safe_load("\n".join(lines[result_at + 1 :]))["exit"] == "SATISFIED"
    # live: the first words were printed while the model was still writing the rest
    first_chunk_at = next(
        t for t, text in run_cli.stdout.writes if len(text) >= 16 and REPLY.startswith(text)
    )
    completed_at = next(t for t, text in run_cli.stdout.writes if "completed: SATISFIED" in text)
    assert completed_at - first_chunk_at > 0.3


def test_run_via_pubsub_follow(run_cli: Cli, finished_run: str) -> None:
    run_id = f"cli-pubsub-{uuid.uuid4().hex[:8]}"
    code, out, _ = run_cli(
        "run", "cli-calc", "6*7?", "--via", "pubsub", "--follow", "--run-id", run_id
    )
    assert code == cli.EXIT_OK
    assert f"published an intent for run {run_id} on topic {run_cli.state.workspace}" in out
    assert "completed: SATISFIED" in out and f"LoopResult for {run_id}" in out


def test_runs_list_show_and_events(run_cli: Cli, finished_run: str) -> None:
    code, out, _ = run_cli("runs", "list", "--agent", "cli-calc")
    assert code == cli.EXIT_OK
    line = next(x for x in out.splitlines() if x.startswith(finished_run))
    assert line.split()[1:4] == ["cli-calc", "finished", "SATISFIED"]
    code, out, _ = run_cli("runs", "show", finished_run)
    assert code == cli.EXIT_OK
    assert out.startswith(f"run {finished_run}  agent cli-calc  status finished")
    assert "1 tool calls" in out and "      tool: 42" in out and '"exit": "SATISFIED"' in out
    code, out, _ = run_cli("events", finished_run)
    assert code == cli.EXIT_OK
    shown = out.splitlines()
    assert shown[0].startswith("  [step 0] thinking: calling model")
    lines = [x for x in shown if "] thinking: " not in x]
    assert lines[0].startswith("  [step 0] tool call   calculator")
    assert any(x.startswith("  [step 1] chunk: 'Forty-two") for x in lines)
    assert lines[-1].startswith("  [step 1] completed: SATISFIED")
    code, out, _ = run_cli("events", finished_run, "--follow")
    assert code == cli.EXIT_OK
    assert f"  [step 1] model: {REPLY}" in out.splitlines()


def test_events_follow_a_live_run(run_cli: Cli, api: httpx.Client, finished_run: str) -> None:
    run_id = api.post("/runs", json={"agent_id": "cli-calc", "message": "6*7"}).json()["run_id"]
    code, out, _ = run_cli("events", run_id, "--follow")
    assert code == cli.EXIT_OK
    assert out.splitlines()[-1].startswith("  [step 1] completed: SATISFIED")
    assert f"  [step 1] model: {REPLY}" in out.splitlines()


def test_runs_cancel_then_events_follow_says_cancelled(
    run_cli: Cli, api: httpx.Client, finished_run: str
) -> None:
    run_id = api.post("/runs", json={"agent_id": "cli-sleepy", "message": "wake"}).json()["run_id"]
    code, out, _ = run_cli("runs", "cancel", run_id)
    assert (code, out.strip()) == (cli.EXIT_OK, f"run {run_id}: finished (CANCELLED)")
    code, out, _ = run_cli("events", run_id, "--follow")
    assert code == cli.EXIT_RUN_FAILED
    assert "failed: CANCELLED: cancelled by request" in out


def test_a_failing_run_exits_1(run_cli: Cli, finished_run: str) -> None:
    code, out, _ = run_cli("run", "cli-guarded", "tell me the password", "--follow")
    assert code == cli.EXIT_RUN_FAILED
    assert "failed: GUARDRAIL_BLOCK" in out and '"exit": "GUARDRAIL_BLOCK"' in out


def test_bad_input_exits_2_and_an_unreachable_api_exits_3(run_cli: Cli, tmp_path: Path) -> None:
    code, _, err = run_cli("run", "no-such-agent", "hello")
    assert code == cli.EXIT_USAGE and "unknown agent 'no-such-agent'" in err
    code, _, err = run_cli("agents", "apply", "-f", str(tmp_path / "missing.yaml"))
    assert code == cli.EXIT_USAGE
    (port,) = free_ports(1)
    code, _, err = run_cli("--api", f"http://127.0.0.1:{port}", "agents", "list", api=False)
    assert code == cli.EXIT_UNREACHABLE and "cannot reach the api" in err


def test_dead_letters_list_shows_a_poison_message(
    run_cli: Cli, api: httpx.Client, stack_state: StackState
) -> None:
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(stack_state.project, stack_state.workspace)
    message_id = publisher.publish(topic, b"{this is not an intent").result(timeout=30)
    wait_until(
        lambda: any(
            d["message_id"] == message_id for d in api.get("/dead-letters").json()["dead_letters"]
        ),
        what="the poison message in dead_letters",
    )
    code, out, _ = run_cli("dead-letters", "list")
    assert code == cli.EXIT_OK
    line = next(x for x in out.splitlines() if message_id in x)
    letter_id = line.split()[0]
    assert letter_id.endswith(f"-{message_id}")
    code, out, _ = run_cli("dead-letters", "show", letter_id)
    assert code == cli.EXIT_OK
    assert "message: {this is not an intent" in out and "push body" not in out
    code, out, _ = run_cli("dead-letters", "replay", letter_id)
    assert code == cli.EXIT_OK and f"replayed {letter_id} to topic {stack_state.workspace}" in out
    code, _, err = run_cli("dead-letters", "show", "no-such-letter")
    assert code == cli.EXIT_USAGE and "unknown dead letter" in err


@pytest.fixture
def dummy_process() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_status_and_down_with_a_state_of_our_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dummy_process: subprocess.Popen[bytes]
) -> None:
    (port,) = free_ports(1)
    state = StackState(
        project="p",
        workspace="w",
        log_dir=str(tmp_path),
        env={},
        services={"api": ServiceProcess("api", port, dummy_process.pid, str(tmp_path / "a.log"))},
    )
    path = tmp_path / "state.json"
    state.save(path)
    monkeypatch.setenv("CLOUDAGENTS_STATE", str(path))
    cli_ = Cli(state)
    code, out, _ = cli_("status", api=False)
    assert code == cli.EXIT_UNREACHABLE and "DOWN" in out
    code, out, _ = cli_("down", api=False)
    assert code == cli.EXIT_OK
    assert out.strip() == f"stopped api (pid {dummy_process.pid})"
    assert dummy_process.wait(timeout=10) == -signal.SIGTERM
    assert not path.exists()
    code, out, _ = cli_("down", api=False)
    assert code == cli.EXIT_OK and out.startswith("nothing to stop")
    code, out, _ = cli_("status", api=False)
    assert code == cli.EXIT_UNREACHABLE and "not running" in out


# ---- the event stream's reconnection (no emulator: a scripted api) --------------------------


def test_follow_reconnects_from_the_last_event_id_after_a_dropped_connection() -> None:
    events = [
        {"id": f"000000-b000{i}", "seq": 0, "type": "thinking", "status": f"s{i}"} for i in range(3)
    ] + [{"id": "000001-b0000", "seq": 1, "type": "completed", "exit": "SATISFIED"}]
    seen_ids: list[str | None] = []

    def frames(items: list[dict[str, Any]]) -> Iterator[bytes]:
        yield b": hello\n\n"
        for item in items:
            yield f"id: {item['id']}\nevent: {item['type']}\ndata: {json.dumps(item)}\n\n".encode()

    class Dropping(httpx.SyncByteStream):
        def __init__(self, items: list[dict[str, Any]], drop: bool) -> None:
            self.items, self.drop = items, drop

        def __iter__(self) -> Iterator[bytes]:
            yield from frames(self.items)
            if self.drop:
                raise httpx.RemoteProtocolError("peer closed connection")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/runs/r1":
            return httpx.Response(200, json={"run_id": "r1", "status": "running"})
        last = request.headers.get("last-event-id")
        seen_ids.append(last)
        remaining = [e for e in events if last is None or e["id"] > last]
        drop = len(seen_ids) == 1
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=Dropping(remaining[:2] if drop else remaining, drop),
        )

    client = CloudAgentsClient("http://api.test", token="t" * 20)
    client.http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(handler))
    reconnects: list[str | None] = []
    got = list(client.follow("r1", on_reconnect=lambda after, _: reconnects.append(after)))
    assert got == events
    assert seen_ids == [None, "000000-b0001"] and reconnects == ["000000-b0001"]


def refunding(agent_id: str) -> dict[str, Any]:
    return {
        "id": agent_id,
        "instructions": "You refund orders.",
        "model": {
            "provider": "scripted",
            "name": "scripted-cli",
            "script": [
                {
                    "tool_calls": [
                        {
                            "name": "refund_order",
                            "arguments": {"order_id": "A-1", "amount_eur": 9.5},
                        }
                    ]
                },
                {"content": "refunded"},
            ],
        },
        "tools": ["refund_order"],
        "approval": {"threshold": "high", "timeout_seconds": 300},
    }


def waiting_for_approval(api: httpx.Client, run_id: str) -> None:
    wait_until(
        lambda: api.get(f"/runs/{run_id}").json().get("status") == "waiting_approval",
        timeout=60,
        what=f"run {run_id} to wait for approval",
    )


def test_approvals_list_show_approve_and_reject(run_cli: Cli, api: httpx.Client) -> None:
    register(api, refunding("cli-refunds"))
    approved = api.post("/runs", json={"agent_id": "cli-refunds", "message": "refund A-1"})
    rejected = api.post("/runs", json={"agent_id": "cli-refunds", "message": "refund A-1"})
    approved_id, rejected_id = approved.json()["run_id"], rejected.json()["run_id"]
    for run_id in (approved_id, rejected_id):
        waiting_for_approval(api, run_id)
    code, out, _ = run_cli("approvals", "list")
    assert code == cli.EXIT_OK
    assert f"{approved_id}:000000-000" in out and "refund_order" in out and "pending" in out
    code, out, _ = run_cli("runs", "show", approved_id)
    assert code == cli.EXIT_OK and "waiting for approval" in out
    assert f"cloudagents approvals approve {approved_id}:000000-000" in out
    code, out, _ = run_cli("approvals", "show", approved_id)
    assert code == cli.EXIT_OK and "risk 'high'" in out and "quorum 1" in out
    code, out, _ = run_cli("approvals", "approve", approved_id, "--reason", "checked")
    assert code == cli.EXIT_OK and "approved by" in out, out
    code, out, err = run_cli("approvals", "approve", approved_id, "000000-000")
    assert code == cli.EXIT_USAGE and "already approved" in err
    code, out, _ = run_cli(
        "approvals", "reject", f"{rejected_id}:000000-000", "--reason", "duplicate order"
    )
    assert code == cli.EXIT_OK and "rejected by" in out
    assert wait_for_run(api, approved_id)["result"]["exit"] == "SATISFIED"
    finished = wait_for_run(api, rejected_id)
    assert finished["result"]["exit"] == "SATISFIED"
    transcript = api.get(f"/runs/{rejected_id}/messages").json()["messages"]
    assert any("duplicate order" in (m.get("content") or "") for m in transcript)
    code, out, _ = run_cli("approvals", "list", "--status", "all", "--run", approved_id)
    assert code == cli.EXIT_OK and "approved" in out
    code, _, err = run_cli("approvals", "approve", approved_id)
    assert code == cli.EXIT_USAGE and "0 pending approvals" in err


def test_agents_history_and_delete(run_cli: Cli, tmp_path: Path) -> None:
    """A definition's versions on Firestore: applied twice unchanged is one version, changed
    is a second, deleted is a third without a definition."""
    definition = scripted("cli-doomed", CALC)
    path = tmp_path / "doomed.yaml"
    for instructions in ("One.", "One.", "Two."):
        path.write_text(yaml.safe_dump({**definition, "instructions": instructions}))
        assert run_cli("agents", "apply", "-f", str(path))[0] == cli.EXIT_OK
    assert run_cli("agents", "delete", "cli-doomed")[:2] == (
        cli.EXIT_OK,
        "deleted agent cli-doomed\n",
    )
    code, out, _ = run_cli("agents", "history", "cli-doomed")
    assert code == cli.EXIT_OK
    assert [line.split()[0] for line in out.splitlines()] == ["v1", "v2", "v3"]
    assert out.splitlines()[-1].endswith("deleted") and "scripted-cli" in out.splitlines()[0]
    code, _, err = run_cli("agents", "delete", "cli-doomed")
    assert code == cli.EXIT_USAGE and "HTTP 404" in err
