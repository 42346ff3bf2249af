"""The committed JSON Schema of intents matches the model, and validates real intents."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from cloudagents.domain.intents import IntentionMessage, intent_json_schema

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "intention_message.json"


def test_committed_schema_is_current() -> None:
    committed = json.loads(SCHEMA.read_text())
    assert committed == intent_json_schema(), (
        "schemas/intention_message.json is stale: regenerate with "
        "`python -c 'import json; from cloudagents.domain.intents import intent_json_schema as s;"
        " print(json.dumps(s(), indent=2))' > schemas/intention_message.json`"
    )


def test_schema_accepts_a_real_intent_and_rejects_bad_ones() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    good = json.loads(
        IntentionMessage.for_run(
            run_id="r-1", agent_id="arithmetic", message="2+2"
        ).model_dump_json()
    )
    assert not list(validator.iter_errors(good))
    assert list(validator.iter_errors({**good, "attention_weight": 1.5}))
    assert list(validator.iter_errors({**good, "payload": {"message": "no agent"}}))
    workflow = json.loads(
        IntentionMessage.for_workflow(
            run_id="wf-1", graph="research_workflow", initial_state={"q": 1}, priority="high"
        ).model_dump_json()
    )
    assert not list(validator.iter_errors(workflow))
    bad = {**workflow, "payload": {"workflow": {"graph": "g", "priority": "urgent"}}}
    assert list(validator.iter_errors(bad))
    assert list(validator.iter_errors({**workflow, "payload": {"workflow": {}}}))
