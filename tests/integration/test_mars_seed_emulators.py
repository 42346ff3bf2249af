"""Seed 003's examples (``tests/unit/test_mars_seed.py``) again, with the façade recording its
runs on the Firestore, Pub/Sub and Cloud Storage emulators (``cloudagents.mars.use_gcp``), as
``DistributedAgent`` does: the same tests, collected here with this module's ``server``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from unittest.mock import patch

import pytest

from cloudagents import mars
from cloudagents.local.emulators import EmulatorStack, start_stack
from tests.fakes.llm_api_servers import FakeLLMServer, fake_llm_server
from tests.unit.test_mars_seed import (  # noqa: F401 - collected here, on the emulators
    test_a_custom_agent_overriding_run,
    test_agent_with_tools,
    test_an_orchestrator_calls_a_peer_through_its_model,
    test_basic_agent,
    test_memory_remembers_across_auto_runs,
    test_schema_validation_in_practice,
)

pytestmark = pytest.mark.integration
PROJECT = "mars-project"


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorStack]:
    stack = start_stack(PROJECT, tmp_path_factory.mktemp("mars-emulator-logs"))
    try:
        with patch.dict(os.environ, stack.env()):
            yield stack
    finally:
        stack.stop()


@pytest.fixture
async def server(
    emulators: EmulatorStack, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FakeLLMServer]:
    with fake_llm_server() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        mars.use_gcp(PROJECT, "mars-seed")
        try:
            yield fake
        finally:
            await mars.aclose()
            mars.use_memory()


async def test_the_runs_are_in_firestore(server: FakeLLMServer) -> None:
    from google.cloud import firestore

    agent = mars.Agent(
        model=mars.ModelConfig(type="api", provider="openai", name="gpt-4o"),
        description="You answer.",
        agent_name="Recorded",
    )
    server.reply_text("recorded")
    assert str(await agent.auto_run("hello")) == "recorded"
    db = firestore.AsyncClient(project=PROJECT)
    runs = [d.to_dict() async for d in db.collection("agent_runs").stream()]
    mine = [r for r in runs if r["agent_id"] == "recorded"]
    assert mine and mine[-1]["result"]["exit"] == "SATISFIED"
