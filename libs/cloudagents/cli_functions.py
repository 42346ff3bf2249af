"""``cloudagents functions``: store, list, show, run and trace stored functions (seed 002).

``apply -f FILE`` takes a Python file (one function; ``--name`` and the limit flags describe it)
or a YAML file: one function, a list, or ``{functions: [...]}``, each with seed 002's fields
(``name``, ``code`` or ``file`` relative to the YAML, ``description``, ``input_schema``,
``output_schema``, ``is_async``, ``config``). Refused code exits 2 with the line and the reason.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cloudagents.client import CloudAgentsClient

ClientFactory = Callable[[argparse.Namespace], CloudAgentsClient]
EXIT_OK, EXIT_FAILED = 0, 1


def _out(text: str = "") -> None:
    print(text, flush=True)


def read_functions(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``POST /functions`` bodies a file describes."""
    if path.suffix == ".py":
        config: dict[str, Any] = {}
        if args.allow is not None:
            config["allowed_imports"] = [m for m in args.allow.split(",") if m]
        if args.timeout is not None:
            config["timeout"] = args.timeout
        if args.memory is not None:
            config["memory_limit"] = args.memory
        body: dict[str, Any] = {"name": args.name or path.stem, "code": path.read_text()}
        if config:
            body["config"] = config
        return [body]
    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict) and "functions" in data:
        data = data["functions"]
    items = data if isinstance(data, list) else [data]
    bodies = []
    for item in items:
        if not isinstance(item, dict) or "name" not in item:
            raise ValueError(f"{path}: each function is a mapping with a name")
        body = dict(item)
        if "file" in body:
            body["code"] = (path.parent / str(body.pop("file"))).read_text()
        bodies.append(body)
    return bodies


def cmd_apply(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    for body in read_functions(Path(args.file), args):
        version = client.store_function(body)
        _out(f"stored {version['ref']}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    listing = client.list_functions()
    for function in listing["functions"]:
        _out(
            f"{function['name']:<24} {function['current'][:12]}  "
            f"versions={function['versions']}  updated={function['updated_at']}"
        )
    sandbox = listing.get("sandbox")
    if sandbox is not None and not sandbox["available"]:
        _out(f"(the api's sandbox is unavailable: {sandbox['reason']})")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    version = client.get_function(args.name, args.version)
    if args.versions:
        for each in client.function_versions(args.name):
            mark = "*" if each["hash"] == version["hash"] else " "
            _out(f"{mark} {each['hash'][:12]}  {each['created_at']}  {each['description']}")
        return EXIT_OK
    code = version.pop("code")
    _out(yaml.safe_dump(version, sort_keys=False).rstrip())
    _out("code: |")
    _out("\n".join(f"  {line}" for line in code.splitlines()))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    arguments = json.loads(args.args)
    if not isinstance(arguments, dict):
        raise ValueError("--args is a JSON object")
    outcome = client.execute_function(args.name, arguments, args.version)
    if outcome["ok"]:
        _out(json.dumps(outcome["value"]))
        return EXIT_OK
    _out(f"{outcome['error_kind']}: {outcome['message']}")
    return EXIT_FAILED


def cmd_history(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    for record in client.function_executions(
        function=args.function, agent=args.agent, limit=args.limit
    ):
        where = f"run={record['run_id']} call={record['tool_call_id']}" if record["run_id"] else "-"
        _out(
            f"{record['started_at']}  {record['function']}@{record['version_hash'][:12]}  "
            f"{record['exit_kind']:<18} {record['duration_ms']:8.1f} ms  "
            f"{record['output_bytes']:>7} B  agent={record['agent'] or '-'}  {where}"
        )
    return EXIT_OK


def add_function_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: ClientFactory
) -> None:
    """``cloudagents functions ...`` on the CLI's parser; ``client`` builds the api client."""
    functions = commands.add_parser("functions", help="stored functions (seed 002)")
    sub = functions.add_subparsers(dest="functions_command", required=True)

    def bind(parser: argparse.ArgumentParser, command: Callable[..., int]) -> None:
        parser.set_defaults(handler=lambda args: command(args, client(args)))

    apply = sub.add_parser("apply", help="store functions from a .py or YAML file")
    apply.add_argument("-f", "--file", required=True)
    apply.add_argument("--name", help="the function's name (.py: default the file's stem)")
    apply.add_argument("--allow", help="allowed imports, comma separated (.py)")
    apply.add_argument("--timeout", type=float, help="seconds (.py)")
    apply.add_argument("--memory", type=int, help="memory limit in MB (.py)")
    bind(apply, cmd_apply)
    bind(sub.add_parser("list"), cmd_list)
    show = sub.add_parser("show", help="a version's code, schemas and config")
    show.add_argument("name")
    show.add_argument("--version", help="a hash or a prefix of 8+ (default: current)")
    show.add_argument("--versions", action="store_true", help="list every version instead")
    bind(show, cmd_show)
    run = sub.add_parser("run", help="execute once in the sandbox, for testing")
    run.add_argument("name")
    run.add_argument("--args", default="{}", help="the arguments as a JSON object")
    run.add_argument("--version")
    bind(run, cmd_run)
    history = sub.add_parser("history", help="executions, newest first")
    history.add_argument("--function")
    history.add_argument("--agent")
    history.add_argument("--limit", type=int, default=50)
    bind(history, cmd_history)
