"""``cloudagents transitions`` and ``cloudagents tokens``: seed 004's workflows of places and
tokens over the api.

``transitions apply -f FILE`` registers a YAML file's ``agents`` and ``workflows``;
``transitions list``; ``tokens create WORKFLOW [--id] [--place] [--data JSON] [--metadata
JSON]``; ``tokens fire TOKEN TRANSITION [--wait]`` (``--wait``: until the token has moved or its
firing ended, then print it; exit 1 if it did not move); ``tokens show TOKEN`` (with its
history); ``tokens executions TOKEN`` (``list_executions_for_token``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cloudagents.client import CloudAgentsClient

ClientFactory = Callable[[argparse.Namespace], CloudAgentsClient]
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 4


def _out(text: str = "") -> None:
    print(text, flush=True)


def _json_object(text: str, flag: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise SystemExit(f"{flag} must be a JSON object")
    return value


def cmd_apply(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    data = yaml.safe_load(Path(args.file).read_text())
    if not isinstance(data, dict) or not ("workflows" in data or "agents" in data):
        _out(f"{args.file}: expected {{agents: [...], workflows: [...]}}")
        return EXIT_USAGE
    for agent in data.get("agents") or []:
        client._call("POST", "/agents", json=agent)
        _out(f"applied agent {agent.get('id')}")
    for workflow in data.get("workflows") or []:
        client._call("POST", "/transition-workflows", json=workflow)
        _out(f"applied workflow {workflow.get('id')}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    for workflow in client._call("GET", "/transition-workflows")["workflows"]:
        names = ",".join(t["id"] for t in workflow["transitions"]) or "-"
        _out(f"{workflow['id']:<24} places={','.join(workflow['places'])} transitions={names}")
    return EXIT_OK


def _token_line(token: dict[str, Any]) -> str:
    firing = token.get("firing")
    state = f"firing {firing['transition_id']} (attempt {firing['attempt']})" if firing else "idle"
    line = f"{token['token_id']} in {token['place']} v{token['version']} {state}"
    return line + (f" last_error={token['last_error']}" if token.get("last_error") else "")


def cmd_create(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    body: dict[str, Any] = {
        "workflow_id": args.workflow_id,
        "data": _json_object(args.data, "--data"),
        "metadata": _json_object(args.metadata, "--metadata"),
    }
    if args.id:
        body["token_id"] = args.id
    if args.place:
        body["place"] = args.place
    _out(_token_line(client._call("POST", "/tokens", json=body)))
    return EXIT_OK


def cmd_fire(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    body: dict[str, Any] = {"transition_id": args.transition_id}
    if args.version is not None:
        body["version"] = args.version
    fired = client._call("POST", f"/tokens/{args.token_id}/fire", json=body)
    _out(f"{fired['status']}" + (f" {fired['execution_id']}" if fired["execution_id"] else ""))
    if not args.wait or fired["status"] != "firing":
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    while True:
        token = client._call("GET", f"/tokens/{args.token_id}")
        if token["firing"] is None:
            _out(yaml.safe_dump(token, sort_keys=False).rstrip())
            moved = token["history_count"] > fired["token"]["history_count"]
            return EXIT_OK if moved else EXIT_FAILED
        if time.monotonic() > deadline:
            _out(f"still firing after {args.timeout:g} s: {_token_line(token)}")
            return EXIT_TIMEOUT
        time.sleep(0.2)


def cmd_show(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    token = client._call("GET", f"/tokens/{args.token_id}")
    _out(yaml.safe_dump(token, sort_keys=False).rstrip())
    return EXIT_OK


def cmd_executions(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    found = client._call("GET", f"/tokens/{args.token_id}/executions")["executions"]
    for e in found:
        error = f" {e['error_kind']}: {e['error']}" if e.get("error") else ""
        _out(f"{e['execution_id']} {e['transition_id']} {e['agent_id']} {e['status']}{error}")
    return EXIT_OK


def add_transition_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: ClientFactory
) -> None:
    """``cloudagents transitions ...`` and ``cloudagents tokens ...`` on the CLI's parser."""

    def bind(parser: argparse.ArgumentParser, command: Callable[..., int]) -> None:
        parser.set_defaults(handler=lambda args: command(args, client(args)))

    transitions = commands.add_parser("transitions", help="workflows of places (seed 004)")
    sub = transitions.add_subparsers(dest="transitions_command", required=True)
    apply = sub.add_parser("apply", help="register a YAML file's agents and workflows")
    apply.add_argument("-f", "--file", required=True)
    bind(apply, cmd_apply)
    bind(sub.add_parser("list"), cmd_list)

    tokens = commands.add_parser("tokens", help="tokens in places; fire transitions")
    tsub = tokens.add_subparsers(dest="tokens_command", required=True)
    create = tsub.add_parser("create", help="a token in a place of a workflow")
    create.add_argument("workflow_id")
    create.add_argument("--id")
    create.add_argument("--place", help="default: the workflow's initial place")
    create.add_argument("--data", default="{}", help="a JSON object")
    create.add_argument("--metadata", default="{}", help="a JSON object")
    bind(create, cmd_create)
    fire = tsub.add_parser("fire", help="fire a transition on a token")
    fire.add_argument("token_id")
    fire.add_argument("transition_id")
    fire.add_argument("--version", type=int, help="only if the token is at this version")
    fire.add_argument("--wait", action="store_true", help="until the firing ends")
    fire.add_argument("--timeout", type=float, default=600.0)
    bind(fire, cmd_fire)
    for name, command in (("show", cmd_show), ("executions", cmd_executions)):
        parser = tsub.add_parser(name)
        parser.add_argument("token_id")
        bind(parser, command)
