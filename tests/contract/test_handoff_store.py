"""``HandoffStore``: offers are claimed at most once and expire only while open."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

import pytest

from cloudagents.domain.handoffs import HandoffOffer
from cloudagents.ports.stores import Claim, HandoffStore, RunStore
from tests.contract.conftest import make_run, new_id, race, run_with_offer, user

pytestmark = pytest.mark.contract


async def test_an_offer_committed_with_a_step_is_open(
    run_store: RunStore, handoff_store: HandoffStore
) -> None:
    run, offer = await run_with_offer(run_store)
    assert run.handoff_offer_id == offer.offer_id
    assert run.handoff_status == "open"
    assert await handoff_store.get_offer(offer.offer_id) == offer
    open_ids = [o.offer_id for o in await handoff_store.list_open_offers(limit=1000)]
    assert offer.offer_id in open_ids
    assert await handoff_store.get_offer(new_id("missing")) is None


async def test_claim_offer_once(run_store: RunStore, handoff_store: HandoffStore) -> None:
    _, offer = await run_with_offer(run_store)
    now = offer.created_at + timedelta(seconds=1)

    claim = await handoff_store.claim_offer(
        offer.offer_id, agent_id="first", target_run_id="run-first", now=now
    )
    assert claim is not None
    assert claim.claimed_now is True
    assert claim.offer.status == "claimed"
    assert claim.offer.claimed_by_agent == "first"
    assert claim.offer.target_run_id == "run-first"
    assert claim.offer.claimed_at == now
    assert await handoff_store.get_offer(offer.offer_id) == claim.offer

    again = await handoff_store.claim_offer(
        offer.offer_id, agent_id="second", target_run_id="run-second", now=now
    )
    assert again is not None
    assert again.claimed_now is False
    assert again.offer == claim.offer
    open_ids = [o.offer_id for o in await handoff_store.list_open_offers(limit=1000)]
    assert offer.offer_id not in open_ids
    missing = await handoff_store.claim_offer(
        new_id("missing"), agent_id="a", target_run_id="r", now=now
    )
    assert missing is None


async def test_concurrent_claims_have_exactly_one_winner(
    run_store: RunStore, handoff_store: HandoffStore
) -> None:
    _, offer = await run_with_offer(run_store)
    now = offer.created_at + timedelta(seconds=1)
    claims = await race(
        [
            partial(
                handoff_store.claim_offer,
                offer.offer_id,
                agent_id=f"agent-{i}",
                target_run_id=f"run-{i}",
                now=now,
            )
            for i in range(10)
        ]
    )
    assert all(c is not None for c in claims)
    winners = [c for c in claims if c is not None and c.claimed_now]
    assert len(winners) == 1
    winner = winners[0].offer
    assert {(c.offer.claimed_by_agent, c.offer.target_run_id) for c in claims if c} == {
        (winner.claimed_by_agent, winner.target_run_id)
    }
    assert await handoff_store.get_offer(offer.offer_id) == winner


async def test_an_expired_offer_cannot_be_claimed(
    run_store: RunStore, handoff_store: HandoffStore
) -> None:
    _, offer = await run_with_offer(run_store, expires_in=timedelta(seconds=30))

    # At expires_at the offer can no longer be claimed, even before the expiry task ran.
    late = await handoff_store.claim_offer(
        offer.offer_id, agent_id="late", target_run_id="run-late", now=offer.expires_at
    )
    assert late is not None
    assert late.claimed_now is False
    assert late.offer.claimed_by_agent is None

    after = offer.expires_at + timedelta(seconds=1)
    expired = await handoff_store.expire_offer(offer.offer_id, now=after)
    assert expired is not None
    assert expired.status == "expired"
    assert expired.expired_at == after
    assert await handoff_store.get_offer(offer.offer_id) == expired

    # Expired is final: neither a claim (even with a clock that is behind) nor a second expiry
    # changes it.
    claim = await handoff_store.claim_offer(
        offer.offer_id, agent_id="a", target_run_id="r", now=offer.created_at
    )
    assert claim is not None and claim.claimed_now is False
    assert claim.offer.status == "expired"
    again = await handoff_store.expire_offer(offer.offer_id, now=after + timedelta(minutes=1))
    assert again == expired
    open_ids = [o.offer_id for o in await handoff_store.list_open_offers(limit=1000)]
    assert offer.offer_id not in open_ids


async def test_expire_before_expires_at_leaves_the_offer_open(
    run_store: RunStore, handoff_store: HandoffStore
) -> None:
    _, offer = await run_with_offer(run_store)
    early = await handoff_store.expire_offer(
        offer.offer_id, now=offer.expires_at - timedelta(seconds=1)
    )
    assert early is not None
    assert early.status == "open"
    assert early.expired_at is None
    assert await handoff_store.get_offer(offer.offer_id) == offer
    claim = await handoff_store.claim_offer(
        offer.offer_id, agent_id="a", target_run_id="r", now=offer.created_at
    )
    assert claim is not None and claim.claimed_now is True
    assert await handoff_store.expire_offer(new_id("missing"), now=offer.expires_at) is None


async def test_a_claimed_offer_does_not_expire(
    run_store: RunStore, handoff_store: HandoffStore
) -> None:
    _, offer = await run_with_offer(run_store)
    claim = await handoff_store.claim_offer(
        offer.offer_id, agent_id="a", target_run_id="r", now=offer.created_at
    )
    assert claim is not None and claim.claimed_now
    after = await handoff_store.expire_offer(
        offer.offer_id, now=offer.expires_at + timedelta(hours=1)
    )
    assert after == claim.offer
    assert await handoff_store.get_offer(offer.offer_id) == claim.offer


async def test_claim_racing_expiry_has_one_outcome(
    run_store: RunStore, handoff_store: HandoffStore
) -> None:
    _, offer = await run_with_offer(run_store)
    claim_call = partial(
        handoff_store.claim_offer,
        offer.offer_id,
        agent_id="a",
        target_run_id="r",
        now=offer.expires_at - timedelta(milliseconds=1),
    )
    expire_call = partial(handoff_store.expire_offer, offer.offer_id, now=offer.expires_at)
    calls: list[Callable[[], Awaitable[object]]] = [claim_call, expire_call]
    claim, expired = await race(calls)
    assert isinstance(claim, Claim) and isinstance(expired, HandoffOffer)
    final = await handoff_store.get_offer(offer.offer_id)
    assert final is not None
    if claim.claimed_now:
        assert final.status == "claimed" and expired.status == "claimed"
    else:
        assert final.status == "expired" and claim.offer.status == "expired"


async def test_mark_expiry_scheduled(run_store: RunStore, handoff_store: HandoffStore) -> None:
    _, offer = await run_with_offer(run_store)
    await handoff_store.mark_expiry_scheduled(offer.offer_id, "projects/p/queues/q/tasks/t1")
    stored = await handoff_store.get_offer(offer.offer_id)
    assert stored is not None
    assert stored.expiry_task == "projects/p/queues/q/tasks/t1"
    assert stored.status == "open"


async def test_update_source_records_status_and_child_idempotently(
    run_store: RunStore, handoff_store: HandoffStore
) -> None:
    run, _ = await run_with_offer(run_store)
    child = new_id("child")
    for _ in range(2):  # a redelivered claim records the same child once
        await handoff_store.update_source(run.run_id, status="claimed", child_run_id=child)
    stored = await run_store.get_run(run.run_id)
    assert stored is not None
    assert stored.handoff_status == "claimed"
    assert stored.child_run_ids == [child]
    # Everything else on the run is left alone.
    assert stored.seq == run.seq
    assert stored.result == run.result

    second = new_id("child")
    await handoff_store.update_source(run.run_id, status="claimed", child_run_id=second)
    await handoff_store.update_source(run.run_id, status="expired")
    stored = await run_store.get_run(run.run_id)
    assert stored is not None
    assert stored.handoff_status == "expired"
    assert stored.child_run_ids == [child, second]


async def test_update_source_of_a_run_without_an_offer(
    run_store: RunStore, handoff_store: HandoffStore
) -> None:
    run = make_run()
    assert await run_store.create_run(run, [user("q")])
    await handoff_store.update_source(run.run_id, status="claimed", child_run_id="c1")
    stored = await run_store.get_run(run.run_id)
    assert stored is not None
    assert (stored.handoff_status, stored.child_run_ids) == ("claimed", ["c1"])


UNKNOWN_IS_NOT_FOUND = (
    "FirestoreHandoffStore.update_source and .mark_expiry_scheduled use document.update(), "
    "which raises NotFound for a missing document; InMemoryHandoffStore ignores unknown ids"
)


async def test_update_source_of_an_unknown_run_is_a_no_op(
    run_store: RunStore,
    handoff_store: HandoffStore,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    missing = new_id("missing")
    await handoff_store.update_source(missing, status="expired")
    assert await run_store.get_run(missing) is None


async def test_mark_expiry_scheduled_of_an_unknown_offer_is_a_no_op(
    run_store: RunStore,
    handoff_store: HandoffStore,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    missing = new_id("missing")
    await handoff_store.mark_expiry_scheduled(missing, "task")
    assert await handoff_store.get_offer(missing) is None
