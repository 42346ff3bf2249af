"""Scripted agents the suite runs, and the checks that compare a run with its reference run."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.faults.harness import FaultStack, normalise

INTERRUPTED = "was interrupted and is not retried because it is not idempotent"


def scripted(agent_id: str, turns: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": agent_id,
        "instructions": f"You are {agent_id}, a scripted agent of the fault-injection suite.",
        "model": {"provider": "scripted", "name": f"scripted-{agent_id}", "script": turns},
        "tools": [],
        "retry": {"max_attempts": 3, "backoff_seconds": 0.05},
    }
    data.update(overrides)
    return data


def order_agent(
    agent_id: str, capability: str, *, pay_tool: str = "charge_card", check: bool = False
) -> dict[str, Any]:
    """A payment (by default with the non-idempotent tool), then a handoff; with ``check`` an
    idempotent calculator call runs beside the payment."""
    pay_args: dict[str, Any] = (
        {"customer": "c-1", "amount_cents": 1999}
        if pay_tool == "charge_card"
        else {"expression": "1999 / 100"}
    )
    return scripted(
        agent_id,
        [
            {
                "tool_calls": [
                    *(
                        [{"name": "calculator", "arguments": {"expression": "19 * 23"}}]
                        if check
                        else []
                    ),
                    {"name": pay_tool, "arguments": pay_args},
                ],
                "total_tokens": 40,
            },
            {
                "content": "Paid. Handing the fulfilment over.",
                "total_tokens": 25,
                "handoff_target": {
                    "required_capabilities": [capability],
                    "ttl_seconds": 3600,
                    "message": "Ship the order that was just paid.",
                },
            },
        ],
        tools=["calculator", pay_tool],
    )


def fulfil_agent(
    agent_id: str, capability: str, *, fee_tool: str = "charge_card"
) -> dict[str, Any]:
    fee_args: dict[str, Any] = (
        {"customer": "c-1-shipping", "amount_cents": 499}
        if fee_tool == "charge_card"
        else {"text": "ship order c-1 by courier"}
    )
    return scripted(
        agent_id,
        [
            {"tool_calls": [{"name": fee_tool, "arguments": fee_args}], "total_tokens": 30},
            {"content": "Shipped; the fee is paid.", "total_tokens": 15},
        ],
        tools=[fee_tool],
        capabilities=[capability],
    )


@dataclass
class RunSnapshot:
    """What one run left in Firestore, normalised so two runs of the same agent compare."""

    run_id: str
    doc: dict[str, Any]
    transcript: list[dict[str, Any]]
    model_calls: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]
    interactions: list[dict[str, Any]]

    @classmethod
    def read(cls, stack: FaultStack, run_id: str, doc: dict[str, Any]) -> RunSnapshot:
        return cls(
            run_id=run_id,
            doc=doc,
            transcript=stack.transcript(run_id),
            model_calls=stack.model_calls(run_id),
            tool_calls=stack.sub(run_id, "tool_calls"),
            interactions=stack.interactions(run_id),
        )

    def result(self, root: str) -> dict[str, Any]:
        result = dict(self.doc["result"])
        payload = dict(result.get("payload") or {})
        payload.pop("expires_at", None)
        result["payload"] = payload
        result.pop("cost_usd", None)
        return dict(normalise(result, root))

    def messages(self, root: str) -> list[dict[str, Any]]:
        """The transcript with this run's id replaced; a tool message's JSON content is parsed,
        because a dict result read back from Firestore is rendered in the key order of the
        process that read it (see docs/reliability.md, known issues)."""
        out = []
        for message in normalise(self.transcript, root):
            if message.get("role") == "tool" and isinstance(message.get("content"), str):
                with contextlib.suppress(ValueError):
                    message = {**message, "content": json.loads(message["content"])}
            out.append(message)
        return out


@dataclass
class Tally:
    """Counts over many runs compared with their reference."""

    runs: int = 0
    finished: int = 0
    lost: list[str] = field(default_factory=list)
    steps_applied_twice: list[str] = field(default_factory=list)
    transcript_mismatch: list[str] = field(default_factory=list)
    interrupted_non_idempotent: list[str] = field(default_factory=list)
    model_calls_made: int = 0
    model_calls_applied: int = 0
    usage_mismatch: list[str] = field(default_factory=list)
    tool_attempts: Counter[int] = field(default_factory=Counter)
    first_difference: str = ""

    def check(self, run: RunSnapshot, reference: RunSnapshot, root: str, ref_root: str) -> None:
        self.runs += 1
        if run.doc.get("status") != "finished":
            self.lost.append(run.run_id)
            return
        self.finished += 1
        applied = [c for c in run.model_calls if c.get("applied")]
        self.model_calls_made += len(run.model_calls)
        self.model_calls_applied += len(applied)
        result = run.doc["result"]
        applied_tokens = sum(c["usage"]["total_tokens"] for c in applied)
        if applied_tokens != result["total_tokens"] or len(applied) != result["iterations"]:
            self.usage_mismatch.append(run.run_id)
        # A step applied twice moves seq, the transcript, the interactions or the applied model
        # calls past the reference.
        seqs = Counter(i["seq"] for i in run.interactions)
        if (
            run.doc["seq"] != reference.doc["seq"]
            or len(run.transcript) != len(reference.transcript)
            or len(run.interactions) != len(reference.interactions)
            or any(n > 1 for n in seqs.values())
            or len(applied) != len([c for c in reference.model_calls if c.get("applied")])
        ):
            self.steps_applied_twice.append(run.run_id)
        for call in run.tool_calls:
            self.tool_attempts[int(call.get("attempts", 0))] += 1
        mine, theirs = run.messages(root), reference.messages(ref_root)
        if run.result(root) != reference.result(ref_root) or mine != theirs:
            if any(INTERRUPTED in str(m.get("content")) for m in run.transcript):
                self.interrupted_non_idempotent.append(run.run_id)
            else:
                self.transcript_mismatch.append(run.run_id)
                if not self.first_difference:
                    self.first_difference = describe_difference(
                        run.result(root), reference.result(ref_root), mine, theirs
                    )


def describe_difference(
    result: dict[str, Any], ref_result: dict[str, Any], mine: list[Any], theirs: list[Any]
) -> str:
    if result != ref_result:
        return f"result {result} != reference {ref_result}"
    for i, (a, b) in enumerate(zip(mine, theirs, strict=False)):
        if a != b:
            return f"message {i}: {str(a)[:300]} != reference {str(b)[:300]}"
    return f"{len(mine)} messages != reference {len(theirs)}"
