"""What the distributed graph classes take from their arguments and the environment."""

from __future__ import annotations

import pytest

from cloudagents.domain.errors import ConfigurationError
from cloudagents.graphs.distributed import DistributedOrchestrator, DistributedWorker
from cloudagents.topology import graph_node_subscription, graph_node_topic


def test_project_and_workspace_default_to_the_settings_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "env-project")
    monkeypatch.setenv("CLOUDAGENTS_WORKSPACE", "env-ws")
    orchestrator = DistributedOrchestrator()
    assert (orchestrator.project_id, orchestrator.workspace) == ("env-project", "env-ws")
    worker = DistributedWorker(node_types={"a"}, project_id="p2", workspace="w2")
    assert (worker.project_id, worker.workspace) == ("p2", "w2")
    assert worker.worker_id.startswith("worker-")
    assert worker.lease_seconds == 30.0


def test_no_project_anywhere_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GCLOUD_PROJECT", raising=False)
    with pytest.raises(ConfigurationError, match="project_id"):
        DistributedOrchestrator(workspace="ws")


def test_a_redis_url_says_what_to_pass_instead() -> None:
    with pytest.raises(TypeError, match=r"project_id=\.\.\. and workspace=\.\.\."):
        DistributedOrchestrator(redis_url="redis://localhost:6379/0")
    with pytest.raises(TypeError, match="instead of redis_url"):
        DistributedWorker(redis_url="redis://localhost:6379/0", node_types={"a"})


def test_worker_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="node_types"):
        DistributedWorker(project_id="p", workspace="w")
    with pytest.raises(ValueError, match="capacity"):
        DistributedWorker(node_types={"a"}, capacity=0, project_id="p", workspace="w")
    with pytest.raises(ValueError, match="lease_seconds"):
        DistributedWorker(node_types={"a"}, lease_seconds=1, heartbeat_interval=2, project_id="p")
    with pytest.raises(ValueError, match="prefetch"):
        DistributedWorker(node_types={"a"}, prefetch=-1, project_id="p", workspace="w")
    with pytest.raises(ValueError, match="bands must name"):
        DistributedWorker(node_types={"a"}, bands=(), project_id="p", workspace="w")
    assert DistributedWorker(
        node_types={"a"}, bands=("low", "high"), project_id="p", workspace="w"
    ).bands == ("high", "low")
    worker = DistributedWorker(node_types={"a"}, project_id="p", workspace="w")
    assert (worker.bands, worker.prefetch) == (("high", "normal", "low"), 0)
    with pytest.raises(ValueError, match="does not serve node type 'b'"):
        worker.register("b")(lambda state: {})


def test_node_type_topics_are_valid_pub_sub_names() -> None:
    assert graph_node_topic("ws", "researcher") == "ws-graph-researcher"
    assert graph_node_topic("ws", "web search/v2") == "ws-graph-web-search-v2"
    assert graph_node_subscription("ws", "writer") == "ws-graph-writer-workers"
    assert graph_node_topic("ws", "writer", "high") == "ws-graph_high-writer"
    assert graph_node_subscription("ws", "writer", "low") == "ws-graph_low-writer-workers"
    # No node type's normal topic is another's banded one.
    assert graph_node_topic("ws", "high-writer") != graph_node_topic("ws", "writer", "high")
    with pytest.raises(ValueError, match="unknown priority band 'urgent'"):
        graph_node_topic("ws", "writer", "urgent")
