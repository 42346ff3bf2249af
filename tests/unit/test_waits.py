"""The barrier (``engine/waits.py``): one pure rule for "wake or keep waiting", for every kind of
pending item, applied by both run stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudagents.domain.runs import OutboxMessage, PendingItem, RunRecord, RunStatus, StepMessage
from cloudagents.engine import waits

T0 = datetime(2026, 12, 1, tzinfo=UTC)
WAKE = OutboxMessage.of("steps", StepMessage(run_id="r", seq=2))


def waiting_run(*items: tuple[str, str], seq: int = 2) -> RunRecord:
    return RunRecord(
        run_id="r",
        agent_id="a",
        status=RunStatus.WAITING_TOOLS,
        seq=seq,
        pending=[PendingItem(kind=k, id=i) for k, i in items],  # type: ignore[arg-type]
        outbox=[OutboxMessage.of("tools", StepMessage(run_id="r", seq=1))],
    )


def test_only_the_last_resolution_wakes_the_run() -> None:
    run = waiting_run(("tool_call", "000001-000"), ("tool_call", "000001-001"))
    first = waits.resolve(run, "tool_call", "000001-000", seq=1, already_resolved=False, wake=WAKE)
    assert first.newly_resolved and not first.wake and first.publish == []
    assert [p.id for p in first.pending] == ["000001-001"]
    assert first.outbox == run.outbox  # unchanged until the last one
    after = run.model_copy(update={"pending": first.pending})
    last = waits.resolve(after, "tool_call", "000001-001", seq=1, already_resolved=False, wake=WAKE)
    assert last.newly_resolved and last.wake
    assert last.pending == [] and last.outbox == [WAKE] and last.publish == [WAKE]


def test_a_duplicate_resolution_changes_nothing_but_re_publishes_a_lost_wake() -> None:
    woken = waiting_run().model_copy(update={"outbox": [WAKE]})  # nothing pending, still waiting
    again = waits.resolve(woken, "tool_call", "000001-000", seq=1, already_resolved=True, wake=WAKE)
    assert not again.newly_resolved
    assert again.wake and again.publish == [WAKE]  # its publish may have died with its process
    moved_on = woken.model_copy(update={"seq": 3, "status": RunStatus.RUNNING})
    late = waits.resolve(
        moved_on, "tool_call", "000001-000", seq=1, already_resolved=True, wake=WAKE
    )
    assert not late.newly_resolved and not late.wake and late.publish == []


def test_a_result_saved_first_still_resolves_its_item() -> None:
    """``save_tool_result`` wrote the result, the process died before the barrier: the next
    delivery finds the item resolved on its own document but still listed, and resolves it."""
    run = waiting_run(("tool_call", "000001-000"))
    resolution = waits.resolve(
        run, "tool_call", "000001-000", seq=1, already_resolved=True, wake=WAKE
    )
    assert resolution.newly_resolved and resolution.wake and resolution.pending == []


def test_items_of_any_kind_hold_the_run_until_each_is_resolved() -> None:
    run = waiting_run(("tool_call", "000001-000"), ("approval", "000001-000"))
    tool = waits.resolve(run, "tool_call", "000001-000", seq=1, already_resolved=False, wake=WAKE)
    assert not tool.wake and [p.kind for p in tool.pending] == ["approval"]
    run = run.model_copy(update={"pending": tool.pending})
    approval = waits.resolve(
        run, "approval", "000001-000", seq=1, already_resolved=False, wake=WAKE
    )
    assert approval.wake and approval.pending == []


def test_a_resolution_for_a_run_that_moved_on_does_not_wake_it() -> None:
    run = waiting_run(("tool_call", "000001-000"), seq=5)
    resolution = waits.resolve(
        run, "tool_call", "000001-000", seq=1, already_resolved=False, wake=WAKE
    )
    assert not resolution.wake and resolution.publish == []


def test_documents_from_before_typed_waits_read_as_tool_call_items() -> None:
    legacy = {
        "run_id": "r",
        "agent_id": "a",
        "status": "waiting_tools",
        "seq": 1,
        "pending_tool_calls": ["000000-000", "000000-001"],
    }
    run = RunRecord.model_validate(legacy)
    assert [(p.kind, p.id) for p in run.pending] == [
        ("tool_call", "000000-000"),
        ("tool_call", "000000-001"),
    ]
    assert run.pending_tool_calls == ["000000-000", "000000-001"]
    assert waits.waiting(run)
    assert "pending_tool_calls" not in run.model_dump()
    assert run.schema_version == 6 and RunRecord.model_validate(run.model_dump()) == run


def test_the_earliest_deadline_is_the_first_of_the_items_and_the_run_timeout() -> None:
    run = waiting_run(("tool_call", "000001-000")).model_copy(
        update={"deadline_at": T0 + timedelta(minutes=10)}
    )
    assert waits.earliest_deadline(run) == T0 + timedelta(minutes=10)
    soon = PendingItem(kind="timer", id="t", deadline=T0 + timedelta(minutes=1))
    run = run.model_copy(update={"pending": [*run.pending, soon]})
    assert waits.earliest_deadline(run) == T0 + timedelta(minutes=1)
    assert waits.earliest_deadline(waiting_run()) is None
