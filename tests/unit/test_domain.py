"""Validation of the domain models: bad values give clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloudagents import (
    AgentDefinition,
    Budget,
    GuardrailConfig,
    IntentionMessage,
    LoopExit,
    LoopResult,
    ModelConfig,
    ModelResponse,
)
from cloudagents.domain.agents import schema_to_json_schema
from cloudagents.domain.base import Persisted, newer_schema
from cloudagents.domain.events import RUN_EVENT_ADAPTER, ContentChunk
from cloudagents.domain.handoffs import HandoffTarget, OfferMessage
from cloudagents.domain.messages import GenerationParams, Message, ToolCall
from cloudagents.domain.runs import (
    OutboxMessage,
    RunRecord,
    SnapshotMessage,
    StepMessage,
    ToolAuditMessage,
    ToolMessage,
    WakeUp,
)


def agent(**overrides: object) -> AgentDefinition:
    data: dict[str, object] = {"id": "helper", "model": {"provider": "openai", "name": "gpt-4o"}}
    data.update(overrides)
    return AgentDefinition.model_validate(data)


def test_attention_weight_out_of_range_is_rejected() -> None:
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        IntentionMessage(run_id="r1", source_agent="user", attention_weight=1.5, payload={})


def test_intent_round_trips_and_reads_its_start_payload() -> None:
    intent = IntentionMessage.for_run(run_id="r-1", agent_id="helper", message="hi")
    again = IntentionMessage.model_validate_json(intent.model_dump_json())
    assert again.start_run().agent_id == "helper"
    assert again.schema_version == 1


def test_newer_schema_version_fails_fast() -> None:
    with pytest.raises(ValidationError, match="newer than this release"):
        IntentionMessage(run_id="r1", source_agent="u", payload={}, schema_version=99)


WIRE_RECORDS: list[tuple[type[Persisted], dict[str, object]]] = [
    (IntentionMessage, {"run_id": "r", "source_agent": "u", "payload": {}}),
    (StepMessage, {"run_id": "r", "seq": 1}),
    (ToolMessage, {"run_id": "r", "seq": 1, "index": 0}),
    (WakeUp, {"run_id": "r", "seq": 1}),
    (SnapshotMessage, {"run_id": "r", "seq": 1}),
    (OfferMessage, {"offer_id": "o"}),
    (
        ToolAuditMessage,
        {
            "run_id": "r",
            "agent_id": "a",
            "seq": 0,
            "index": 0,
            "tool": "t",
            "is_error": False,
            "attempts": 1,
        },
    ),
    (ContentChunk, {"run_id": "r", "chunk": "hi"}),
    (Message, {"role": "user", "content": "hi"}),
]


@pytest.mark.parametrize(("model", "body"), WIRE_RECORDS, ids=lambda v: getattr(v, "__name__", ""))
def test_wire_and_transcript_records_carry_a_schema_version_and_refuse_newer_ones(
    model: type[Persisted], body: dict[str, object]
) -> None:
    record = model.model_validate(body)
    assert record.model_dump(mode="json")["schema_version"] == 1
    assert OutboxMessage.of("steps", record).data["schema_version"] == 1
    with pytest.raises(ValidationError) as refused:
        model.model_validate({**body, "schema_version": 2})
    assert newer_schema(refused.value)  # retryable (503), not a dead letter
    with pytest.raises(ValidationError) as bad:
        model.model_validate({**body, "no_such_field": 1})
    assert not newer_schema(bad.value)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("max_tokens_per_run", -1, "greater than 0"),
        ("max_tools_per_minute", 0, "greater than 0"),
        ("max_daily_cost", -0.5, "greater than or equal to 0"),
        ("max_iterations", 0, "greater than 0"),
    ],
)
def test_negative_budgets_are_rejected(field: str, value: float, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Budget.model_validate({field: value})


def test_unknown_provider_names_the_allowed_ones() -> None:
    with pytest.raises(ValidationError, match="'openai'"):
        ModelConfig.model_validate({"provider": "grok", "name": "x"})


def test_unknown_fields_are_errors_not_silently_dropped() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Budget.model_validate({"max_tokens": 5})


def test_scripted_provider_needs_turns() -> None:
    with pytest.raises(ValidationError, match="at least one turn"):
        ModelConfig(provider="scripted", name="s")


def test_generation_parameter_ranges() -> None:
    with pytest.raises(ValidationError):
        GenerationParams(temperature=2.5)
    with pytest.raises(ValidationError):
        GenerationParams(top_p=1.5)
    with pytest.raises(ValidationError):
        GenerationParams(presence_penalty=-3)
    assert GenerationParams(temperature=0.7, stop_sequences=["END"]).stop_sequences == ["END"]


def test_guardrail_patterns_must_compile() -> None:
    with pytest.raises(ValidationError, match="not a valid regex"):
        GuardrailConfig(blocked_patterns=["(unclosed"])
    with pytest.raises(ValidationError):
        GuardrailConfig.model_validate({"risk_threshold": "extreme"})


def test_agent_id_pattern() -> None:
    with pytest.raises(ValidationError, match="pattern"):
        agent(id="Has Spaces")


def test_three_schema_forms_normalise_to_json_schema() -> None:
    assert schema_to_json_schema(["q"]) == {
        "type": "object",
        "properties": {"q": {"type": "string"}},
        "required": ["q"],
    }
    typed = schema_to_json_schema({"report": str, "confidence": "float"})
    assert typed is not None
    assert typed["properties"] == {"report": {"type": "string"}, "confidence": {"type": "number"}}
    full = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert schema_to_json_schema(full) == full
    with pytest.raises(ValueError, match="unknown type"):
        schema_to_json_schema({"x": "complex"})
    assert agent(input_schema=["sub_question"]).input_schema is not None


def test_user_template_renders_and_reports_missing_variables() -> None:
    a = agent(user_template="Review {document_type}: {input}")
    assert a.render_user_message("text", {"document_type": "memo"}) == "Review memo: text"
    with pytest.raises(ValueError, match="document_type"):
        a.render_user_message("text", {})


def test_model_response_accepts_openai_style_tool_calls() -> None:
    reply = ModelResponse.model_validate(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a":1}'},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        }
    )
    assert reply.tool_calls == [ToolCall(id="c1", name="add", arguments={"a": 1})]
    assert reply.usage.total_tokens == 7


def test_tool_message_needs_call_id() -> None:
    with pytest.raises(ValidationError, match="tool_call_id"):
        Message(role="tool", content="x")


def test_handoff_target_needs_capabilities() -> None:
    with pytest.raises(ValidationError):
        HandoffTarget(required_capabilities=[])


def test_loop_result_and_exit_values() -> None:
    result = LoopResult(exit=LoopExit.SATISFIED, payload={"answer": "4"}, iterations=1)
    assert result.exit.value == "SATISFIED"
    assert {e.value for e in LoopExit} >= {
        "SATISFIED",
        "MAX_ITERS",
        "ERROR",
        "GUARDRAIL_BLOCK",
        "HANDOFF",
    }


def test_run_events_are_a_discriminated_union() -> None:
    event = RUN_EVENT_ADAPTER.validate_python(
        {"type": "content_chunk", "run_id": "r", "chunk": "a"}
    )
    assert isinstance(event, ContentChunk)
    with pytest.raises(ValidationError):
        RUN_EVENT_ADAPTER.validate_python({"type": "nope", "run_id": "r"})


def test_a_run_without_pinned_functions_is_written_as_before_the_field() -> None:
    plain = RunRecord(run_id="r", agent_id="a")
    assert "functions" not in plain.model_dump(mode="json")
    pinned = RunRecord(run_id="r", agent_id="a", functions={"hypot": "ab" * 32})
    data = pinned.model_dump(mode="json")
    assert data["functions"] == {"hypot": "ab" * 32}
    assert RunRecord.model_validate(data) == pinned


def test_seed_002_definition_fields_are_accepted_in_this_definitions_terms() -> None:
    """Seed 002's ``Agent(...)`` example and its "Agent Configuration" block, with a model."""
    seed = {
        "name": "SearchAgent",
        "description": "Handles search queries",
        "system_prompt": "You are a search assistant...",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
        "output_schema": {"type": "object", "properties": {"hits": {"type": "array"}}},
        "config_data": {
            "type": "agent",
            "capabilities": ["search", "filter"],
            "max_chain_depth": 3,
            "chain_strategy": "sequential",
            "temperature": 0.7,
            "top_p": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
        },
        "max_chain_depth": 3,
        "model": {"provider": "scripted", "name": "s", "script": [{"content": "ok"}]},
    }
    agent = AgentDefinition.model_validate(seed)
    assert (agent.id, agent.name, agent.instructions) == (
        "search-agent",
        "SearchAgent",
        "You are a search assistant...",
    )
    assert agent.capabilities == ["search", "filter"] and agent.max_chain_depth == 3
    assert agent.chain_strategy == "sequential"
    assert agent.generation.model_dump(exclude_none=True, exclude_defaults=True) == {
        "temperature": 0.7,
        "top_p": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }
    stored = agent.model_dump(mode="json")
    assert "config_data" not in stored and "chain_strategy" not in stored
    assert AgentDefinition.model_validate(stored) == agent
    for bad, message in (
        ({"config_data": {"chain_strategy": "parallel"}}, "sequential"),
        ({"config_data": {"type": "tool"}}, "config_data.type"),
        ({"config_data": {"max_chain_depth": 5}}, "differ"),
        ({"config_data": {"colour": "red"}}, "colour"),
        ({"instructions": "other"}, "system_prompt and instructions differ"),
    ):
        with pytest.raises(ValidationError, match=message):
            AgentDefinition.model_validate({**seed, **bad})


def test_a_dispatch_carries_a_call_its_claim_creates_when_it_is_small() -> None:
    from cloudagents.domain.runs import CARRIED_CALL_BYTES, ToolCallRecord

    def record(**fields: object) -> ToolCallRecord:
        call = ToolCall(id="c", name="calculator", arguments={"expression": "1+1"})
        base = {"run_id": "r", "seq": 2, "index": 1, "call": call, "idempotency_key": "r:2:1"}
        return ToolCallRecord.model_validate({**base, **fields})

    plain = record()
    assert plain.created_by_claim and ToolMessage.of(plain).call == plain
    for other in (record(approval="required"), record(child_run_id="child"), record(attempts=1)):
        assert not other.created_by_claim and ToolMessage.of(other).call is None
    big = record(
        call=ToolCall(id="c", name="calculator", arguments={"x": "y" * CARRIED_CALL_BYTES})
    )
    assert big.created_by_claim and ToolMessage.of(big).call is None
    assert (ToolMessage.of(big).run_id, ToolMessage.of(big).seq, ToolMessage.of(big).index) == (
        "r", 2, 1
    )  # fmt: skip
