"""Seed 004's prompt templates: the built-in variables, ``context_instructions``, and a missing
variable as the run's ``ERROR`` (never an exception out of ``Agent.run``)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudagents import Agent, AgentDefinition, LoopExit
from cloudagents.domain.templates import TOKEN_VARIABLES, TemplateError, render, template_fields


def definition(**overrides: Any) -> AgentDefinition:
    data: dict[str, Any] = {
        "id": "reviewer",
        "instructions": "You review documents.",
        "model": {"provider": "scripted", "name": "s", "script": [{"content": "ok"}]},
    }
    data.update(overrides)
    return AgentDefinition.model_validate(data)


def test_fields_and_render() -> None:
    assert template_fields("{a} {b} {a} {{literal}}") == ["a", "b"]
    assert render("{a}-{b}", {"a": 1, "b": "x"}, which="t") == "1-x"
    with pytest.raises(TemplateError) as missing:
        render("{a} {token_id}", {"a": 1}, which="user_template")
    assert missing.value.missing == ["token_id"]
    assert "token_id: filled only on runs of a workflow token" in str(missing.value)
    with pytest.raises(TemplateError, match=r"a\.b"):
        render("{a.b}", {"a": 1}, which="t")


def test_seed_004_prompts_block_and_input_data_outside_a_workflow() -> None:
    agent = AgentDefinition.model_validate(
        {
            "id": "reviewer",
            "model": {"provider": "scripted", "name": "s", "script": [{"content": "ok"}]},
            "prompts": {
                "system": "You are a content review specialist.",
                "user_template": "Content: {input_data} / {input}",
                "context_instructions": "Token {token_id} is in {current_place}.",
            },
        }
    )
    assert agent.instructions == "You are a content review specialist."
    assert agent.render_user_message("hello", {}) == "Content: hello / hello"
    variables = {"token_id": "t1", "current_place": "submitted"}
    assert agent.render_instructions("m", variables) == (
        "You are a content review specialist.\n\nToken t1 is in submitted."
    )
    with pytest.raises(TemplateError, match="context_instructions"):
        agent.render_instructions("m", {})
    with pytest.raises(ValueError, match=r"prompts\.system and instructions differ"):
        AgentDefinition.model_validate(
            {
                "id": "x",
                "model": {"provider": "openai", "name": "m"},
                "instructions": "a",
                "prompts": {"system": "b"},
            }
        )
    with pytest.raises(ValueError, match="context_instructions does not parse"):
        definition(context_instructions="{unclosed")


def test_a_definition_without_context_instructions_is_stored_as_before() -> None:
    assert "context_instructions" not in definition().model_dump()
    assert definition(context_instructions="x").model_dump()["context_instructions"] == "x"


async def test_every_builtin_variable_renders_from_the_run_context() -> None:
    seen: list[list[dict[str, Any]]] = []

    async def llm_client(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request["messages"])
        return {"content": "ok"}

    template = " ".join(f"{name}={{{name}}}" for name in TOKEN_VARIABLES)
    agent = definition(user_template=template, context_instructions="Place: {current_place}")
    context: dict[str, Any] = {
        "llm_client": llm_client,
        "input_data": '{"document_content": "x"}',
        "token_id": "tok-1",
        "current_place": "submitted",
        "token_metadata": '{"type": "memo"}',
        "workflow_id": "document-review",
        "history_count": 2,
    }
    result = await Agent(agent).run("review", context=context)
    assert result.exit is LoopExit.SATISFIED
    system, user = seen[0][0]["content"], seen[0][1]["content"]
    assert system == "You review documents.\n\nPlace: submitted"
    assert user == (
        'input_data={"document_content": "x"} token_id=tok-1 current_place=submitted '
        'token_metadata={"type": "memo"} workflow_id=document-review history_count=2'
    )


async def test_a_missing_variable_is_the_run_error_not_an_exception() -> None:
    agent = Agent(definition(user_template="[{priority}] {token_id}: {input}"))
    result = await agent.run("fix it", run_id="missing-var")
    assert result.exit is LoopExit.ERROR
    assert result.iterations == 0 and result.total_tokens == 0
    reason = str(result.payload["reason"])
    assert "user_template needs variables ['priority', 'token_id']" in reason
    assert "filled only on runs of a workflow token" in reason
    run = await agent.driver.deps.runs.get_run("missing-var")
    assert run is not None and run.finished and run.opening_error is not None
    # The transcript is the message as given: nothing was sent to a model.
    messages = await agent.driver.deps.runs.messages("missing-var")
    assert [m.content for m in messages] == ["You review documents.", "fix it"]
