"""``IntentionMessage``: what is published to the workspace topic to start work (seed 000)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, JsonValue

from cloudagents.domain.agents import AGENT_ID_PATTERN
from cloudagents.domain.base import Model, Persisted
from cloudagents.domain.runs import GraphTaskLink, ParentCall


class StartRun(Model):
    """The payload of an intent that starts a run: which agent, and the user's message."""

    agent_id: str = Field(min_length=1, max_length=128, pattern=AGENT_ID_PATTERN)
    message: str = Field(max_length=200_000)
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    parent_run_id: str | None = None
    parent_call: ParentCall | None = Field(
        default=None, description="set when another agent's tool call started this run"
    )
    conversation_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        description="continue this conversation (one run at a time)",
    )
    graph_task: GraphTaskLink | None = Field(
        default=None, description="set when a graph workflow's agent node started this run"
    )


class StartWorkflow(Model):
    """An intent's payload that starts a graph workflow run: ``{"workflow": {...}}``."""

    graph: str = Field(
        min_length=1, max_length=128, description="a registered graph's hash, or its name"
    )
    initial_state: dict[str, JsonValue] = Field(default_factory=dict)
    workflow_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        description="the run's id (default: the intent's run_id); a redelivery starts none",
    )
    max_steps: int = Field(default=50, ge=1, le=10_000)
    priority: Literal["high", "normal", "low"] = "normal"


class IntentionMessage(Persisted):
    """An intent on ``{workspace}``; its JSON Schema is in ``schemas/intention_message.json``."""

    run_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    source_agent: str = Field(min_length=1, max_length=128)
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    attention_weight: float = Field(default=1.0, ge=0.0, le=1.0)
    payload: dict[str, JsonValue]

    @property
    def starts_workflow(self) -> bool:
        """The payload names a graph (``{"workflow": {...}}``), not an agent."""
        return "workflow" in self.payload

    def start_workflow(self) -> StartWorkflow:
        """The payload read as a workflow start (``ValidationError`` when it is not one)."""
        return StartWorkflow.model_validate(self.payload.get("workflow"))

    @classmethod
    def for_workflow(
        cls, *, run_id: str, graph: str, source_agent: str = "user", **extra: Any
    ) -> IntentionMessage:
        workflow = StartWorkflow(graph=graph, **extra).model_dump(mode="json", exclude_none=True)
        return cls(run_id=run_id, source_agent=source_agent, payload={"workflow": workflow})

    def start_run(self) -> StartRun:
        """The payload read as a run start (raises ``ValidationError`` when it is not one)."""
        return StartRun.model_validate(self.payload)

    @classmethod
    def for_run(
        cls, *, run_id: str, agent_id: str, message: str, source_agent: str = "user", **extra: Any
    ) -> IntentionMessage:
        payload = StartRun(agent_id=agent_id, message=message, **extra).model_dump(mode="json")
        return cls(run_id=run_id, source_agent=source_agent, payload=payload)


def intent_json_schema() -> dict[str, Any]:
    """JSON Schema of an intent that starts a run or a workflow run
    (``schemas/intention_message.json``)."""
    schema = IntentionMessage.model_json_schema()
    start = StartRun.model_json_schema()
    workflow = StartWorkflow.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "IntentionMessage"
    schema["description"] = (
        "Published to the workspace topic to start a run. The payload names the agent and the "
        'user\'s message, or (under "workflow") a registered graph and its initial state. The '
        "run_id makes the intent idempotent: publishing it twice starts one run."
    )
    # The payloads' definitions join the document's, where their ``#/$defs/...`` refs point.
    schema.setdefault("$defs", {}).update(start.pop("$defs", {}))
    schema["$defs"].update(workflow.pop("$defs", {}))
    schema["$defs"]["StartWorkflow"] = workflow
    schema["properties"]["payload"] = {
        "oneOf": [
            {**start, "title": "StartRun"},
            {
                "title": "StartWorkflowPayload",
                "type": "object",
                "properties": {"workflow": {"$ref": "#/$defs/StartWorkflow"}},
                "required": ["workflow"],
                "additionalProperties": False,
            },
        ]
    }
    schema["required"] = ["run_id", "source_agent", "payload"]
    return schema
