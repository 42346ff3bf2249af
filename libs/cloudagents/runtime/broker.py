"""The handoff broker: matches offers to capable agents, claims each offer once, starts the
target run from the source's context snapshot, and expires unclaimed offers at their TTL.

Correctness rests on the offer document, not on the expiry task (the Tasks emulator neither
de-duplicates nor deletes tasks) nor on Firestore TTL deletion (which can lag by a day): a
claimed offer ignores its expiry task; an expired offer cannot be claimed.
"""

from __future__ import annotations

import json
import logging

from cloudagents.context import restore
from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.errors import PermanentMessageError, TransientError
from cloudagents.domain.events import HandoffEvent, event_id
from cloudagents.domain.handoffs import HandoffOffer, OfferMessage
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.runs import OutboxMessage, RunStatus
from cloudagents.faults import crash_point
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.executor import start_run

log = logging.getLogger(__name__)
BUSY_STATUSES = (
    RunStatus.QUEUED,
    RunStatus.RUNNING,
    RunStatus.WAITING_TOOLS,
    RunStatus.WAITING_APPROVAL,
)


def capable(agent: AgentDefinition, offer: HandoffOffer) -> bool:
    return agent.id != offer.source_agent and set(offer.required_capabilities) <= set(
        agent.capabilities
    )


class HandoffBroker:
    """Applies ``{ws}-handoff`` messages and expiry tasks."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def handle_offer(self, offer_id: str) -> str:
        offer = await self.deps.handoffs.get_offer(offer_id)
        if offer is None:
            raise PermanentMessageError(f"unknown handoff offer {offer_id!r}")
        if offer.expiry_task is None and offer.status == "open":
            await self._schedule_expiry(offer)
        if offer.status == "expired":
            return "expired"
        if offer.status == "claimed":
            await self._start_target(offer)
            return "already-claimed"
        agent = await self._choose(offer)
        if agent is None:
            return "no-capable-agent"
        claim = await self.deps.handoffs.claim_offer(
            offer.offer_id,
            agent_id=agent.id,
            target_run_id=f"{offer.offer_id}-{agent.id}",
            now=self.deps.clock(),
        )
        if claim is None:
            raise PermanentMessageError(f"handoff offer {offer_id!r} vanished")
        if claim.offer.status != "claimed":
            return claim.offer.status
        crash_point("broker.after_claim")
        await self._start_target(claim.offer)
        return "claimed" if claim.claimed_now else "already-claimed"

    async def _choose(self, offer: HandoffOffer) -> AgentDefinition | None:
        """Least busy capable agent; ties go to the preferred agent, then to the lowest id."""
        candidates = [a for a in await self.deps.agents.list_agents() if capable(a, offer)]
        if not candidates:
            return None
        ranked = []
        for agent in candidates:
            busy = 0
            for status in BUSY_STATUSES:
                busy += len(await self.deps.runs.list_runs(agent_id=agent.id, status=status))
            ranked.append((busy, agent.id != offer.preferred_agent, agent.id, agent))
        return min(ranked, key=lambda r: r[:3])[3]

    async def _start_target(self, offer: HandoffOffer) -> None:
        """Create the target run (once: its id is fixed by the claim) and start it."""
        assert offer.target_run_id is not None and offer.claimed_by_agent is not None
        agent = await self.deps.agents.get_agent(offer.claimed_by_agent)
        if agent is None:
            raise PermanentMessageError(f"claiming agent {offer.claimed_by_agent!r} is gone")
        context = []
        if offer.context_uri:
            try:
                context = await restore(self.deps.blobs, offer.context_uri)
            except LookupError as exc:
                # The snapshotter has not written the source's final snapshot yet.
                raise TransientError(str(exc)) from exc
        message = offer.message or (
            f"You are taking over a task from agent {offer.source_agent}. Continue it."
        )
        created = await start_run(
            self.deps,
            run_id=offer.target_run_id,
            agent=agent,
            message=message,
            variables={},
            source="handoff",
            parent_run_id=offer.source_run_id,
            chain_depth=offer.chain_depth,
            prior_messages=context,
            prior_agent=offer.source_agent,
        )
        await self.deps.handoffs.update_source(
            offer.source_run_id, status="claimed", child_run_id=offer.target_run_id
        )
        if not created:
            # A redelivered offer: the intent was published already unless the delivery that
            # created the run died first (the run is then still queued at its first step).
            target = await self.deps.runs.get_run(offer.target_run_id)
            if target is None or target.seq > 0 or target.status is not RunStatus.QUEUED:
                return
        intent = IntentionMessage.for_run(
            run_id=offer.target_run_id,
            agent_id=agent.id,
            message=message,
            source_agent=offer.source_agent,
            parent_run_id=offer.source_run_id,
        )
        await self.deps.publish(
            [OutboxMessage(topic="intents", data=intent.model_dump(mode="json"))]
        )

    async def _schedule_expiry(self, offer: HandoffOffer) -> None:
        base = self.deps.settings.broker_url
        if not base:
            log.warning(
                "CLOUDAGENTS_BROKER_URL is not set: offer %s will not expire", offer.offer_id
            )
            return
        body = json.dumps({"offer_id": offer.offer_id}).encode()
        task = await self.deps.tasks.schedule(
            self.deps.topology.handoff_queue,
            base.rstrip("/") + self.deps.topology.queues[0].path,
            body,
            offer.expires_at,
            name=f"expire-{offer.offer_id}",
        )
        await self.deps.handoffs.mark_expiry_scheduled(offer.offer_id, task or "scheduled")

    async def handle_expiry(self, offer_id: str) -> str:
        """The Cloud Tasks callback at ``expires_at``."""
        offer = await self.deps.handoffs.expire_offer(offer_id, now=self.deps.clock())
        if offer is None:
            # Firestore TTL deletes offers some time after they expire; nothing is left to do.
            return "gone"
        if offer.status == "open":
            raise TransientError(f"offer {offer_id} expires at {offer.expires_at.isoformat()}")
        if offer.status == "claimed":
            return "claimed-ignored"
        source = await self.deps.runs.get_run(offer.source_run_id)
        if source is not None:
            event = HandoffEvent(
                run_id=source.run_id,
                seq=source.seq,
                id=event_id(source.seq, "d", 0),
                offer_id=offer.offer_id,
                required_capabilities=offer.required_capabilities,
                status="expired",
            )
            await self.deps.runs.add_events(source.run_id, [event])
            await self.deps.handoffs.update_source(source.run_id, status="expired")
        return "expired"

    async def offer_open_offers_to(self, agent: AgentDefinition) -> int:
        """After an agent registers, re-offer the open offers it can take."""
        offers = [o for o in await self.deps.handoffs.list_open_offers() if capable(agent, o)]
        messages = [OutboxMessage.of("handoff", OfferMessage(offer_id=o.offer_id)) for o in offers]
        await self.deps.publish(messages)
        return len(messages)
