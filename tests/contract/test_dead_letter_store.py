"""``DeadLetterStore``: the first record of a message wins; letters can be listed and replayed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloudagents.domain.runs import DeadLetter
from cloudagents.ports.stores import DeadLetterStore
from tests.contract.conftest import new_id

pytestmark = pytest.mark.contract


def letter(letter_id: str, reason: str = "unknown run", **overrides: object) -> DeadLetter:
    data: dict[str, object] = {
        "id": letter_id,
        "source": "steps-push",
        "reason": reason,
        "message_id": "123",
        "data": "eyJydW5faWQiOiAieCJ9",
        "attributes": {"run_id": "x", "seq": "3"},
    }
    data.update(overrides)
    return DeadLetter.model_validate(data)


async def test_record_and_get_round_trip(dead_letter_store: DeadLetterStore) -> None:
    original = letter(new_id("dl"))
    await dead_letter_store.record_dead_letter(original)
    assert await dead_letter_store.get_dead_letter(original.id) == original
    assert await dead_letter_store.get_dead_letter(new_id("missing")) is None


async def test_the_first_record_wins(dead_letter_store: DeadLetterStore) -> None:
    letter_id = new_id("dl")
    first = letter(letter_id, reason="first")
    await dead_letter_store.record_dead_letter(first)
    await dead_letter_store.record_dead_letter(letter(letter_id, reason="second", data="other"))
    assert await dead_letter_store.get_dead_letter(letter_id) == first


async def test_list_newest_first(dead_letter_store: DeadLetterStore) -> None:
    # Dated in the future so they are the newest on the shared emulator.
    future = datetime.now(UTC) + timedelta(days=3650)
    letters = [letter(new_id("dl"), created_at=future + timedelta(seconds=i)) for i in (1, 0, 2)]
    for item in letters:
        await dead_letter_store.record_dead_letter(item)
    listed = await dead_letter_store.list_dead_letters(limit=3)
    assert [d.id for d in listed] == [letters[2].id, letters[0].id, letters[1].id]
    assert listed[0] == letters[2]
    assert [d.id for d in await dead_letter_store.list_dead_letters(limit=1)] == [letters[2].id]


async def test_mark_replayed(dead_letter_store: DeadLetterStore) -> None:
    original = letter(new_id("dl"))
    await dead_letter_store.record_dead_letter(original)
    before = datetime.now(UTC)
    await dead_letter_store.mark_replayed(original.id)
    replayed = await dead_letter_store.get_dead_letter(original.id)
    assert replayed is not None
    assert replayed.replayed_at is not None
    assert replayed.replayed_at >= before - timedelta(seconds=1)
    assert replayed.model_copy(update={"replayed_at": None}) == original


async def test_mark_replayed_of_an_unknown_letter_is_a_no_op(
    dead_letter_store: DeadLetterStore, backend: str, request: pytest.FixtureRequest
) -> None:
    missing = new_id("missing")
    await dead_letter_store.mark_replayed(missing)
    assert await dead_letter_store.get_dead_letter(missing) is None


async def test_list_one_runs_letters(dead_letter_store: DeadLetterStore) -> None:
    run_id = new_id("run")
    mine = [letter(new_id("dl"), run_id=run_id) for _ in range(2)]
    for item in [*mine, letter(new_id("dl"), run_id=new_id("other")), letter(new_id("dl"))]:
        await dead_letter_store.record_dead_letter(item)
    found = await dead_letter_store.list_dead_letters(run_id=run_id)
    assert sorted(d.id for d in found) == sorted(d.id for d in mine)
