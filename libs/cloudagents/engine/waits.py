"""The barrier: what resolving one pending item does to a waiting run. Pure; both run stores
(Firestore in a transaction, memory under a lock) apply what it returns.

A run that waits holds typed ``PendingItem``s (``tool_call`` today; ``child_run``, ``approval``,
``timer`` and ``graph_task`` next). Each item is resolved once: the first result is saved on the
item's own document before the run is touched, and a later result for it changes nothing. The
resolution that leaves nothing pending wakes the run: it publishes the run's next step, and the
run document keeps that message in its outbox until the step commits. A duplicate resolution
that finds the run still waiting at that step with nothing pending re-publishes the outbox (the
first resolution's publish may have been lost with its process). Adding a kind of wait adds a
``PendingKind``; it does not change this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cloudagents.domain.runs import (
    OutboxMessage,
    PendingItem,
    PendingKind,
    RunRecord,
    RunStatus,
)

WAITING_STATUSES = frozenset({RunStatus.WAITING_TOOLS, RunStatus.WAITING_APPROVAL})


def status_of(pending: list[PendingItem]) -> RunStatus:
    """A waiting run's status: ``waiting_approval`` while any approval is open."""
    if any(p.kind == "approval" for p in pending):
        return RunStatus.WAITING_APPROVAL
    return RunStatus.WAITING_TOOLS


@dataclass(frozen=True)
class Resolution:
    """What to write and publish after resolving one item of a run that waited at ``seq``."""

    newly_resolved: bool  # False: the item was resolved before; nothing is written
    pending: list[PendingItem]  # the run's pending items afterwards
    outbox: list[OutboxMessage]  # the run document's outbox afterwards
    wake: bool  # the run's next step is due (published by the caller)
    publish: list[OutboxMessage]  # what the caller publishes now


def waiting(run: RunRecord) -> bool:
    """The run waits for something (and nothing has moved it on)."""
    return run.status in WAITING_STATUSES and bool(run.pending)


def waits_at(run: RunRecord, seq: int) -> bool:
    """The run is still at the step after ``seq``, in a waiting status: what step ``seq``
    started has not been applied yet."""
    return run.seq == seq + 1 and run.status in WAITING_STATUSES


def resolve(
    run: RunRecord,
    kind: PendingKind,
    item_id: str,
    *,
    seq: int,
    already_resolved: bool,
    wake: OutboxMessage,
) -> Resolution:
    """Resolve item ``(kind, item_id)`` that step ``seq`` of ``run`` created.

    ``already_resolved``: the item's own document already holds a result. If the run no longer
    lists the item, this is a duplicate: nothing changes, and the run's outbox is published
    again if the run still waits at the step with nothing pending. Otherwise the item leaves
    ``pending`` (its saved result stands), and if it was the last one, ``wake`` — the message
    that applies the next step — becomes the run's outbox and is published.
    """
    listed = any(p.kind == kind and p.id == item_id for p in run.pending)
    if already_resolved and not listed:
        rewake = waits_at(run, seq) and not run.pending
        return Resolution(
            newly_resolved=False,
            pending=list(run.pending),
            outbox=list(run.outbox),
            wake=rewake,
            publish=list(run.outbox) if rewake else [],
        )
    pending = [p for p in run.pending if not (p.kind == kind and p.id == item_id)]
    wake_now = bool(run.pending) and not pending and run.seq == seq + 1
    return Resolution(
        newly_resolved=True,
        pending=pending,
        outbox=[wake] if wake_now else list(run.outbox),
        wake=wake_now,
        publish=[wake] if wake_now else [],
    )


def earliest_deadline(run: RunRecord) -> datetime | None:
    """The first moment a wake-up must look at the run: its timeout or an item's deadline."""
    moments = [p.deadline for p in run.pending if p.deadline is not None]
    if run.deadline_at is not None:
        moments.append(run.deadline_at)
    return min(moments, default=None)
