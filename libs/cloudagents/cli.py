"""The ``cloudagents`` command: the local stack, agents, runs, events, approvals, dead letters,
functions (their commands are in ``cli_functions.py``).

Exit codes: 0 success (a run that ends SATISFIED or HANDOFF), 1 a run that ended otherwise,
2 bad usage or input, 3 the api or the stack cannot be reached, 4 a wait timed out.

``--follow`` (``run``, ``events``) reads the api's Server-Sent Events stream and, when the
connection drops, reconnects from the last event id it printed (nothing lost, nothing twice);
progress (waiting for a run to start, quiet spells, reconnections) goes to stderr.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from cloudagents.cli_functions import add_function_commands
from cloudagents.cli_transitions import add_transition_commands
from cloudagents.cli_workflows import add_workflow_commands
from cloudagents.client import ApiError, CloudAgentsClient

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 0, 1, 2, 3, 4
SUCCESS_EXITS = frozenset({"SATISFIED", "HANDOFF"})
FOLLOW_KEEPALIVE_SECONDS = 5.0


def repo_root() -> Path:
    from cloudagents.local.emulators import default_repo_root

    return default_repo_root()


def state_path() -> Path:
    return Path(os.environ.get("CLOUDAGENTS_STATE", repo_root() / ".local" / "state.json"))


def load_state() -> Any:
    from cloudagents.local.stack import StackState

    path = state_path()
    return StackState.load(path) if path.exists() else None


def out(text: str = "") -> None:
    print(text, flush=True)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- the local stack ---------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from cloudagents.local.stack import LocalStack, stack_is_healthy
    from cloudagents.runtime.ui import viewer_link
    from cloudagents.topology import parse_node_types

    state = load_state()
    if state is not None and stack_is_healthy(state):
        out(
            f"the local stack is already running (api {state.api_url}); `cloudagents down` stops it"
        )
        print_env(state)
        out(f"run viewer: {viewer_link(state.api_url, state.api_token)}")
        return EXIT_OK
    stack = LocalStack(
        project=args.project,
        workspace=args.workspace,
        graph_push_node_types=parse_node_types(args.graph_push_node_types),
        graph_modules=[m.strip() for m in args.graph_modules.split(",") if m.strip()],
    )
    state = stack.start()
    stack.detach()
    state.save(state_path())
    if args.agents and Path(args.agents).exists():
        client = CloudAgentsClient(state.api_url, token=state.api_token)
        for definition in read_definitions(Path(args.agents)):
            client.put_agent(definition)
            out(f"registered agent {definition['id']}")
    out("")
    out("endpoints:")
    for name, service in state.services.items():
        out(f"  {name:<20} {service.url}   log: {service.log_path}")
    print_env(state)
    out(f"run viewer: {viewer_link(state.api_url, state.api_token)}")
    out(f"logs: {state.log_dir}    stop everything: cloudagents down (or make down)")
    return EXIT_OK


def print_env(state: Any) -> None:
    out("environment for clients (gcloud, the Google client libraries, the CLI):")
    env = {
        **state.env,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB": f"http://{state.env['PUBSUB_EMULATOR_HOST']}/",
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CORE_PROJECT": state.project,
    }
    env["CLOUDAGENTS_API_TOKEN"] = state.api_token or ""
    hidden = ("CLOUDAGENTS_TRACE_EXPORTER", "CLOUDAGENTS_PUSH_AUTH", "CLOUDAGENTS_API_TOKENS")
    for key in sorted(env):
        if key not in hidden:
            out(f"  export {key}={env[key]}")


def cmd_down(args: argparse.Namespace) -> int:
    from cloudagents.local.stack import stop_from_state

    path = state_path()
    state = load_state()
    if state is None:
        out("nothing to stop: no local stack state at " + str(path))
        return EXIT_OK
    for line in stop_from_state(state):
        out(f"stopped {line}")
    path.unlink(missing_ok=True)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from cloudagents.local.stack import service_health

    state = load_state()
    if state is None:
        out("the local stack is not running (`cloudagents up` starts it)")
        return EXIT_UNREACHABLE
    healthy = True
    for name, service in state.services.items():
        ok = service_health(service)
        healthy &= ok
        out(f"  {name:<20} {service.url:<28} {'up' if ok else 'DOWN'}")
    for name, value in sorted(state.env.items()):
        if name.endswith("EMULATOR_HOST"):
            out(f"  {name:<28} {value}")
    return EXIT_OK if healthy else EXIT_UNREACHABLE


# ---- agents ----------------------------------------------------------------------------------


def read_definitions(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict) and "agents" in data:
        data = data["agents"]
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        raise ValueError(f"{path}: expected an agent mapping, a list of them, or {{agents: [...]}}")
    return items


def cmd_agents_apply(args: argparse.Namespace) -> int:
    client = api_client(args)
    for definition in read_definitions(Path(args.file)):
        client.put_agent(definition)
        out(f"applied agent {definition.get('id')}")
    return EXIT_OK


def cmd_agents_list(args: argparse.Namespace) -> int:
    for agent in api_client(args).list_agents():
        model = agent["model"]
        caps = ",".join(agent.get("capabilities", [])) or "-"
        out(f"{agent['id']:<24} {model['provider']}:{model['name']:<28} capabilities={caps}")
    return EXIT_OK


def cmd_agents_show(args: argparse.Namespace) -> int:
    out(yaml.safe_dump(api_client(args).get_agent(args.agent_id), sort_keys=False).rstrip())
    return EXIT_OK


def cmd_agents_delete(args: argparse.Namespace) -> int:
    api_client(args).delete_agent(args.agent_id)
    out(f"deleted agent {args.agent_id}")
    return EXIT_OK


def cmd_agents_history(args: argparse.Namespace) -> int:
    history = api_client(args).agent_versions(args.agent_id)
    for version in history["versions"]:
        definition = version["definition"]
        what = "deleted" if definition is None else f"{definition['model']['name']}"
        out(f"v{version['version']:<4} {version['created_at']}  {what}")
    return EXIT_OK


# ---- runs ------------------------------------------------------------------------------------


def format_event(event: dict[str, Any]) -> str | None:
    step = f"[step {event['seq']}]"
    match event["type"]:
        case "content_chunk":
            return None
        case "thinking":
            return f"  {step} thinking: {event['status']}"
        case "tool_call":
            return f"  {step} tool call   {event['tool_name']}({json.dumps(event['arguments'])})"
        case "tool_result":
            marker = "error" if event.get("is_error") else "result"
            return f"  {step} tool {marker} {event['tool_name']} -> {json.dumps(event['result'])}"
        case "handoff":
            caps = ",".join(event.get("required_capabilities", []))
            return f"  {step} handoff {event['status']}: offer {event['offer_id']} needs [{caps}]"
        case "approval_requested":
            return (
                f"  {step} approval needed for {event['tool_name']}"
                f"({json.dumps(event['arguments'])}): cloudagents approvals approve "
                f"{event['run_id']}:{event['approval_id']}  (expires {event['expires_at']})"
            )
        case "completed":
            return f"  {step} completed: {event['exit']} ({event['total_tokens']} tokens)"
        case "failed":
            return f"  {step} failed: {event['exit']}: {event['error']}"
    return f"  {step} {event['type']}"


class _LivePrinter:
    """Prints a run's events as they arrive: model text inline, one line per other event, and
    progress (waiting, keep-alives, reconnections) on stderr."""

    def __init__(self, run_id: str, quiet_chunks: bool = False) -> None:
        self.run_id = run_id
        self.quiet_chunks = quiet_chunks
        self.streaming = False

    def end_line(self) -> None:
        if self.streaming:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.streaming = False

    def event(self, event: dict[str, Any]) -> None:
        if event["type"] == "content_chunk":
            if not self.quiet_chunks:
                if not self.streaming:
                    sys.stdout.write(f"  [step {event['seq']}] model: ")
                    self.streaming = True
                sys.stdout.write(event["chunk"])
                sys.stdout.flush()
            return
        self.end_line()
        line = format_event(event)
        if line:
            out(line)

    def waiting(self) -> None:
        err(f"  ... waiting for run {self.run_id} to start")

    def idle(self, seconds: float) -> None:
        if seconds >= FOLLOW_KEEPALIVE_SECONDS - 0.5:
            self.end_line()
            err(f"  ... still running ({seconds:.0f}s since the last event)")

    def reconnect(self, after: str | None, error: Exception | None) -> None:
        self.end_line()
        reason = f" ({error})" if error else ""
        err(f"  ... connection lost{reason}; resuming after event {after or '(start)'}")


def follow_run(
    client: CloudAgentsClient, run_id: str, *, quiet_chunks: bool = False, timeout: float = 600.0
) -> dict[str, Any] | None:
    """Stream the run's events (SSE, reconnecting from the last id) until its terminal event,
    which is returned (``None`` if the stream ended without one)."""
    printer = _LivePrinter(run_id, quiet_chunks)
    last: dict[str, Any] | None = None
    for event in client.follow(
        run_id,
        timeout=timeout,
        idle=printer.idle,
        on_reconnect=printer.reconnect,
        waiting=printer.waiting,
        keepalive_seconds=FOLLOW_KEEPALIVE_SECONDS,
    ):
        printer.event(event)
        last = event
    printer.end_line()
    return last if last is not None and last["type"] in ("completed", "failed") else None


def print_result(run: dict[str, Any]) -> int:
    result = run.get("result") or {}
    out(f"LoopResult for {run['run_id']} (agent {run['agent_id']}):")
    out(json.dumps(result, indent=2))
    return EXIT_OK if result.get("exit") in SUCCESS_EXITS else EXIT_RUN_FAILED


def publish_intent(
    state: Any, agent_id: str, message: str, run_id: str, conversation_id: str | None = None
) -> None:
    """Start a run the way any producer would: an IntentionMessage on the workspace topic."""
    from cloudagents.bootstrap import publish_message
    from cloudagents.domain.intents import IntentionMessage

    os.environ.update(state.env)
    intent = IntentionMessage.for_run(
        run_id=run_id,
        agent_id=agent_id,
        message=message,
        source_agent="cli",
        conversation_id=conversation_id,
    )
    publish_message(state.project, state.workspace, intent.model_dump_json().encode())


def cmd_run(args: argparse.Namespace) -> int:
    client = api_client(args)
    if args.via == "pubsub":
        state = load_state()
        if state is None:
            err("--via pubsub publishes to the local stack's emulator: run `cloudagents up`")
            return EXIT_UNREACHABLE
        client.get_agent(args.agent_id)  # a clear 404 before publishing
        run_id = args.run_id or f"run-{uuid.uuid4().hex}"
        publish_intent(state, args.agent_id, args.message, run_id, args.conversation)
        out(f"published an intent for run {run_id} on topic {state.workspace}")
    else:
        run_id = client.start_run(
            args.agent_id, args.message, run_id=args.run_id, conversation_id=args.conversation
        )
        out(f"started run {run_id} over HTTP")
    if args.follow:
        follow_run(client, run_id, timeout=args.timeout)
    return print_result(client.wait(run_id, timeout=args.timeout))


def cmd_runs_list(args: argparse.Namespace) -> int:
    for run in api_client(args).list_runs(agent=args.agent, status=args.status, limit=args.limit):
        exit_ = run.get("exit") or "-"
        out(
            f"{run['run_id']:<44} {run['agent_id']:<20} {run['status']:<14} {exit_:<16} "
            f"{run['created_at']}"
        )
    return EXIT_OK


def cmd_runs_show(args: argparse.Namespace) -> int:
    client = api_client(args)
    run = client.get_run(args.run_id)
    transcript = client.messages(args.run_id)
    progress = run["progress"]
    out(f"run {run['run_id']}  agent {run['agent_id']}  status {run['status']}  seq {run['seq']}")
    out(
        f"usage: {progress['total_tokens']} tokens, {progress['iterations']} model calls, "
        f"{progress['tool_calls']} tool calls, ${progress['cost_usd']:.6f}"
    )
    chain = " -> ".join(
        f"{link['agent_id']}:{link['run_id']}" for link in run.get("handoff_chain", [])
    )
    out(f"handoff chain: {chain}")
    if run.get("deadline_at") and run["status"] != "finished":
        out(f"deadline: {run['deadline_at']} (the run ends ERROR if it is still going then)")
    for letter in run.get("dead_letters", []):
        replayed = " (replayed)" if letter.get("replayed") else ""
        out(
            f"dead letter {letter['id']}{replayed}: {letter['reason']}  "
            f"-> cloudagents dead-letters replay {letter['id']}"
        )
    if run["status"] == "waiting_approval":
        for approval in client.approvals(status="pending", run_id=run["run_id"]):
            out(
                f"waiting for approval: {approval_line(approval)}  -> cloudagents approvals "
                f"approve {approval['run_id']}:{approval['approval_id']}"
            )
    out("transcript:")
    for message in transcript["messages"]:
        text = message.get("content") or ""
        calls = message.get("tool_calls")
        if calls:
            text += " " + ", ".join(
                f"{c['name']}({json.dumps(c.get('arguments', {}))})" for c in calls
            )
        out(f"  {message['role']:>9}: {text}")
    if run.get("result"):
        out("result: " + json.dumps(run["result"]))
    return EXIT_OK


def cmd_runs_tree(args: argparse.Namespace) -> int:
    tree = api_client(args).tree(args.run_id)

    def show(entry: dict[str, Any], depth: int) -> None:
        how = f" [{entry['how']}]" if entry.get("how") else ""
        out(
            f"{'  ' * depth}{entry['run_id']}  {entry['agent_id']}{how}  {entry['status']}"
            f"  {entry.get('exit') or '-'}  {entry['total_tokens']} tokens"
        )
        for child in entry["children"]:
            show(child, depth + 1)

    show(tree, 0)
    return EXIT_OK


def cmd_conversations_show(args: argparse.Namespace) -> int:
    conversation = api_client(args).conversation(args.conversation_id)
    holder = conversation.get("active_run_id") or "none"
    out(
        f"conversation {conversation['conversation_id']}  agent {conversation.get('agent_id')}  "
        f"{conversation['message_count']} messages  runs {len(conversation['runs'])}  "
        f"held by {holder}"
    )
    for message in conversation["messages"]:
        out(f"  {message['role']:>9}: {message.get('content') or ''}")
    return EXIT_OK


def cmd_runs_cancel(args: argparse.Namespace) -> int:
    run = api_client(args).cancel_run(args.run_id)
    out(f"run {run['run_id']}: {run['status']} ({run['exit']})")
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    client = api_client(args)
    if args.follow:
        last = follow_run(client, args.run_id, timeout=args.timeout)
        return EXIT_OK if last is not None and last["exit"] in SUCCESS_EXITS else EXIT_RUN_FAILED
    for event in client.events(args.run_id):
        line = format_event(event) or f"  [step {event['seq']}] chunk: {event['chunk']!r}"
        out(line)
    return EXIT_OK


def approval_line(approval: dict[str, Any]) -> str:
    arguments = json.dumps(approval.get("edited_arguments") or approval["arguments"])
    return (
        f"{approval['run_id']}:{approval['approval_id']:<12} {approval['status']:<9} "
        f"{approval['tool']}({arguments})  expires {approval['expires_at']}"
    )


def approval_address(args: argparse.Namespace, client: CloudAgentsClient) -> tuple[str, str]:
    """``RUN:APPROVAL`` (as ``approvals list`` prints it), ``RUN APPROVAL``, or ``RUN`` alone
    when the run has exactly one pending approval."""
    run_id, approval_id = args.run_id, args.approval_id
    if approval_id is None and ":" in run_id:
        run_id, _, approval_id = run_id.rpartition(":")
    if approval_id is None:
        pending = client.approvals(status="pending", run_id=run_id)
        if len(pending) != 1:
            raise ValueError(
                f"run {run_id} has {len(pending)} pending approvals: name one "
                "(cloudagents approvals list --run RUN)"
            )
        approval_id = pending[0]["approval_id"]
    return run_id, approval_id


def cmd_approvals_list(args: argparse.Namespace) -> int:
    status = None if args.status == "all" else args.status
    found = api_client(args).approvals(status=status, run_id=args.run)
    for approval in found:
        out(approval_line(approval))
    if not found:
        err(f"no {args.status if args.status != 'all' else ''} approvals".replace("  ", " "))
    return EXIT_OK


def cmd_approvals_show(args: argparse.Namespace) -> int:
    client = api_client(args)
    approval = client.approval(*approval_address(args, client))
    out(approval_line(approval))
    out(f"  why: {approval['reason_required']} (risk {approval['risk']})")
    out(
        f"  approvers: {', '.join(approval['approvers'])}  quorum {approval['quorum']}  "
        f"on timeout: {approval['on_timeout']}"
    )
    for decision in approval["decisions"]:
        reason = f": {decision['reason']}" if decision.get("reason") else ""
        out(f"  {decision['verdict']} by {decision['principal']} at {decision['at']}{reason}")
    return EXIT_OK


def cmd_approvals_decide(args: argparse.Namespace) -> int:
    client = api_client(args)
    run_id, approval_id = approval_address(args, client)
    arguments = json.loads(args.arguments) if getattr(args, "arguments", None) else None
    if arguments is not None and not isinstance(arguments, dict):
        raise ValueError("--arguments is a JSON object")
    try:
        approval = client.decide(
            run_id,
            approval_id,
            args.decision,
            reason=args.reason or "",
            arguments=arguments,
            remember=getattr(args, "remember", None),
        )
    except ApiError as exc:
        if exc.status == 409 and isinstance(exc.body, dict) and "approval" in exc.body:
            final = exc.body["approval"]
            who = ", ".join(final.get("decided_by") or []) or "the expiry"
            err(f"approval {run_id}:{approval_id} is already {final['status']} (by {who})")
            return EXIT_USAGE
        raise
    who = ", ".join(approval["decided_by"])
    if approval["status"] == "pending":
        count = sum(1 for d in approval["decisions"] if d["verdict"] == "approve")
        out(f"{run_id}:{approval_id}: approval {count} of {approval['quorum']} recorded")
    else:
        out(f"{run_id}:{approval_id}: {approval['status']} by {who}")
    return EXIT_OK


def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    for letter in api_client(args).dead_letters():
        out(f"{letter['id']:<48} {letter['source']:<40} {letter['reason']}")
    return EXIT_OK


def cmd_dead_letters_show(args: argparse.Namespace) -> int:
    letter = api_client(args).dead_letter(args.letter_id)
    try:
        body = base64.b64decode(letter["data"]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        body = f"(not UTF-8; base64) {letter['data']}"
    for key in ("id", "source", "reason", "message_id", "created_at", "replayed_at"):
        out(f"{key:>12}: {letter.get(key)}")
    out(f"{'attributes':>12}: {json.dumps(letter.get('attributes', {}))}")
    out(f"{'message':>12}: {body}")
    return EXIT_OK


def cmd_dead_letters_replay(args: argparse.Namespace) -> int:
    replay = api_client(args).replay_dead_letter(args.letter_id)
    out(
        f"replayed {replay['replayed']} to topic {replay['topic']} (message {replay['message_id']})"
    )
    return EXIT_OK


# ---- plumbing ------------------------------------------------------------------------------


def api_client(args: argparse.Namespace) -> CloudAgentsClient:
    url = args.api or os.environ.get("CLOUDAGENTS_API_URL")
    token = args.token or os.environ.get("CLOUDAGENTS_API_TOKEN")
    if url and not token:
        # The local stack's api named by the environment (as `up` leaves it): its token.
        state = load_state()
        if state is not None and state.api_url.rstrip("/") == url.rstrip("/"):
            token = state.api_token
    if not url:
        state = load_state()
        if state is None:
            raise ConnectionError(
                "no api: start the local stack with `cloudagents up`, or pass --api URL "
                "(or set CLOUDAGENTS_API_URL)"
            )
        url, token = state.api_url, token or state.api_token
    return CloudAgentsClient(url, token=token)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudagents", description=__doc__.splitlines()[0])
    parser.add_argument("--api", help="api base URL (default: the local stack's)")
    parser.add_argument("--token", help="bearer token for the api (or CLOUDAGENTS_API_TOKEN)")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the emulators and services on localhost")
    up.add_argument("--project", default="local-project")
    up.add_argument("--workspace", default="agents")
    up.add_argument(
        "--agents",
        default=str(repo_root() / "examples" / "agents.yaml"),
        help="agent definitions to register (default: examples/agents.yaml)",
    )
    up.add_argument(
        "--graph-push-node-types",
        default="",
        help="graph node types served by the graph worker service (Cloud Tasks), comma "
        "separated; also starts that service (docs/graphs.md)",
    )
    up.add_argument(
        "--graph-modules",
        default="",
        help="modules the graph worker service imports for their NodeRegistry objects",
    )
    up.set_defaults(handler=cmd_up)
    commands.add_parser("down", help="stop what `up` started").set_defaults(handler=cmd_down)
    commands.add_parser("status", help="is the local stack up?").set_defaults(handler=cmd_status)

    agents = commands.add_parser("agents", help="agent definitions").add_subparsers(
        dest="agents_command", required=True
    )
    apply = agents.add_parser("apply", help="register agents from a YAML file")
    apply.add_argument("-f", "--file", required=True)
    apply.set_defaults(handler=cmd_agents_apply)
    agents.add_parser("list").set_defaults(handler=cmd_agents_list)
    show = agents.add_parser("show")
    show.add_argument("agent_id")
    show.set_defaults(handler=cmd_agents_show)
    for name, handler in (("delete", cmd_agents_delete), ("history", cmd_agents_history)):
        sub = agents.add_parser(name)
        sub.add_argument("agent_id")
        sub.set_defaults(handler=handler)

    run = commands.add_parser("run", help="start a run and print its LoopResult")
    run.add_argument("agent_id")
    run.add_argument("message")
    run.add_argument("--follow", action="store_true", help="stream the run's events live")
    run.add_argument("--via", choices=("http", "pubsub"), default="http")
    run.add_argument("--run-id")
    run.add_argument(
        "--conversation", help="continue this conversation (its earlier turns come first)"
    )
    run.add_argument("--timeout", type=float, default=600.0)
    run.set_defaults(handler=cmd_run)

    runs = commands.add_parser("runs", help="list, show and cancel runs").add_subparsers(
        dest="runs_command", required=True
    )
    listing = runs.add_parser("list")
    listing.add_argument("--agent")
    listing.add_argument(
        "--status", choices=("queued", "running", "waiting_tools", "waiting_approval", "finished")
    )
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=cmd_runs_list)
    for name, handler in (
        ("show", cmd_runs_show),
        ("cancel", cmd_runs_cancel),
        ("tree", cmd_runs_tree),
    ):
        sub = runs.add_parser(name)
        sub.add_argument("run_id")
        sub.set_defaults(handler=handler)

    events = commands.add_parser("events", help="a run's events")
    events.add_argument("run_id")
    events.add_argument(
        "--follow",
        action="store_true",
        help="stream events live until the run ends (exit 0 if it ends SATISFIED or HANDOFF)",
    )
    events.add_argument("--timeout", type=float, default=600.0)
    events.set_defaults(handler=cmd_events)

    conversations = commands.add_parser("conversations", help="runs that remember")
    conversations_sub = conversations.add_subparsers(dest="conv_command", required=True)
    conversation_show = conversations_sub.add_parser("show")
    conversation_show.add_argument("conversation_id")
    conversation_show.set_defaults(handler=cmd_conversations_show)

    approvals = commands.add_parser("approvals", help="tool calls waiting for a person")
    approvals_sub = approvals.add_subparsers(dest="approvals_command", required=True)
    approvals_list = approvals_sub.add_parser("list", help="the inbox (default: pending)")
    approvals_list.add_argument(
        "--status", default="pending", choices=("pending", "approved", "rejected", "expired", "all")
    )
    approvals_list.add_argument("--run", help="only this run's approvals")
    approvals_list.set_defaults(handler=cmd_approvals_list)
    for name, handler in (
        ("show", cmd_approvals_show),
        ("approve", cmd_approvals_decide),
        ("reject", cmd_approvals_decide),
    ):
        sub = approvals_sub.add_parser(name)
        sub.add_argument("run_id", help="RUN, RUN:APPROVAL (as listed) or RUN with APPROVAL")
        sub.add_argument("approval_id", nargs="?", help="{seq:06d}-{index:03d}")
        if name != "show":
            sub.set_defaults(decision=name)
            sub.add_argument("--reason", default="")
        if name == "approve":
            sub.add_argument("--arguments", help="edited arguments, a JSON object")
            sub.add_argument("--remember", choices=("run", "agent"))
        sub.set_defaults(handler=handler)

    letters = commands.add_parser("dead-letters", help="messages that could never be applied")
    letters_sub = letters.add_subparsers(dest="dl_command", required=True)
    letters_sub.add_parser("list").set_defaults(handler=cmd_dead_letters_list)
    for name, handler in (("show", cmd_dead_letters_show), ("replay", cmd_dead_letters_replay)):
        sub = letters_sub.add_parser(name)
        sub.add_argument("letter_id")
        sub.set_defaults(handler=handler)
    add_function_commands(commands, api_client)
    add_transition_commands(commands, api_client)
    add_workflow_commands(commands, api_client)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ApiError as exc:
        err(f"error: {exc}")
        return EXIT_USAGE if 400 <= exc.status < 500 else EXIT_UNREACHABLE
    except (ConnectionError, httpx.ConnectError) as exc:
        err(f"error: cannot reach the api: {exc}")
        return EXIT_UNREACHABLE
    except TimeoutError as exc:
        err(f"error: {exc}")
        return EXIT_TIMEOUT
    except (ValueError, OSError, yaml.YAMLError) as exc:
        err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
