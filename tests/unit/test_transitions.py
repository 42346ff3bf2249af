"""Seed 004's transition definitions and their pure rules (``engine/transitions.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cloudagents.domain.results import LoopExit, LoopResult
from cloudagents.domain.transitions import (
    AgentRetryConfig,
    PlaceAgentConfig,
    Rule,
    Token,
    TransitionDefinition,
    WorkflowDefinition,
    parse_condition,
)
from cloudagents.engine.transitions import (
    MappingError,
    Move,
    Retry,
    Stay,
    apply_output,
    complete,
    error_kind,
    execution_id,
    failed_rule,
    map_input,
    place_agent_digest,
    redefined_place_agents,
    token_variables,
)


def token(**overrides: Any) -> Token:
    data: dict[str, Any] = {
        "token_id": "doc-1",
        "workflow_id": "document-review",
        "place": "submitted",
        "data": {"content": "text", "score": 7},
        "metadata": {"type": "report", "status": "unclassified", "tags": ["a"]},
    }
    data.update(overrides)
    return Token.model_validate(data)


def test_seed_rule_forms_and_conditions() -> None:
    assert Rule.model_validate({"field_exists": ["data", "content"]}).path == "data.content"
    equals = Rule.model_validate({"field_equals": ["metadata.status", "unclassified"]})
    assert (equals.kind, equals.value) == ("field_equals", "unclassified")
    assert parse_condition('field_equals(metadata.status, "x")').value == "x"
    assert parse_condition("field_greater_than(data.score, 5)").value == 5
    with pytest.raises(ValidationError, match="not a token path"):
        Rule.model_validate({"field_exists": "content"})
    with pytest.raises(ValidationError, match="unknown rule"):
        Rule.model_validate({"field_is_nice": "data.x"})
    with pytest.raises(ValidationError, match="field_equals needs a value"):
        Rule.model_validate({"kind": "field_equals", "path": "data.x"})
    with pytest.raises(ValidationError, match="is not 'rule"):
        TransitionDefinition.model_validate(
            {"id": "t", "from_places": ["a"], "to_place": "b", "conditions": ["content is set"]}
        )


def test_rules_on_a_token() -> None:
    t = token()
    rules = [
        Rule.model_validate(r)
        for r in (
            {"field_exists": "data.content"},
            {"field_missing": "data.nothing"},
            {"field_equals": ["metadata.status", "unclassified"]},
            {"field_not_equals": ["metadata.type", "memo"]},
            {"field_in": ["metadata.type", ["report", "memo"]]},
            {"field_contains": ["metadata.tags", "a"]},
            {"field_greater_than": ["data.score", 5]},
            {"field_less_than": ["data.score", 8]},
        )
    ]
    assert failed_rule(rules, t) is None
    blocked = Rule.model_validate({"field_equals": ["metadata.status", "classified"]})
    assert failed_rule([*rules, blocked], t) == "field_equals(metadata.status, 'classified')"


def test_workflow_references_are_checked_with_the_field() -> None:
    base: dict[str, Any] = {"id": "wf", "places": ["a", "b"]}
    with pytest.raises(ValidationError, match=r"transitions\[0\] \(t\): place 'c'"):
        WorkflowDefinition.model_validate(
            {**base, "transitions": [{"id": "t", "from_places": ["a"], "to_place": "c"}]}
        )
    with pytest.raises(ValidationError, match="auto_transition 'move'"):
        WorkflowDefinition.model_validate(
            {
                **base,
                "place_agents": [{"place_id": "a", "agent_id": "x", "auto_transition": "move"}],
            }
        )
    with pytest.raises(ValidationError) as bad:
        WorkflowDefinition.model_validate(
            {
                **base,
                "transitions": [
                    {
                        "id": "t",
                        "from_places": ["a"],
                        "to_place": "b",
                        "agent_execution": {"agent_id": "x", "input_mapping": {"k": "content"}},
                    }
                ],
            }
        )
    assert bad.value.errors()[0]["loc"] == ("transitions", 0, "agent_execution")
    assert "'content' is not a token path" in bad.value.errors()[0]["msg"]
    place = PlaceAgentConfig.model_validate(
        {
            "place_id": "a",
            "agent_id": "content-classifier",
            "llm_config": {
                "temperature": 0.1,
                "max_tokens": 200,
                "top_p": 0.9,
                "stop_sequences": ["CLASSIFICATION COMPLETE"],
            },
            "trigger_conditions": [{"field_exists": ["data", "content"]}],
            "schedule": {"initial_delay_seconds": 5, "max_executions": 1},
        }
    )
    assert place.llm_config is not None and place.llm_config.temperature == 0.1


def test_mappings_and_variables() -> None:
    t = token()
    mapped = map_input({"document_content": "data.content", "kind": "metadata.type"}, t)
    assert mapped == {"document_content": "text", "kind": "report"}
    with pytest.raises(MappingError, match=r"token has no metadata\.priority"):
        map_input({"priority": "metadata.priority"}, t)
    data, metadata = apply_output(
        t,
        {"data.review.result": "assessment", "metadata.reviewer": "agent_id"},
        {"assessment": "APPROVE"},
        {"agent_id": "content-reviewer"},
    )
    assert data["review"] == {"result": "APPROVE"} and data["content"] == "text"
    assert metadata["reviewer"] == "content-reviewer"
    assert t.data == {"content": "text", "score": 7}  # the token itself is unchanged
    with pytest.raises(MappingError, match="has no 'confidence_score'"):
        apply_output(t, {"data.s": "confidence_score"}, {"assessment": "x"}, {})
    variables = token_variables(t.model_copy(update={"history_count": 2}), mapped)
    assert variables["document_content"] == "text"
    assert variables["input_data"] == '{"document_content": "text", "kind": "report"}'
    assert variables["token_metadata"].startswith('{"status": "unclassified"')
    assert (variables["current_place"], variables["history_count"]) == ("submitted", 2)


def result(exit: LoopExit, reason: str = "", **payload: Any) -> LoopResult:
    return LoopResult(
        exit=exit,
        payload=payload or {"reason": reason},
        iterations=1,
        total_tokens=1,
        tool_calls=0,
    )


def test_completion_decisions() -> None:
    t = token()
    retry = AgentRetryConfig(max_attempts=2, backoff_seconds=3, retry_on_errors=["timeout"])
    common: dict[str, Any] = {"output_mapping": {"data.r": "assessment"}, "builtins": {}}
    ok, error, _ = complete(
        t,
        required=True,
        retry=retry,
        attempt=1,
        result=result(LoopExit.SATISFIED, assessment="APPROVE"),
        **common,
    )
    assert isinstance(ok, Move) and ok.data["r"] == "APPROVE" and error is None
    timed_out = result(LoopExit.ERROR, "timed out after 5 s at step 0")
    assert error_kind(timed_out) == "timeout"
    again, _, kind = complete(t, required=True, retry=retry, attempt=1, result=timed_out, **common)
    assert again == Retry(2, 3) and kind == "timeout"
    last, _, _ = complete(t, required=True, retry=retry, attempt=2, result=timed_out, **common)
    assert isinstance(last, Stay) and "timed out" in last.reason
    auth = result(LoopExit.ERROR, "model call failed: auth: bad key")
    assert error_kind(auth) == "auth"
    optional, _, _ = complete(t, required=False, retry=retry, attempt=1, result=auth, **common)
    assert isinstance(optional, Move) and optional.agent_failed is not None
    unmappable, error, kind = complete(
        t,
        required=True,
        retry=None,
        attempt=1,
        result=result(LoopExit.SATISFIED, other="x"),
        **common,
    )
    assert isinstance(unmappable, Stay) and kind == "output_mapping"
    assert error_kind(result(LoopExit.MAX_ITERS, "x")) == "max_iters"


def test_execution_ids_are_derived_and_short() -> None:
    first = execution_id("doc-1", "ai_review", 3, 1)
    assert first == execution_id("doc-1", "ai_review", 3, 1)
    assert first != execution_id("doc-1", "ai_review", 4, 1)
    assert first.endswith("-a1") and len(execution_id("x" * 64, "y" * 64, 10**9, 10)) <= 128


def test_a_new_definition_names_the_place_agents_it_schedules_for_tokens_in_place() -> None:
    def defined(*agents: PlaceAgentConfig) -> WorkflowDefinition:
        return WorkflowDefinition(id="w", places=["a", "b"], place_agents=list(agents))

    one = PlaceAgentConfig(place_id="a", agent_id="x")
    conditioned = one.model_copy(
        update={"trigger_conditions": [Rule(kind="field_exists", path="data.k")]}
    )
    mapped = one.model_copy(update={"input_mapping": {"k": "data.k"}})
    assert redefined_place_agents(None, defined(one)) == []  # no token in its places yet
    assert redefined_place_agents(defined(), defined(one)) == [0]  # new
    assert redefined_place_agents(defined(one), defined(one, one)) == [1]
    assert redefined_place_agents(defined(one), defined(conditioned)) == [0]  # conditions
    assert redefined_place_agents(
        defined(one), defined(one.model_copy(update={"place_id": "b"}))
    ) == [0]
    assert redefined_place_agents(defined(one), defined(mapped)) == []  # the mapping only
    assert redefined_place_agents(defined(one), defined()) == []
    # The same definition again (a retried registration): all of them, counted when they run.
    assert redefined_place_agents(defined(one, mapped), defined(one, mapped)) == [0, 1]
    assert place_agent_digest(one) == place_agent_digest(one.model_copy())
    assert place_agent_digest(one) != place_agent_digest(conditioned)
