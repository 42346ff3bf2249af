"""``cloudagents workflows``: register graphs, start, show, list, cancel, fork and resume
workflow runs, list their checkpoints and events.

``register FILE`` takes a compiled graph's canonical JSON (``graph.compile().to_json()``) or a
Python file defining a ``Graph`` (``path.py`` for its ``graph``, ``path.py:name`` for another
name; the file is run as a module, so its ``if __name__ == "__main__":`` block is not). Nodes run
on ``DistributedWorker``s (``cloudagents.graphs.distributed``) serving their node types.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudagents.client import CloudAgentsClient

ClientFactory = Callable[[argparse.Namespace], CloudAgentsClient]
EXIT_OK, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 4


def _out(text: str = "") -> None:
    print(text, flush=True)


def read_graph(spec: str) -> dict[str, Any]:
    """The ``POST /workflows`` body: a compiled graph's JSON, from a .json or a .py file."""
    from cloudagents.graphs import CompiledGraph, Graph

    path_text, _, name = spec.partition(":")
    path = Path(path_text)
    if path.suffix == ".json":
        return dict(json.loads(path.read_text()))
    if path.suffix != ".py":
        raise ValueError(f"{path}: a graph is a .json file or a .py file defining a Graph")
    module_spec = importlib.util.spec_from_file_location(f"_workflow_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{path}: cannot be loaded as a module")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    found = getattr(module, name or "graph", None)
    if isinstance(found, Graph):
        found = found.compile()
    if not isinstance(found, CompiledGraph):
        raise ValueError(f"{path}: {name or 'graph'!r} is not a Graph")
    return dict(json.loads(found.to_json()))


def _run_line(run: dict[str, Any]) -> str:
    return (
        f"{run['workflow_id']:<24} {run['graph_name']:<24} {run['status']:<11} "
        f"step {run['step']:<4} {run['created_at']}"
    )


def _show(run: dict[str, Any]) -> None:
    _out(_run_line(run))
    _out(f"graph   {run['graph_hash']}")
    for task in run["pending"]:
        done = "done" if task["done"] else ""
        _out(f"pending {task['task_id']:<24} {task['node_type']:<16} {done}".rstrip())
        for child in task.get("agent_runs", []):  # an agent node's runs, one per attempt
            ended = child["exit"] or child["status"]
            _out(
                f"  agent run {child['run_id']} ({child['agent_id']}, attempt "
                f"{child['attempt']}): {ended}"
            )
    if run["error"]:
        _out(f"error   {run['error']}")
    _out(json.dumps(run["state"], indent=2, sort_keys=True))


def cmd_register(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    graph = client.register_workflow(read_graph(args.file))
    _out(f"{graph['hash']} {graph['name']}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    for graph in client.list_workflows():
        _out(f"{graph['hash']} {graph['name']}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    state = json.loads(args.state)
    if not isinstance(state, dict):
        raise ValueError("--state must be a JSON object")
    run = client.start_workflow_run(
        args.graph, state, workflow_id=args.id, max_steps=args.max_steps, priority=args.priority
    )
    _out(f"started workflow run {run['workflow_id']}")
    return _wait(args, client, run)


def _wait(args: argparse.Namespace, client: CloudAgentsClient, run: dict[str, Any]) -> int:
    if not args.wait:
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    while run["status"] == "running":
        if time.monotonic() > deadline:
            _out(f"still running at step {run['step']} after {args.timeout} s")
            return EXIT_TIMEOUT
        time.sleep(0.5)
        run = client.workflow_run(run["workflow_id"])
    _show(run)
    return EXIT_OK if run["status"] == "completed" else EXIT_FAILED


def cmd_runs(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    for run in client.list_workflow_runs(status=args.status, limit=args.limit):
        _out(_run_line(run))
    return EXIT_OK


def cmd_show(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    _show(client.workflow_run(args.workflow_id))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    run = client.cancel_workflow_run(args.workflow_id)
    _out(f"{run['workflow_id']} {run['status']} at step {run['step']}")
    return EXIT_OK


def cmd_fork(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    updates = json.loads(args.set)
    if not isinstance(updates, dict):
        raise ValueError("--set must be a JSON object")
    run = client.fork_workflow_run(
        args.workflow_id,
        args.step,
        updates,
        new_workflow_id=args.id,
        max_steps=args.max_steps,
        priority=args.priority,
    )
    _out(f"forked {run['forked_from']} into workflow run {run['workflow_id']}")
    return _wait(args, client, run)


def cmd_resume(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    run = client.resume_workflow_run(args.workflow_id, max_steps=args.max_steps)
    _out(f"resumed {run['workflow_id']} at step {run['step']} (limit {run['step_limit']})")
    return _wait(args, client, run)


def _event_line(event: dict[str, Any]) -> str:
    detail = {
        k: v
        for k, v in event.items()
        if k not in ("id", "type", "workflow_id", "timestamp", "schema_version")
    }
    return f"{event['id']:<40} {event['type']:<20} {json.dumps(detail, sort_keys=True)}"


def cmd_events(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    for event in client.workflow_events(args.workflow_id, after=args.after):
        _out(_event_line(event))
    return EXIT_OK


def cmd_checkpoints(args: argparse.Namespace, client: CloudAgentsClient) -> int:
    for checkpoint in client.workflow_checkpoints(args.workflow_id):
        pending = ",".join(t["node"] for t in checkpoint["pending"]) or "-"
        _out(f"step {checkpoint['step']:<4} {checkpoint['status']:<11} pending {pending}")
        if args.state:
            done = ",".join(checkpoint.get("completed") or []) or "-"
            state = json.dumps(checkpoint.get("state") or {}, sort_keys=True)
            _out(f"  after {done}: {state}")
    return EXIT_OK


def add_workflow_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: ClientFactory
) -> None:
    """``cloudagents workflows ...`` on the CLI's parser; ``client`` builds the api client."""
    workflows = commands.add_parser("workflows", help="graph workflows (seed 001)")
    sub = workflows.add_subparsers(dest="workflows_command", required=True)

    def bind(parser: argparse.ArgumentParser, command: Callable[..., int]) -> None:
        parser.set_defaults(handler=lambda args: command(args, client(args)))

    def waits(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--wait", action="store_true", help="wait for it to end and show it")
        parser.add_argument("--timeout", type=float, default=600.0)

    register = sub.add_parser("register", help="store a graph (.json, or .py[:name])")
    register.add_argument("file")
    bind(register, cmd_register)
    bind(sub.add_parser("list", help="registered graphs"), cmd_list)
    run = sub.add_parser("run", help="start a workflow run on a registered graph")
    run.add_argument("graph", help="the graph's hash")
    run.add_argument("--state", default="{}", help="the initial state, a JSON object")
    run.add_argument("--id", help="the workflow run id (default: generated)")
    run.add_argument("--max-steps", type=int, default=50)
    run.add_argument("--priority", choices=("high", "normal", "low"), default="normal")
    waits(run)
    bind(run, cmd_run)
    fork = sub.add_parser("fork", help="start a new run from a step's checkpoint of a run")
    fork.add_argument("workflow_id")
    fork.add_argument("--step", type=int, required=True, help="the superstep to fork from")
    fork.add_argument("--set", default="{}", help="state keys to write over, a JSON object")
    fork.add_argument("--id", help="the new run's id (default: generated)")
    fork.add_argument("--max-steps", type=int, help="the new run's step limit (default: same)")
    fork.add_argument("--priority", choices=("high", "normal", "low"))
    waits(fork)
    bind(fork, cmd_fork)
    resume = sub.add_parser("resume", help="continue a cancelled, failed or step-limited run")
    resume.add_argument("workflow_id")
    resume.add_argument("--max-steps", type=int, help="raise the run's step limit to this")
    waits(resume)
    bind(resume, cmd_resume)
    events = sub.add_parser("events", help="a workflow run's events (supersteps, node tasks)")
    events.add_argument("workflow_id")
    events.add_argument("--after", help="only the events after this id")
    bind(events, cmd_events)
    runs = sub.add_parser("runs", help="list workflow runs")
    runs.add_argument(
        "--status", choices=("running", "completed", "failed", "cancelled", "step_limit")
    )
    runs.add_argument("--limit", type=int, default=50)
    bind(runs, cmd_runs)
    for name, command in (("show", cmd_show), ("cancel", cmd_cancel)):
        parser = sub.add_parser(name)
        parser.add_argument("workflow_id")
        bind(parser, command)
    checkpoints = sub.add_parser("checkpoints", help="a workflow run's barrier commits")
    checkpoints.add_argument("workflow_id")
    checkpoints.add_argument(
        "--state", action="store_true", help="also the state each barrier committed"
    )
    bind(checkpoints, cmd_checkpoints)
