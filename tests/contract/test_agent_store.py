"""``AgentStore``: agent definitions round trip whole."""

from __future__ import annotations

import itertools

import pytest

from cloudagents.domain.agents import AgentDefinition
from cloudagents.ports.stores import AgentStore
from tests.contract.conftest import new_id

pytestmark = pytest.mark.contract


def full_definition(agent_id: str) -> AgentDefinition:
    """A definition with every section filled in, nested JSON included."""
    return AgentDefinition.model_validate(
        {
            "id": agent_id,
            "name": "Billing helper",
            "description": "Answers billing questions and issues refunds.",
            "instructions": "You help with invoices.\nBe brief.",
            "user_template": "Customer {customer}: {input}",
            "model": {
                "provider": "scripted",
                "name": "scripted-demo",
                "headers": {"x-team": "billing"},
                "timeout_seconds": 30.5,
                "input_price_per_million": 0.15,
                "output_price_per_million": 0.6,
                "script": [
                    {
                        "tool_calls": [
                            {
                                "name": "lookup_invoice",
                                "arguments": {"invoice": "INV-1", "lines": [1, 2], "opts": {}},
                                "id": "call_1",
                            }
                        ],
                        "total_tokens": 12,
                    },
                    {"content": {"answer": "refunded", "amount": 12.5, "ok": True}},
                    {
                        "handoff_target": {
                            "required_capabilities": ["refunds"],
                            "ttl_seconds": 60,
                            "message": "over to you",
                        }
                    },
                    {"fail_with": "rate_limit", "fail_times": 2, "delay_seconds": 0.25},
                ],
            },
            "generation": {
                "temperature": 0.2,
                "max_tokens": 512,
                "top_p": 0.9,
                "stop_sequences": ["END"],
            },
            "tools": ["lookup_invoice", "calculator"],
            "capabilities": ["billing", "refunds"],
            "allowed_peers": ["support"],
            "input_schema": {"customer": "str", "amount": "float"},
            "output_schema": {
                "type": "object",
                "properties": {"answer": {"type": "string"}, "items": {"type": "array"}},
                "required": ["answer"],
            },
            "budget": {
                "max_tokens_per_run": 10_000,
                "max_tools_per_minute": 7,
                "max_daily_cost": 2.5,
                "max_iterations": 6,
            },
            "guardrails": {"risk_threshold": "high", "blocked_patterns": ["ssn", r"\bpin\b"]},
            "retry": {"max_attempts": 4, "backoff_seconds": 0.5, "retry_on_errors": ["timeout"]},
            "timeout_seconds": 120.0,
            "max_chain_depth": 2,
            "allowed_callers": ["user:a@example.com", "svc"],
        }
    )


async def test_put_get_round_trip(agent_store: AgentStore) -> None:
    definition = full_definition(new_id("agent"))
    await agent_store.put_agent(definition)
    stored = await agent_store.get_agent(definition.id)
    assert stored == definition
    assert stored is not None
    assert stored.model_dump(mode="json") == definition.model_dump(mode="json")
    assert await agent_store.get_agent(new_id("missing")) is None


async def test_put_replaces(agent_store: AgentStore) -> None:
    agent_id = new_id("agent")
    await agent_store.put_agent(full_definition(agent_id))
    minimal = AgentDefinition.model_validate({"id": agent_id, "model": {"name": "gpt-4o-mini"}})
    await agent_store.put_agent(minimal)
    assert await agent_store.get_agent(agent_id) == minimal


async def test_list_agents_sorted_by_id(agent_store: AgentStore) -> None:
    prefix = new_id("agent")
    definitions = [full_definition(f"{prefix}-{suffix}") for suffix in ("b", "a", "c")]
    for definition in definitions:
        await agent_store.put_agent(definition)
    listed = [d for d in await agent_store.list_agents() if d.id.startswith(prefix)]
    assert [d.id for d in listed] == [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
    assert listed[0] == definitions[1]
    ids = [d.id for d in await agent_store.list_agents()]
    assert ids == sorted(ids)


async def test_history_versions_changes_and_deletions(agent_store: AgentStore) -> None:
    agent_id = new_id("agent")
    first = full_definition(agent_id)
    second = AgentDefinition.model_validate({"id": agent_id, "model": {"name": "gpt-4o-mini"}})
    await agent_store.put_agent(first)
    await agent_store.put_agent(first)  # unchanged: no new version
    await agent_store.put_agent(second)
    assert await agent_store.delete_agent(agent_id) is True
    assert await agent_store.get_agent(agent_id) is None
    assert agent_id not in [d.id for d in await agent_store.list_agents()]
    assert await agent_store.delete_agent(agent_id) is False  # nothing to delete: no version
    await agent_store.put_agent(first)
    history = await agent_store.agent_history(agent_id)
    assert [(v.version, v.definition) for v in history] == [
        (1, first),
        (2, second),
        (3, None),
        (4, first),
    ]
    assert [v.deleted for v in history] == [False, False, True, False]
    assert all(a.created_at <= b.created_at for a, b in itertools.pairwise(history))
    assert await agent_store.get_agent(agent_id) == first
    assert await agent_store.agent_history(new_id("missing")) == []


async def test_a_definition_firestore_cannot_hold_is_refused_not_a_crash(
    agent_store: AgentStore,
) -> None:
    """An integer past 64 bits inside a definition (schemathesis found it): the store refuses it
    with ``PermanentMessageError`` (the api's 400), or keeps it as given (memory)."""
    from cloudagents.domain.errors import PermanentMessageError

    agent_id = new_id("huge")
    data = full_definition(agent_id).model_dump(mode="json")
    data["model"] = {
        "provider": "scripted",
        "name": "s",
        "script": [{"tool_calls": [{"name": "t", "arguments": {"n": 2**70}}]}],
    }
    huge = AgentDefinition.model_validate(data)
    try:
        await agent_store.put_agent(huge)
    except PermanentMessageError as refused:
        assert "cannot be stored" in str(refused)
    else:
        from cloudagents.adapters.firestore.stores import FirestoreAgentStore

        assert not isinstance(agent_store, FirestoreAgentStore), "Firestore cannot hold 2**70"
        assert await agent_store.get_agent(agent_id) == huge


async def test_versions_read_by_number_and_the_latest(agent_store: AgentStore) -> None:
    agent_id = new_id("pinned")
    first = full_definition(agent_id)
    second = full_definition(agent_id).model_copy(update={"instructions": "Changed."})
    assert await agent_store.latest_version(agent_id) is None
    await agent_store.put_agent(first)
    await agent_store.put_agent(second)
    latest = await agent_store.latest_version(agent_id)
    assert latest is not None and (latest.version, latest.definition) == (2, second)
    # A version reads as it was written, the earlier one too (the cache keeps what was read).
    for _ in range(2):
        assert await agent_store.get_agent_version(agent_id, 1) == first
        assert await agent_store.get_agent_version(agent_id, 2) == second
    assert await agent_store.get_agent_version(agent_id, 3) is None
    await agent_store.delete_agent(agent_id)
    deleted = await agent_store.latest_version(agent_id)
    assert deleted is not None and (deleted.version, deleted.definition) == (3, None)
    assert await agent_store.get_agent_version(agent_id, 1) == first
