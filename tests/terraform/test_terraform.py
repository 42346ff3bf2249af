"""Terraform promises, checked on the parsed HCL of every ``.tf`` file (python-hcl2).

No provider can be downloaded here, so ``terraform validate``/``plan`` cannot run; these tests
read the configuration instead:

- the generated ``topology.auto.tfvars.json`` is current and covers ``build_topology`` exactly;
- the ``cloudagents`` module turns every entry of those collections into resources (its
  ``for_each`` is the whole collection, unfiltered), and the push subscription it builds carries
  the declared path, service, dead-letter topic, ack deadline, attempts and backoff;
- every push subscription has OIDC push auth, a retry policy and a dead-letter policy;
- IAM: nothing public, no basic roles, project-level grants only for roles without
  resource-level IAM, model keys readable only by ``run_executor``;
- environments only call modules; ``terraform fmt`` is clean.

Each checker returns a list of violations; the ``test_checker_*`` tests feed them broken
configurations to show they do fail.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from cloudagents.topology import MODEL_KEY_SECRETS, Topic, Topology, build_topology

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
MODULES = TERRAFORM / "modules"
STACK = MODULES / "cloudagents"
ENVIRONMENTS = ("dev", "prod")
PLACEHOLDER = "{project}"  # how the generated file spells the project id
PROJECT = "test-project-42"  # a valid id for build_topology, substituted for the placeholder
WORKSPACE = "agents"

OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=True)
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
BASIC_ROLES = ("roles/owner", "roles/editor")
# Roles with no resource-level IAM, so they can only be granted on the project.
PROJECT_LEVEL_ALLOWED = {"roles/datastore.user", "roles/cloudtrace.agent"}
# Role family -> the IAM resource type it must be granted through.
RESOURCE_IAM = {
    "roles/pubsub.": ("google_pubsub_topic_iam_", "google_pubsub_subscription_iam_"),
    "roles/storage.": ("google_storage_bucket_iam_",),
    "roles/secretmanager.": ("google_secret_manager_secret_iam_",),
    "roles/run.": ("google_cloud_run_v2_service_iam_",),
    "roles/cloudtasks.": ("google_cloud_tasks_queue_iam_",),
    "roles/iam.": ("google_service_account_iam_",),
}

HCL = dict[str, Any]


# --------------------------------------------------------------------------- parsing helpers


def tf_files() -> list[Path]:
    return sorted(p for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts)


def load(path: Path) -> HCL:
    with path.open() as f:
        return dict(hcl2.load(f, serialization_options=OPTIONS))


def loads(text: str) -> HCL:
    return dict(hcl2.loads(text, serialization_options=OPTIONS))


def load_dir(directory: Path) -> HCL:
    """All ``.tf`` files of one directory merged by top-level block kind."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for kind, blocks in load(path).items():
            if isinstance(blocks, list):
                merged.setdefault(kind, []).extend(blocks)
    return merged


def blocks(doc: HCL, kind: str) -> Iterator[tuple[str, HCL]]:
    """``(name, body)`` of each ``module``/``variable``/``output``/``locals`` block."""
    for block in doc.get(kind, []):
        for name, body in block.items():
            if not name.startswith("__"):
                yield name, body


def resources(doc: HCL, kind: str = "resource") -> Iterator[tuple[str, str, HCL]]:
    """``(type, name, body)`` of each resource (or data source)."""
    for block in doc.get(kind, []):
        for rtype, named in block.items():
            for name, body in named.items():
                yield rtype, name, body


def sub_blocks(body: HCL, name: str) -> list[HCL]:
    """Static nested blocks called ``name`` (``dynamic`` blocks are deliberately not counted)."""
    value = body.get(name)
    if isinstance(value, list) and all(isinstance(b, dict) for b in value):
        return value
    return []


def one_block(body: HCL, name: str) -> HCL:
    found = sub_blocks(body, name)
    assert len(found) == 1, f"expected exactly one static {name!r} block, found {len(found)}"
    return found[0]


def expr(value: Any) -> str:
    """An HCL expression as text without its ``${...}`` wrapper."""
    text = str(value)
    if text.startswith("${") and text.endswith("}"):
        return text[2:-1]
    return text


FOR_OBJECT = re.compile(
    r"^\{for (?:(?P<key>\w+), )?(?P<value>\w+) in (?P<source>[\w.\[\]]+) : (?P<kkey>\w+) => "
    r"(?P<body>\{.*\})\}$",
    re.S,
)


def for_object(value: Any) -> tuple[str, str, HCL]:
    """``{for k, v in SOURCE : k => {BODY}}`` -> (SOURCE, value variable, parsed BODY).

    Fails on a filtered (``if``) expression: every entry of the source must be kept.
    """
    match = FOR_OBJECT.match(expr(value))
    assert match, f"not an unfiltered for-object expression: {value!r}"
    body = loads(f"x = {match['body']}")["x"]
    return match["source"], match["value"], body


def module_calls(doc: HCL, source_suffix: str) -> list[tuple[str, HCL]]:
    return [
        (name, body)
        for name, body in blocks(doc, "module")
        if str(body.get("source", "")).rstrip("/").endswith(source_suffix)
    ]


def module_call(doc: HCL, name: str) -> HCL:
    found = [body for n, body in blocks(doc, "module") if n == name]
    assert found, f"module {name!r} is not called"
    return found[0]


PROSE = frozenset({"validation", "description"})


def walk_values(node: Any, *, skip: frozenset[str] = PROSE) -> Iterator[str]:
    """Every string (map keys included) in a parsed document, skipping prose and validations."""
    if isinstance(node, dict):
        for key, child in node.items():
            if key in skip or key.startswith("__"):
                continue
            yield key
            yield from walk_values(child, skip=skip)
    elif isinstance(node, list):
        for child in node:
            yield from walk_values(child, skip=skip)
    elif isinstance(node, str):
        yield node


def gen_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_terraform_topology", REPO / "scripts" / "gen_terraform_topology.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tfvars(environment: str) -> dict[str, Any]:
    """The generated file, with the project placeholder filled in as Terraform would."""
    path = TERRAFORM / "environments" / environment / "topology.auto.tfvars.json"
    return dict(json.loads(path.read_text().replace(PLACEHOLDER, PROJECT)))


@pytest.fixture(scope="module")
def declared() -> Topology:
    return build_topology(PROJECT, WORKSPACE)


@pytest.fixture(scope="module")
def stack() -> HCL:
    return load_dir(STACK)


@pytest.fixture(scope="module")
def all_docs() -> dict[Path, HCL]:
    return {path: load(path) for path in tf_files()}


# --------------------------------------------------------------------------- checkers


def topology_coverage_violations(topology: Topology, value: dict[str, Any]) -> list[str]:
    """What ``build_topology`` declares that the tfvars ``topology`` value lacks or changes."""
    bad: list[str] = []
    topics, dlqs = value["topics"], value["dead_letter_topics"]
    main = {t.name for t in topology.topics if t.role != "dead_letter"}
    dead = {t.name for t in topology.topics if t.role == "dead_letter"}
    if set(topics) != main:
        bad.append(f"topics: declared {sorted(main)}, Terraform {sorted(topics)}")
    if set(dlqs) != dead:
        bad.append(f"dead-letter topics: declared {sorted(dead)}, Terraform {sorted(dlqs)}")
    in_tf = {name for t in topics.values() for name in t["push_subscriptions"]}
    if in_tf != {s.name for s in topology.subscriptions}:
        bad.append(f"push subscriptions differ: Terraform has {sorted(in_tf)}")
    for sub in topology.subscriptions:
        got = topics.get(sub.topic, {}).get("push_subscriptions", {}).get(sub.name)
        want = {
            "service": sub.service,
            "path": sub.path,
            "dead_letter_topic": sub.dead_letter_topic,
            "ack_deadline_seconds": sub.ack_deadline_seconds,
            "max_delivery_attempts": sub.max_delivery_attempts,
            "minimum_backoff_seconds": sub.minimum_backoff_seconds,
            "maximum_backoff_seconds": sub.maximum_backoff_seconds,
        }
        if got != want:
            bad.append(f"subscription {sub.name} on {sub.topic}: declared {want}, got {got}")
    for pull, topic in topology.pull_subscriptions:
        where = dlqs.get(topic) or topics.get(topic) or {}
        if pull not in where.get("pull_subscriptions", []):
            bad.append(f"topic {topic} lacks pull subscription {pull}")
    queues = value["queues"]
    if set(queues) != {q.name for q in topology.queues}:
        bad.append(f"queues differ: Terraform has {sorted(queues)}")
    for q in topology.queues:
        got = queues.get(q.name, {})
        if (
            got.get("service"),
            got.get("path"),
            got.get("max_attempts"),
            got.get("max_concurrent_dispatches"),
            got.get("node_type"),
        ) != (q.service, q.path, q.max_attempts, q.max_concurrent_dispatches, q.node_type):
            bad.append(f"queue {q.name}: declared {q}, got {got}")
    graph = value.get("graph", {})
    if tuple(graph.get("push_node_types", ())) != topology.graph_push_node_types:
        bad.append(f"graph push node types: declared {topology.graph_push_node_types}")
    if tuple(graph.get("pull_node_types", ())) != topology.graph_pull_node_types:
        bad.append(f"graph pull node types: declared {topology.graph_pull_node_types}")
    buckets = value["buckets"]
    if set(buckets) != {b.name for b in topology.buckets}:
        bad.append(f"buckets differ: Terraform has {sorted(buckets)}")
    for b in topology.buckets:
        if buckets.get(b.name, {}).get("delete_after_days") != b.delete_after_days:
            bad.append(f"bucket {b.name}: lifecycle differs from {b.delete_after_days} days")
    services = value["services"]
    if set(services) != {s.name for s in topology.services}:
        bad.append(f"services differ: Terraform has {sorted(services)}")
    for spec in topology.services:
        got = services.get(spec.name, {})
        for attr in ("publishes", "buckets", "enqueues", "secrets"):
            if got.get(attr) != list(getattr(spec, attr)):
                bad.append(f"service {spec.name}.{attr}: declared {getattr(spec, attr)}")
        acks = [s.ack_deadline_seconds for s in topology.subscriptions if s.service == spec.name]
        if got.get("min_request_timeout_seconds", 0) < max(acks, default=0):
            bad.append(f"service {spec.name}: request timeout below its ack deadline")
        # IAM inversions: who publishes, reads buckets, enqueues, reads secrets.
        for topic in spec.publishes:
            if spec.name not in topics.get(topic, {}).get("publishers", []):
                bad.append(f"{spec.name} may not publish to {topic}")
        for bucket in spec.buckets:
            if spec.name not in buckets.get(bucket, {}).get("object_users", []):
                bad.append(f"{spec.name} has no object access on {bucket}")
        for queue in spec.enqueues:
            if spec.name not in queues.get(queue, {}).get("enqueuers", []):
                bad.append(f"{spec.name} may not enqueue on {queue}")
        for secret in spec.secrets:
            if spec.name not in value["secrets"].get(secret, {}).get("accessors", []):
                bad.append(f"{spec.name} may not read {secret}")
    # And nobody else: every grant in the tfvars is backed by a declaration.
    for name, topic in topics.items():
        for svc in topic["publishers"]:
            if name not in topology.service(svc).publishes:
                bad.append(f"{svc} publishes to {name} without declaring it")
    for name, secret in value["secrets"].items():
        for svc in secret["accessors"]:
            if name not in topology.service(svc).secrets:
                bad.append(f"{svc} reads {name} without declaring it")
    return bad


def public_member_violations(docs: dict[Path, HCL]) -> list[str]:
    """allUsers/allAuthenticatedUsers anywhere but in a validation that refuses them."""
    return [
        f"{path.relative_to(REPO) if path.is_absolute() else path}: {value}"
        for path, doc in docs.items()
        for value in walk_values(doc)
        if any(member in value for member in PUBLIC_MEMBERS)
    ]


def basic_role_violations(docs: dict[Path, HCL]) -> list[str]:
    return [
        f"{path}: {value}"
        for path, doc in docs.items()
        for value in walk_values(doc)
        if any(re.search(rf"{re.escape(role)}\b", value) for role in BASIC_ROLES)
    ]


def project_iam_violations(docs: dict[Path, HCL]) -> list[str]:
    """Project-level grants must be roles without resource-level IAM, each documented."""
    bad: list[str] = []
    for path, doc in docs.items():
        for rtype, name, body in resources(doc):
            if not rtype.startswith("google_project_iam_"):
                continue
            role = str(body.get("role", ""))
            if role.startswith("roles/"):
                if role not in PROJECT_LEVEL_ALLOWED:
                    bad.append(f"{path}: {rtype}.{name} grants {role} on the project")
            elif "var.project_roles" not in str(body.get("for_each", "")):
                # A computed role is only acceptable from the validated project_roles variable,
                # whose every value the module calls below are checked for.
                bad.append(f"{path}: {rtype}.{name} grants an unchecked role {role}")
        for name, call in blocks(doc, "module"):
            roles = call.get("project_roles")
            if roles is None:
                continue
            if not isinstance(roles, list):
                bad.append(f"{path}: module {name} project_roles must be a literal list")
                continue
            for role in roles:
                if role not in PROJECT_LEVEL_ALLOWED:
                    bad.append(f"{path}: module {name} grants {role} on the project")
            comments = " ".join(
                c["value"]
                for key in ("__comments__", "__inline_comments__")
                for c in call.get(key, [])
            )
            if "roles/datastore.user" in roles and not (
                "Firestore" in comments and "resource-level" in comments
            ):
                bad.append(f"{path}: module {name}: say why datastore.user is project-level")
    return bad


def resource_role_violations(docs: dict[Path, HCL], module_iam: dict[str, str]) -> list[str]:
    """Each role family is granted through its own resource's IAM, never another's."""
    bad: list[str] = []

    def check(role: str, via: str, where: str) -> None:
        for family, allowed in RESOURCE_IAM.items():
            if role.startswith(family) and not via.startswith(allowed):
                bad.append(f"{where}: {role} granted through {via}")

    for path, doc in docs.items():
        for rtype, name, body in resources(doc):
            role = str(body.get("role", ""))
            if "_iam_" in rtype and role.startswith("roles/"):
                check(role, rtype, f"{path}: {rtype}.{name}")
        for name, call in blocks(doc, "module"):
            iam = call.get("iam")
            if not isinstance(iam, dict):
                continue
            source = Path(str(call.get("source", ""))).name
            via = module_iam.get(source, f"module {source} (no iam resource)")
            for role in (k for k in iam if not k.startswith("__")):
                check(role, via, f"{path}: module {name}")
    return bad


def module_iam_resource_types() -> dict[str, str]:
    """Module name -> type of the resource its ``iam`` variable feeds."""
    found: dict[str, str] = {}
    for module_dir in MODULES.iterdir():
        for rtype, _, body in resources(load_dir(module_dir)):
            if "_iam_" in rtype and "var.iam" in str(body.get("for_each", "")):
                found[module_dir.name] = rtype
    return found


def is_dead_letter_sink(path: Path, name: str) -> bool:
    """The one push subscription without a dead-letter policy: the pubsub module's ``sink``,
    which only dead-letter topics use (``test_only_dead_letter_topics_have_sinks``)."""
    return path.parent.name == "pubsub" and name == "sink"


def push_subscription_violations(docs: dict[Path, HCL]) -> list[str]:
    """Every push subscription: OIDC token with a service account, retry and dead-letter policy."""
    bad: list[str] = []
    for path, doc in docs.items():
        for rtype, name, body in resources(doc):
            if rtype != "google_pubsub_subscription":
                continue
            where = f"{path}: {name}"
            if "dynamic" in body and any("push_config" in d for d in body["dynamic"]):
                bad.append(f"{where}: push_config must be a static block")
            push = sub_blocks(body, "push_config")
            if not push:
                continue
            tokens = sub_blocks(push[0], "oidc_token")
            if len(tokens) != 1 or not tokens[0].get("service_account_email"):
                bad.append(f"{where}: push without an OIDC token service account")
            dead = sub_blocks(body, "dead_letter_policy")
            if is_dead_letter_sink(path, name):
                if dead:
                    bad.append(f"{where}: a dead-letter sink must not dead-letter again")
            elif len(dead) != 1 or not dead[0].get("dead_letter_topic"):
                bad.append(f"{where}: push without a dead-letter policy")
            elif not dead[0].get("max_delivery_attempts"):
                bad.append(f"{where}: dead-letter policy without max_delivery_attempts")
            retry = sub_blocks(body, "retry_policy")
            if len(retry) != 1 or not {"minimum_backoff", "maximum_backoff"} <= set(retry[0]):
                bad.append(f"{where}: push without a retry policy")
            if not body.get("ack_deadline_seconds"):
                bad.append(f"{where}: push without an ack deadline")
    return bad


# --------------------------------------------------------------------------- tests: files


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_tf_file_parses(path: Path) -> None:
    assert isinstance(load(path), dict)


def test_terraform_tree_exists() -> None:
    names = {p.relative_to(TERRAFORM).as_posix() for p in tf_files()}
    assert "modules/cloudagents/main.tf" in names
    for env in ENVIRONMENTS:
        assert f"environments/{env}/main.tf" in names


@pytest.mark.parametrize("module_dir", sorted(p for p in MODULES.iterdir() if p.is_dir()))
def test_module_layout_and_typed_variables(module_dir: Path) -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        assert (module_dir / name).is_file(), f"{module_dir.name} lacks {name}"
    doc = load_dir(module_dir)
    for name, body in blocks(doc, "variable"):
        assert "type" in body, f"{module_dir.name}: variable {name} has no type"
        assert body.get("description"), f"{module_dir.name}: variable {name} undocumented"
        assert "any" not in expr(body["type"]).split("("), f"{module_dir.name}.{name}: any"
    providers = load(module_dir / "versions.tf")["terraform"][0]["required_providers"][0]
    assert "google" in providers


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environments_only_call_modules(environment: str) -> None:
    env_dir = TERRAFORM / "environments" / environment
    doc = load_dir(env_dir)
    assert not list(resources(doc)), "environments declare no resources"
    assert not list(resources(doc, "data")), "environments declare no data sources"
    calls = list(blocks(doc, "module"))
    assert calls, "the environment calls the cloudagents module"
    for name, call in calls:
        assert str(call["source"]).startswith("../../modules/"), f"{name}: local modules only"
    stack_call = module_call(doc, "cloudagents")
    assert expr(stack_call["topology"]) == "var.topology"
    assert expr(stack_call["firestore_ttl_fields"]) == "var.firestore_ttl_fields"
    variables = dict(blocks(doc, "variable"))
    assert {"project_id", "region", "image", "api_invokers", "topology"} <= set(variables)
    outputs = dict(blocks(doc, "output"))
    assert {"api_url", "topics"} <= set(outputs)
    backend = doc["terraform"][0]["backend"][0]
    assert "gcs" in backend


def test_terraform_fmt_is_clean() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform binary not installed")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "terraform"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"terraform fmt would change: {result.stdout}"


# --------------------------------------------------------------------------- tests: topology


def test_generated_tfvars_are_current() -> None:
    gen = gen_script()
    assert gen.main(["--check"]) == 0, "run: python scripts/gen_terraform_topology.py"
    for env in ENVIRONMENTS:
        path = TERRAFORM / "environments" / env / "topology.auto.tfvars.json"
        assert path.read_text() == gen.render(WORKSPACE)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_tfvars_cover_the_library_declaration(environment: str, declared: Topology) -> None:
    assert topology_coverage_violations(declared, tfvars(environment)["topology"]) == []


def test_checker_generator_check_fails_when_a_topic_is_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gen = gen_script()
    extra = Topic(f"{WORKSPACE}-new", "steps", "a topic added in code")

    def with_extra_topic(
        project: str, workspace: str, location: str = "us-central1", **graph: Any
    ) -> Topology:
        base = build_topology(project, workspace, **graph)
        return replace(base, topics=(*base.topics, extra))

    monkeypatch.setattr(gen, "build_topology", with_extra_topic)
    assert gen.main(["--check"]) == 1
    grown = with_extra_topic(PROJECT, WORKSPACE)
    assert any(
        "topics" in v
        for v in topology_coverage_violations(grown, tfvars(ENVIRONMENTS[0])["topology"])
    )


def test_graph_node_types_become_queues_topics_and_the_graph_worker() -> None:
    gen = gen_script()
    text = gen.render(WORKSPACE, "summarize:4,agent", "research")
    value = json.loads(text.replace(PLACEHOLDER, PROJECT))["topology"]
    declared = build_topology(
        PROJECT,
        WORKSPACE,
        graph_push_node_types={"summarize": 4, "agent": None},
        graph_pull_node_types=["research"],
    )
    assert topology_coverage_violations(declared, value) == []
    assert value["graph"] == {
        "push_node_types": ["agent", "summarize"],
        "pull_node_types": ["research"],
    }
    queues = value["queues"]
    for band in ("agents-graph-", "agents-graphhigh-", "agents-graphlow-"):
        assert queues[f"{band}summarize"]["max_concurrent_dispatches"] == 4
        assert queues[f"{band}summarize"]["service"] == "graph_worker"
    assert queues["agents-graphwake"]["path"] == "/tasks/graph-wake"
    worker = value["services"]["graph_worker"]
    assert worker["min_request_timeout_seconds"] >= 600  # a node task runs inside its request
    assert "agents-graphwake" in worker["task_queues"]
    for opener in ("api", "run_executor", "graph_worker"):
        assert opener in queues["agents-graph-agent"]["enqueuers"]
        assert opener in value["topics"]["agents-graph-research"]["publishers"]
    assert value["topics"]["agents-graph-research"]["pull_subscriptions"] == [
        "agents-graph-research-workers"
    ]
    # Without flags a regeneration keeps what the file records.
    assert gen.recorded_node_types(text) == ("agent:100,summarize:4", "research")
    assert gen.recorded_node_types(gen.render(WORKSPACE)) == ("", "")


def test_generator_writes_a_scratch_copy_and_leaves_the_repository_alone(
    tmp_path: Path,
) -> None:
    # scripts/checkov.sh scans a copy of terraform/ generated with graph node types this way.
    gen = gen_script()
    committed = {env: gen.tfvars_path(env).read_text() for env in ENVIRONMENTS}
    args = ["--terraform-dir", str(tmp_path), "--graph-push-node-types", "summarize:4,agent"]
    assert gen.main([*args, "--graph-pull-node-types", "research"]) == 0
    for env in ENVIRONMENTS:
        written = (tmp_path / "environments" / env / "topology.auto.tfvars.json").read_text()
        assert written == gen.render(WORKSPACE, "summarize:4,agent", "research")
        assert gen.tfvars_path(env).read_text() == committed[env]
    assert gen.main(["--terraform-dir", str(tmp_path), "--check"]) == 0


def test_stack_wires_graph_node_types() -> None:
    stack = load_dir(STACK)
    queues = module_call(stack, "queues")
    assert expr(queues["rate_limits"]["max_concurrent_dispatches"]) == (
        "each.value.max_concurrent_dispatches"
    )
    env = expr(module_call(stack, "services")["env"])
    assert (
        'CLOUDAGENTS_GRAPH_PUSH_NODE_TYPES = join(",", var.topology.graph.push_node_types)' in env
    )
    assert 'local.service_urls["graph_worker"]' in env


def test_checker_coverage_flags_a_changed_push_path(declared: Topology) -> None:
    value = tfvars(ENVIRONMENTS[0])["topology"]
    sub = declared.subscriptions[0]
    value["topics"][sub.topic]["push_subscriptions"][sub.name]["path"] = "/elsewhere"
    assert topology_coverage_violations(declared, value)


def test_stack_provisions_every_collection_unfiltered(stack: HCL) -> None:
    expected = {
        "topics": ("../pubsub", "var.topology.topics"),
        "dead_letter_topics": ("../pubsub", "var.topology.dead_letter_topics"),
        "queues": ("../tasks_queue", "var.topology.queues"),
        "buckets": ("../gcs_bucket", "var.topology.buckets"),
        "secrets": ("../secret", "var.topology.secrets"),
        "services": ("../cloud_run_service", "var.topology.services"),
        "service_accounts": ("../service_account", "var.topology.services"),
    }
    for name, (source, for_each) in expected.items():
        call = module_call(stack, name)
        assert call["source"] == source, name
        assert expr(call["for_each"]) == for_each, f"module {name} must cover {for_each}"
    assert expr(module_call(stack, "topics")["name"]) == "each.key"
    assert expr(module_call(stack, "dead_letter_topics")["name"]) == "each.key"
    assert expr(module_call(stack, "queues")["name"]) == "each.key"
    assert expr(module_call(stack, "secrets")["secret_id"]) == "each.key"
    bucket_name = expr(module_call(stack, "buckets")["name"])
    assert bucket_name == 'replace(each.key, "{project}", var.project_id)'


def test_stack_builds_push_subscriptions_from_the_declaration(stack: HCL) -> None:
    topics = module_call(stack, "topics")
    source, s, body = for_object(topics["push_subscriptions"])
    assert source == "each.value.push_subscriptions"
    assert body["endpoint"] == f"${{module.services[{s}.service].uri}}${{{s}.path}}"
    assert expr(body["oidc"]["service_account_email"]) == "module.push_invoker.email"
    assert expr(body["oidc"]["audience"]) == f"module.services[{s}.service].uri"
    dead_letter = body["dead_letter"]
    assert expr(dead_letter["topic"]) == f"module.dead_letter_topics[{s}.dead_letter_topic].id"
    assert expr(dead_letter["max_delivery_attempts"]) == f"{s}.max_delivery_attempts"
    assert expr(body["retry"]["minimum_backoff_seconds"]) == f"{s}.minimum_backoff_seconds"
    assert expr(body["retry"]["maximum_backoff_seconds"]) == f"{s}.maximum_backoff_seconds"
    assert expr(body["ack_deadline_seconds"]) == f"{s}.ack_deadline_seconds"
    assert expr(topics["pubsub_service_agent"]) == "module.project.pubsub_service_agent"


def test_dead_letter_topics_keep_messages_and_let_pubsub_publish(stack: HCL) -> None:
    dlq = module_call(stack, "dead_letter_topics")
    source = re.match(r"\{for (\w+) in ([\w.]+) : \1 => \{\}\}$", expr(dlq["pull_subscriptions"]))
    assert source and source[2] == "each.value.pull_subscriptions"
    publishers = dlq["iam"]["roles/pubsub.publisher"]
    assert publishers == ["serviceAccount:${module.project.pubsub_service_agent}"]


def test_pubsub_module_grants_the_service_agent_subscriber_on_each_push_subscription() -> None:
    grants = [
        body
        for rtype, _, body in resources(load_dir(MODULES / "pubsub"))
        if rtype == "google_pubsub_subscription_iam_member"
    ]
    assert any(
        expr(g["for_each"]) == "var.push_subscriptions"
        and g["role"] == "roles/pubsub.subscriber"
        and "var.pubsub_service_agent" in g["member"]
        for g in grants
    )
    agent = load(MODULES / "project_services" / "outputs.tf")["output"]
    value = next(o["pubsub_service_agent"]["value"] for o in agent if "pubsub_service_agent" in o)
    assert value.startswith("service-") and value.endswith("@gcp-sa-pubsub.iam.gserviceaccount.com")


def test_push_subscription_type_requires_oidc_and_dead_letter() -> None:
    variables = dict(blocks(load_dir(MODULES / "pubsub"), "variable"))
    type_text = re.sub(r"\s+", "", expr(variables["push_subscriptions"]["type"]))
    assert "oidc=object(" in type_text, "oidc must be required, not optional"
    assert "dead_letter=object(" in type_text, "dead_letter must be required, not optional"


def test_every_push_subscription_has_oidc_retry_and_dead_letter(
    all_docs: dict[Path, HCL],
) -> None:
    pushes = [
        body
        for doc in all_docs.values()
        for rtype, _, body in resources(doc)
        if rtype == "google_pubsub_subscription" and sub_blocks(body, "push_config")
    ]
    assert pushes, "some module declares push subscriptions"
    assert push_subscription_violations(all_docs) == []


def test_only_dead_letter_topics_have_sinks(stack: HCL) -> None:
    """A sink (no dead-letter policy) pushes what Pub/Sub gave up on to the run executor, which
    records it with its run: only the dead-letter topics' module call declares sinks."""
    calls = dict(blocks(stack, "module"))
    with_sinks = sorted(name for name, body in calls.items() if "sink_subscriptions" in body)
    assert with_sinks == ["dead_letter_topics"]
    sink = expr(calls["dead_letter_topics"]["sink_subscriptions"])
    assert "each.value.sink.path" in sink and "module.push_invoker.email" in sink


def test_checker_flags_push_subscription_without_dead_letter() -> None:
    broken = loads(
        """
resource "google_pubsub_subscription" "bad" {
  name                 = "x"
  topic                = "t"
  ack_deadline_seconds = 600
  push_config {
    push_endpoint = "https://example.com"
  }
}
"""
    )
    found = push_subscription_violations({Path("bad.tf"): broken})
    assert any("OIDC" in v for v in found)
    assert any("dead-letter" in v for v in found)
    assert any("retry" in v for v in found)


# --------------------------------------------------------------------------- tests: services


def test_services_follow_the_image_entry_point_convention(declared: Topology) -> None:
    for spec in declared.services:
        assert spec.source == f"services/{spec.name}/main.py"
        assert spec.target == spec.name


def test_cloud_run_services_are_wired_per_declaration(stack: HCL) -> None:
    call = module_call(stack, "services")
    assert expr(call["ingress"]) == (
        'each.value.http ? "INGRESS_TRAFFIC_ALL" : "INGRESS_TRAFFIC_INTERNAL_ONLY"'
    )
    assert "each.value.min_request_timeout_seconds" in expr(call["timeout_seconds"])
    assert expr(call["timeout_seconds"]).startswith("max(")
    env = expr(call["env"])
    for name in (
        "SERVICE = each.key",
        "GOOGLE_CLOUD_PROJECT = var.project_id",
        "CLOUDAGENTS_WORKSPACE = local.workspace",
        "CLOUDAGENTS_LOCATION = var.region",
        "CLOUDAGENTS_BROKER_URL",
        "CLOUDAGENTS_TASKS_SERVICE_ACCOUNT = module.tasks_invoker.email",
        'CLOUDAGENTS_TRACE_EXPORTER = "gcp"',
    ):
        assert name in env, f"services env lacks {name}"
    source, name, body = for_object(call["secret_env"])
    assert source == "each.value.secrets"
    assert expr(body["secret"]) == f"module.secrets[{name}].secret_id"
    invokers = expr(call["invokers"])
    assert "each.value.http ? var.api_invokers : []" in invokers
    assert "module.push_invoker.iam_email" in invokers
    assert expr(call["service_account_email"]) == "module.service_accounts[each.key].email"


def test_cloud_run_module_scales_to_zero_and_mounts_secrets() -> None:
    doc = load_dir(MODULES / "cloud_run_service")
    variables = dict(blocks(doc, "variable"))
    assert "min_instances=optional(number,0)" in re.sub(r"\s+", "", variables["scaling"]["type"])
    ((_, _, service),) = [r for r in resources(doc) if r[0] == "google_cloud_run_v2_service"]
    template = one_block(service, "template")
    assert expr(template["service_account"]) == "var.service_account_email"
    # The function sandbox needs the second generation (a full kernel, not gVisor).
    assert template["execution_environment"] == "EXECUTION_ENVIRONMENT_GEN2"
    container = one_block(template, "containers")
    dynamic_env = [d["env"] for d in container.get("dynamic", []) if "env" in d]
    secret_env = [d for d in dynamic_env if expr(d["for_each"]) == "var.secret_env"]
    assert secret_env, "secret env vars come from var.secret_env"
    content = secret_env[0]["content"][0]
    assert one_block(one_block(content, "value_source"), "secret_key_ref")["secret"]
    invoker_bindings = [
        body for rtype, _, body in resources(doc) if rtype.startswith("google_cloud_run_v2_")
    ]
    assert any(b.get("role") == "roles/run.invoker" for b in invoker_bindings)


# --------------------------------------------------------------------------- tests: IAM


def test_no_public_principals(all_docs: dict[Path, HCL]) -> None:
    assert public_member_violations(all_docs) == []


def test_public_principals_are_refused_by_validation() -> None:
    guarded = {
        ("cloud_run_service", "invokers"),
        ("cloudagents", "api_invokers"),
        ("pubsub", "iam"),
        ("gcs_bucket", "iam"),
        ("secret", "iam"),
        ("tasks_queue", "iam"),
        ("service_account", "iam"),
    }
    for module, variable in guarded:
        body = dict(blocks(load_dir(MODULES / module), "variable"))[variable]
        conditions = " ".join(v["condition"] for v in body.get("validation", []))
        for member in PUBLIC_MEMBERS:
            assert member in conditions, f"{module}.{variable} does not refuse {member}"


def test_checker_flags_public_member() -> None:
    broken = loads(
        """
resource "google_cloud_run_v2_service_iam_member" "public" {
  name   = "api"
  role   = "roles/run.invoker"
  member = "allUsers"
}
"""
    )
    assert public_member_violations({Path("bad.tf"): broken})


def test_no_basic_roles(all_docs: dict[Path, HCL]) -> None:
    assert basic_role_violations(all_docs) == []


def test_checker_flags_basic_role() -> None:
    broken = loads('module "x" {\n  project_roles = ["roles/editor"]\n}\n')
    assert basic_role_violations({Path("bad.tf"): broken})


def test_project_level_iam_only_for_roles_without_resource_iam(
    all_docs: dict[Path, HCL],
) -> None:
    assert project_iam_violations(all_docs) == []
    project_grants = [
        (path, body)
        for path, doc in all_docs.items()
        for rtype, _, body in resources(doc)
        if rtype.startswith("google_project_iam_")
    ]
    assert [p.parent.name for p, _ in project_grants] == ["service_account"]
    # ...and that module refuses, at plan time, roles that belong on a resource.
    variable = dict(blocks(load_dir(MODULES / "service_account"), "variable"))["project_roles"]
    conditions = " ".join(v["condition"] for v in variable["validation"])
    for family in ("pubsub", "storage", "secretmanager", "run", "cloudtasks", "owner", "editor"):
        assert family in conditions, f"project_roles does not refuse {family}"


def test_checker_flags_project_level_resource_role() -> None:
    broken = loads(
        """
resource "google_project_iam_member" "publisher" {
  project = "p"
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:x@p.iam.gserviceaccount.com"
}
module "sa" {
  source        = "../service_account"
  project_roles = ["roles/datastore.user", "roles/secretmanager.secretAccessor"]
}
"""
    )
    found = project_iam_violations({Path("bad.tf"): broken})
    assert any("pubsub.publisher" in v for v in found)
    assert any("secretAccessor" in v for v in found)
    assert any("say why" in v for v in found)


def test_roles_are_granted_on_their_resources(all_docs: dict[Path, HCL]) -> None:
    module_iam = module_iam_resource_types()
    assert module_iam["pubsub"].startswith("google_pubsub_topic_iam_")
    assert module_iam["gcs_bucket"].startswith("google_storage_bucket_iam_")
    assert module_iam["secret"].startswith("google_secret_manager_secret_iam_")
    assert module_iam["tasks_queue"].startswith("google_cloud_tasks_queue_iam_")
    assert resource_role_violations(all_docs, module_iam) == []


def test_checker_flags_role_on_the_wrong_resource() -> None:
    broken = loads(
        'module "b" {\n  source = "../gcs_bucket"\n  iam = { "roles/pubsub.publisher" = [] }\n}\n'
    )
    found = resource_role_violations({Path("bad.tf"): broken}, {"gcs_bucket": "google_storage_x"})
    assert found


def test_least_privilege_members_come_from_the_declaration(stack: HCL) -> None:
    expected = {
        "topics": ("roles/pubsub.publisher", "each.value.publishers"),
        "buckets": ("roles/storage.objectUser", "each.value.object_users"),
        "secrets": ("roles/secretmanager.secretAccessor", "each.value.accessors"),
        "queues": ("roles/cloudtasks.enqueuer", "each.value.enqueuers"),
    }
    for name, (role, source) in expected.items():
        iam = {k: v for k, v in module_call(stack, name)["iam"].items() if not k.startswith("__")}
        assert list(iam) == [role], f"module {name} grants exactly {role}"
        assert expr(iam[role]) == (
            f"[for svc in {source} : module.service_accounts[svc].iam_email]"
        ), f"module {name}: {role} members must be the declared services"
    tasks_user = module_call(stack, "tasks_invoker")["iam"]["roles/iam.serviceAccountUser"]
    assert "length(s.enqueues) > 0" in expr(tasks_user)


def test_model_keys_are_readable_only_by_run_executor(
    declared: Topology, all_docs: dict[Path, HCL]
) -> None:
    readers = {s.name for s in declared.services if set(MODEL_KEY_SECRETS) & set(s.secrets)}
    assert readers == {"run_executor"}
    for env in ENVIRONMENTS:
        secrets = tfvars(env)["topology"]["secrets"]
        assert set(secrets) == set(MODEL_KEY_SECRETS)
        for name in MODEL_KEY_SECRETS:
            assert secrets[name]["accessors"] == ["run_executor"]
    # The only place a Secret Manager role appears is the secrets module call of the stack.
    grants = [
        (path, value)
        for path, doc in all_docs.items()
        for value in walk_values(doc)
        if "roles/secretmanager." in value
    ]
    assert [(p.parent.name, v) for p, v in grants] == [
        ("cloudagents", "roles/secretmanager.secretAccessor")
    ]
    iam_keys = [k for k in module_call(load_dir(STACK), "secrets")["iam"] if k.startswith("roles/")]
    assert iam_keys == ["roles/secretmanager.secretAccessor"]


# --------------------------------------------------------------------------- tests: resources


def test_firestore_native_with_ttl_policies() -> None:
    doc = load_dir(MODULES / "firestore")
    by_type = {rtype: body for rtype, _, body in resources(doc)}
    assert by_type["google_firestore_database"]["type"] == "FIRESTORE_NATIVE"
    field = by_type["google_firestore_field"]
    assert expr(field["for_each"]) == "var.ttl_fields"
    assert len(sub_blocks(field, "ttl_config")) == 1
    for env in ENVIRONMENTS:
        ttl = {(f["collection"], f["field"]) for f in tfvars(env)["firestore_ttl_fields"].values()}
        assert {
            ("handoff_offers", "expires_at"),
            ("dead_letters", "expire_at"),
            ("audit_log", "expire_at"),
            ("slots", "expire_at"),
            ("function_executions", "expire_at"),
        } <= ttl
    call = module_call(load_dir(STACK), "firestore")
    assert expr(call["ttl_fields"]) == "var.firestore_ttl_fields"


def test_context_bucket_is_private_and_expires_objects() -> None:
    doc = load_dir(MODULES / "gcs_bucket")
    ((_, _, bucket),) = [r for r in resources(doc) if r[0] == "google_storage_bucket"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    rule = sub_blocks(bucket, "lifecycle_rule")[0]
    assert expr(one_block(rule, "condition")["age"]) == "var.delete_after_days"
    assert one_block(rule, "action")["type"] == "Delete"
    call = module_call(load_dir(STACK), "buckets")
    assert expr(call["delete_after_days"]) == "each.value.delete_after_days"


def test_tasks_queue_retries_per_declaration() -> None:
    doc = load_dir(MODULES / "tasks_queue")
    ((_, _, queue),) = [r for r in resources(doc) if r[0] == "google_cloud_tasks_queue"]
    retry = one_block(queue, "retry_config")
    assert expr(retry["max_attempts"]) == "var.retry.max_attempts"
    call = module_call(load_dir(STACK), "queues")
    assert expr(call["retry"]["max_attempts"]) == "each.value.max_attempts"


def test_outputs_expose_api_url_and_topics() -> None:
    outputs = dict(blocks(load_dir(STACK), "output"))
    assert "module.services[k].uri if s.http" in expr(outputs["api_url"]["value"])
    assert expr(outputs["topics"]["value"]) == "{for k, m in module.topics : k => m.id}"
