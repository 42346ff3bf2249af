"""The one declaration of the cloud topology: topics, push subscriptions, queues, buckets, services.

The local bootstrap creates exactly this on the emulators, and Terraform's inputs are generated
from it (``scripts/gen_terraform_topology.py``; a test fails when they drift). Nothing else keeps a
list of topics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

TopicRole = Literal[
    "intents", "steps", "tools", "tools_audit", "handoff", "snapshots", "transitions", "graph_nodes"
]
ServiceName = Literal[
    "api", "run_executor", "tool_invoker", "handoff_broker", "context_snapshotter", "graph_worker"
]
SERVICES: tuple[ServiceName, ...] = (
    "api",
    "run_executor",
    "tool_invoker",
    "handoff_broker",
    "context_snapshotter",
)
"""The services every workspace runs. ``graph_worker`` (the push worker service of graph
workflows) is added when node types are push-dispatched (``graph_push_node_types``)."""
GRAPH_WORKER: ServiceName = "graph_worker"

# Model calls happen inside a push request, so the ack deadline must outlast a slow model call
# plus its retries; 600 s is Pub/Sub's maximum.
PUSH_ACK_DEADLINE_SECONDS = 600
MAX_DELIVERY_ATTEMPTS = 10


@dataclass(frozen=True)
class Topic:
    """A Pub/Sub topic and what it carries."""

    name: str
    role: TopicRole | Literal["dead_letter"]
    description: str


@dataclass(frozen=True)
class PushSubscription:
    """A push subscription delivering ``topic`` to ``service`` at ``path``, with dead-lettering."""

    name: str
    topic: str
    service: ServiceName
    path: str
    dead_letter_topic: str
    ack_deadline_seconds: int = PUSH_ACK_DEADLINE_SECONDS
    max_delivery_attempts: int = MAX_DELIVERY_ATTEMPTS
    minimum_backoff_seconds: int = 1
    maximum_backoff_seconds: int = 60


@dataclass(frozen=True)
class DeadLetterSink:
    """A push subscription on a dead-letter topic. The run executor records each message Pub/Sub
    gave up on in ``dead_letters`` (with its run, so ``GET /runs/{id}`` shows it, and
    ``cloudagents dead-letters replay`` resumes the run) and acknowledges it: it has no
    dead-letter policy of its own."""

    name: str
    topic: str
    source_subscription: str
    service: ServiceName = "run_executor"
    path: str = "/pubsub/dead-letters"
    ack_deadline_seconds: int = PUSH_ACK_DEADLINE_SECONDS
    minimum_backoff_seconds: int = 1
    maximum_backoff_seconds: int = 60


@dataclass(frozen=True)
class Queue:
    """A Cloud Tasks queue whose HTTP tasks call ``service`` at ``path``."""

    name: str
    service: ServiceName
    path: str
    max_attempts: int = 20
    max_concurrent_dispatches: int | None = None
    """The queue's cap on tasks in flight at once (None: Cloud Tasks' default). For a graph
    node type's queue this is the node type's global capacity."""
    node_type: str | None = None
    """The graph node type whose tasks this queue carries (one queue per type and band)."""


@dataclass(frozen=True)
class Bucket:
    """A Cloud Storage bucket; objects older than ``delete_after_days`` are deleted."""

    name: str
    delete_after_days: int = 30


@dataclass(frozen=True)
class ServiceSpec:
    """A service: its functions-framework target, and the resources it touches (for IAM)."""

    name: ServiceName
    source: str
    target: str
    http: bool
    publishes: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()
    enqueues: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    """Everything one workspace needs in one project."""

    project: str
    workspace: str
    location: str
    topics: tuple[Topic, ...]
    subscriptions: tuple[PushSubscription, ...]
    queues: tuple[Queue, ...]
    buckets: tuple[Bucket, ...]
    services: tuple[ServiceSpec, ...]
    pull_subscriptions: tuple[tuple[str, str], ...] = field(default=())
    """(name, topic): what no push subscription consumes is kept here."""
    dead_letter_sinks: tuple[DeadLetterSink, ...] = field(default=())
    graph_pull_node_types: tuple[str, ...] = field(default=())
    """Graph node types whose tasks travel on Pub/Sub topics (``graph_nodes``) to pull workers."""

    def topic(self, role: TopicRole) -> str:
        return next(t.name for t in self.topics if t.role == role)

    @property
    def context_bucket(self) -> str:
        return self.buckets[0].name

    @property
    def handoff_queue(self) -> str:
        return self.queues[0].name

    @property
    def wake_queue(self) -> Queue:
        """The queue of run wake-ups (``runtime/wakeups.py``): deadlines, deferred calls."""
        return next(q for q in self.queues if q.path == WAKE_PATH)

    @property
    def place_agent_queue(self) -> Queue:
        """The queue of place agent executions (seed 004 ``PlaceAgentSchedule``) and of
        transition retries after their backoff (``FiringRetryTask``)."""
        return next(q for q in self.queues if q.path == PLACE_AGENT_PATH)

    @property
    def graph_wake_queue(self) -> Queue | None:
        """The queue of graph superstep wake-ups (``graphs/push.py``), when a node type is
        push-dispatched."""
        return next((q for q in self.queues if q.path == GRAPH_WAKE_PATH), None)

    @property
    def graph_push_node_types(self) -> tuple[str, ...]:
        """The node types whose tasks go to the graph worker service (Cloud Tasks)."""
        return tuple(sorted({q.node_type for q in self.queues if q.node_type is not None}))

    def sink(self, name: str) -> DeadLetterSink | None:
        return next((s for s in self.dead_letter_sinks if s.name == name), None)

    def service(self, name: ServiceName) -> ServiceSpec:
        return next(s for s in self.services if s.name == name)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MODEL_KEY_SECRETS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
WAKE_PATH = "/tasks/wake"
PLACE_AGENT_PATH = "/tasks/place-agent"
GRAPH_TASK_PATH = "/tasks/graph-node"
"""Where the graph worker service takes a node task (``TaskMessage``) from its Cloud Tasks queue."""
GRAPH_WAKE_PATH = "/tasks/graph-wake"
"""Where the graph worker service takes a superstep's wake-up at lease expiry."""
GRAPH_BANDS = ("high", "normal", "low")
"""The priority bands (``graphs/documents.py:PRIORITY_BANDS``): a topic or queue per band."""
DEFAULT_GRAPH_QUEUE_CONCURRENCY = 100


# The workspace names topics, subscriptions, queues and (in Terraform) service accounts and Cloud
# Run services, whose rules are the strictest: lowercase, a letter first, at most 10 characters.
_WORKSPACE = re.compile(r"^[a-z][a-z0-9-]{2,9}$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")


def build_topology(
    project: str,
    workspace: str,
    location: str = "us-central1",
    *,
    check_names: bool = True,
    graph_push_node_types: Mapping[str, int | None] | Iterable[str] = (),
    graph_pull_node_types: Iterable[str] = (),
) -> Topology:
    """The topology for ``workspace`` (the intents topic name) in ``project``.

    ``check_names=False`` accepts any workspace name Pub/Sub accepts: seed 000's
    ``DistributedAgent`` names its workspace freely (``my-workspace``); only a workspace that
    Terraform deploys services for needs the short names checked here.

    Graph workflows: ``graph_push_node_types`` (node type -> capacity, or names) adds the
    ``graph_worker`` service, a Cloud Tasks queue per node type and band (capacity = its
    ``max_concurrent_dispatches``) and the superstep wake-up queue; ``graph_pull_node_types``
    adds each type's topic and shared worker subscription per band (``DistributedWorker``)."""
    if check_names and not _WORKSPACE.match(workspace):
        raise ValueError(
            f"workspace {workspace!r} is not valid: 3-10 characters, a lowercase letter first, "
            "then lowercase letters, digits and -"
        )
    if check_names and not _PROJECT.match(project):
        raise ValueError(f"project id {project!r} is not valid: 6-30 lowercase letters, digits, -")
    ws = workspace
    main_topics = (
        Topic(ws, "intents", "IntentionMessages that start runs (seed 000 workspace topic)"),
        Topic(f"{ws}-steps", "steps", "(run_id, seq) messages that move a run one step"),
        Topic(f"{ws}-tools", "tools", "one message per tool call to execute (seed 000)"),
        Topic(f"{ws}-tools-audit", "tools_audit", "audit record of every tool call and result"),
        Topic(f"{ws}-handoff", "handoff", "handoff offers for the broker (seed 000)"),
        Topic(f"{ws}-snapshots", "snapshots", "requests to snapshot a run's context to GCS"),
        Topic(f"{ws}-transitions", "transitions", "fire intents and finished token firings"),
    )
    routes: tuple[tuple[str, str, ServiceName, str], ...] = (
        (f"{ws}-run-executor-intents", ws, "run_executor", "/pubsub/intents"),
        (f"{ws}-run-executor-steps", f"{ws}-steps", "run_executor", "/pubsub/steps"),
        (f"{ws}-tool-invoker", f"{ws}-tools", "tool_invoker", "/pubsub/tools"),
        (f"{ws}-handoff-broker", f"{ws}-handoff", "handoff_broker", "/pubsub/handoff"),
        (
            f"{ws}-context-snapshotter",
            f"{ws}-snapshots",
            "context_snapshotter",
            "/pubsub/snapshots",
        ),
        (
            f"{ws}-run-executor-transitions",
            f"{ws}-transitions",
            "run_executor",
            "/pubsub/transitions",
        ),
    )
    subscriptions = tuple(
        PushSubscription(
            name=name,
            topic=topic,
            service=service,
            path=path,
            dead_letter_topic=f"{name}-dead-letter",
        )
        for name, topic, service, path in routes
    )
    dead_letter_topics = tuple(
        Topic(s.dead_letter_topic, "dead_letter", f"messages {s.name} could not deliver")
        for s in subscriptions
    )
    bucket = f"{project}-agent-context"
    queue = f"{ws}-handoff-expiry"
    wake_queue = f"{ws}-wakeups"
    place_queue = f"{ws}-place-agents"
    t = {topic.role: topic.name for topic in main_topics}
    services: tuple[ServiceSpec, ...] = (
        ServiceSpec(
            "api",
            "services/api/main.py",
            "api",
            http=True,
            publishes=(t["intents"], t["transitions"]),
            enqueues=(place_queue,),
        ),
        ServiceSpec(
            "run_executor",
            "services/run_executor/main.py",
            "run_executor",
            http=False,
            publishes=(
                t["intents"],
                t["steps"],
                t["tools"],
                t["handoff"],
                t["snapshots"],
                t["transitions"],
            ),
            buckets=(bucket,),
            enqueues=(wake_queue, place_queue),
            secrets=MODEL_KEY_SECRETS,
        ),
        ServiceSpec(
            "tool_invoker",
            "services/tool_invoker/main.py",
            "tool_invoker",
            http=False,
            publishes=(t["steps"], t["tools_audit"]),
            buckets=(bucket,),
            enqueues=(wake_queue,),
        ),
        ServiceSpec(
            "handoff_broker",
            "services/handoff_broker/main.py",
            "handoff_broker",
            http=False,
            publishes=(t["intents"],),
            buckets=(bucket,),
            enqueues=(queue,),
        ),
        ServiceSpec(
            "context_snapshotter",
            "services/context_snapshotter/main.py",
            "context_snapshotter",
            http=False,
            buckets=(bucket,),
        ),
    )
    push_types = parse_node_types(graph_push_node_types)
    pull_types = sorted(set(graph_pull_node_types) - set(push_types))
    graph_topics = tuple(
        Topic(
            graph_node_topic(ws, node_type, band),
            "graph_nodes",
            f"graph node tasks of type {node_type} ({band} priority), pulled by workers",
        )
        for node_type in pull_types
        for band in GRAPH_BANDS
    )
    graph_queues = tuple(
        Queue(
            graph_task_queue(ws, node_type, band),
            GRAPH_WORKER,
            GRAPH_TASK_PATH,
            max_attempts=GRAPH_TASK_MAX_ATTEMPTS,
            max_concurrent_dispatches=capacity or DEFAULT_GRAPH_QUEUE_CONCURRENCY,
            node_type=node_type,
        )
        for node_type, capacity in sorted(push_types.items())
        for band in GRAPH_BANDS
    )
    if graph_queues:
        graph_queues += (Queue(graph_wake_queue(ws), GRAPH_WORKER, GRAPH_WAKE_PATH),)
    if graph_topics or graph_queues:
        # Whoever opens a superstep dispatches its tasks: the api (start, fork, resume), the
        # run executor (workflow intents) and the graph worker (the advance, the wake-ups).
        graph_publishes = tuple(topic.name for topic in graph_topics)
        graph_enqueues = tuple(q.name for q in graph_queues)
        services = tuple(
            replace(
                s,
                publishes=s.publishes + graph_publishes,
                enqueues=s.enqueues + graph_enqueues,
            )
            if s.name in ("api", "run_executor")
            else s
            for s in services
        )
    if graph_queues:
        services += (
            ServiceSpec(
                GRAPH_WORKER,
                f"services/{GRAPH_WORKER}/main.py",
                GRAPH_WORKER,
                http=False,
                # The intents topic: agent nodes start their child runs with an intent.
                publishes=(t["intents"], *(topic.name for topic in graph_topics)),
                enqueues=tuple(q.name for q in graph_queues),
            ),
        )
    return Topology(
        project=project,
        workspace=ws,
        location=location,
        topics=main_topics + dead_letter_topics + graph_topics,
        subscriptions=subscriptions,
        queues=(
            Queue(queue, "handoff_broker", "/tasks/expire"),
            Queue(wake_queue, "run_executor", WAKE_PATH),
            Queue(place_queue, "run_executor", PLACE_AGENT_PATH),
            *graph_queues,
        ),
        buckets=(Bucket(bucket),),
        services=services,
        # Pull subscriptions keep what no push subscription consumes: parked messages on each
        # dead-letter topic (also pushed to the run executor, which records them), the tool
        # audit trail, and the pull node types' tasks (their workers share one per band).
        pull_subscriptions=(
            *((f"{s.dead_letter_topic}-pull", s.dead_letter_topic) for s in subscriptions),
            (f"{t['tools_audit']}-pull", t["tools_audit"]),
            *(
                (
                    graph_node_subscription(ws, node_type, band),
                    graph_node_topic(ws, node_type, band),
                )
                for node_type in pull_types
                for band in GRAPH_BANDS
            ),
        ),
        dead_letter_sinks=tuple(
            DeadLetterSink(f"{s.dead_letter_topic}-record", s.dead_letter_topic, s.name)
            for s in subscriptions
        ),
        graph_pull_node_types=tuple(pull_types),
    )


# Graph workflows (seed 001): node tasks travel on a topic per node type, consumed by pull
# workers (``cloudagents.graphs.distributed``) through one shared subscription per type, in
# three priority bands (a topic and subscription per band and type: a worker runs what it holds
# of a higher band first; separate topics need no subscription filters, which cannot be changed
# on an existing subscription, and leave the normal band's names as they were). Node
# types are the application's, so these are provisioned on first use (``adapters/provisioning``).
# Short (Pub/Sub's minimum): a live worker's client extends it while the task runs, and a
# delivery stranded on a consumer that died comes back within it rather than a minute later.
GRAPH_NODE_ACK_DEADLINE_SECONDS = 10


def graph_node_topic(workspace: str, node_type: str, band: str = "normal") -> str:
    """The topic of ``node_type``'s node tasks in ``workspace``, in priority ``band``
    (``graphs/documents.py:PRIORITY_BANDS``): ``normal`` is ``{ws}-graph-{type}``, the others
    ``{ws}-graph_{band}-{type}`` (``_`` where the normal name has ``-``, so no node type's
    normal topic can be another's banded one)."""
    name = re.sub(r"[^A-Za-z0-9._~+%-]", "-", node_type)
    if band == "normal":
        return f"{workspace}-graph-{name}"
    if band not in ("high", "low"):
        raise ValueError(f"unknown priority band {band!r}; expected high, normal or low")
    return f"{workspace}-graph_{band}-{name}"


def graph_node_subscription(workspace: str, node_type: str, band: str = "normal") -> str:
    """The pull subscription that ``node_type``'s workers share, in priority ``band``."""
    return f"{graph_node_topic(workspace, node_type, band)}-workers"


# Push-dispatched node types: a Cloud Tasks queue per node type and band, calling the graph
# worker service. Queue names take letters, digits and hyphens only, so a band is spelled into
# the prefix (``{ws}-graphhigh-{type}``), never into the type's part of the name.
GRAPH_TASK_MAX_ATTEMPTS = 20
GRAPH_TASK_DEADLINE_SECONDS = 600
"""A push node task runs inside its request: Cloud Tasks waits for it up to its dispatch
deadline (10 min by default for HTTP tasks), and Cloud Run must not cut it sooner."""


def graph_task_queue(workspace: str, node_type: str, band: str = "normal") -> str:
    """The Cloud Tasks queue of ``node_type``'s node tasks in priority ``band``:
    ``{ws}-graph-{type}`` for ``normal``, ``{ws}-graph{band}-{type}`` for the others."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", node_type)
    if band == "normal":
        return f"{workspace}-graph-{name}"
    if band not in ("high", "low"):
        raise ValueError(f"unknown priority band {band!r}; expected high, normal or low")
    return f"{workspace}-graph{band}-{name}"


def graph_wake_queue(workspace: str) -> str:
    """The Cloud Tasks queue of superstep wake-ups (no node type's queue can take this name)."""
    return f"{workspace}-graphwake"


def parse_node_types(spec: str | Mapping[str, int | None] | Iterable[str]) -> dict[str, int | None]:
    """Node types with an optional capacity: ``"summarize:4,classify"``, a list of names, or
    a mapping. The capacity is the node type's queue's ``max_concurrent_dispatches``."""
    if isinstance(spec, Mapping):
        return {str(k): v for k, v in spec.items()}
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    found: dict[str, int | None] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, _, capacity = item.partition(":")
        if capacity and not (capacity.isdigit() and int(capacity) > 0):
            raise ValueError(f"node type {name!r}: capacity {capacity!r} is not a positive integer")
        found[name.strip()] = int(capacity) if capacity else None
    return found
