"""The step document: what one step of a run adds, stored as one Firestore document.

``agent_runs/{run_id}/steps/{seq:06d}`` holds the messages the step appended (``first`` to
``end``, message indexes in the run's transcript), the events it committed and its interaction
record; ``steps/opening`` holds the messages the run started with (``seq`` -1). One write per
step instead of one per message, per event and per record, and a transcript read is a read of
the step documents since a message index (a range query on ``end``, one field: no composite
index).

The previous layout, still read: one document per message (``messages/{i:06d}``), per event
(``events/{id}``) and per interaction record (``interactions/{run_id}-{seq:06d}``). Runs written
before the step document (``RunRecord`` version 4 and earlier) keep what they wrote there; a step
they take from this release on writes a step document, so their transcript is the old documents
up to the first step document's ``first``, then the step documents. A step whose messages and
events would make the document larger than ``SPILL_BYTES`` (a step's tool results can be up to
``tool_result_inline_bytes`` each) writes them in the previous layout instead and marks its step
document ``spilled``: no document nears Firestore's 1 MiB limit.

Live events (streamed chunks, the "calling model" status) are written as they happen, in
``events/{id}`` as before: they are read by watchers before the step commits. A tool call's
result event is its saved ``tool_calls/{id}`` document (run version 6; ``stores.RESULT_EVENT``).

A step's calls that nothing but their first claim writes (``ToolCallRecord.created_by_claim``)
have no ``tool_calls/{id}`` document until that claim creates it (create-if-absent: the first
delivery wins, a later one finds it); until then the step document lists them in ``calls``
(version 2), and a reader that asks for them (a wake-up looking for a lost dispatch) finds them
there: listed, no document = dispatched, never claimed.

A step document names its ``schema_version``; a reader refuses one newer than it knows
(``NewerSchemaVersion``: retried, so a release that does not know a newer layout never
misreads it).
"""

from __future__ import annotations

import json
from typing import Any

from cloudagents.adapters.firestore.ops import from_doc, to_doc
from cloudagents.domain.errors import NewerSchemaVersion
from cloudagents.domain.events import RUN_EVENT_ADAPTER, RunEvent
from cloudagents.domain.messages import Message
from cloudagents.domain.runs import Interaction, ToolCallRecord

STEPS = "steps"
OPENING = "opening"
# Version 2: ``calls``, the step's calls that their first claim creates (run version 6).
STEP_DOC_VERSION = 2
# Well under Firestore's 1 MiB per document, with room for the interaction and field names.
SPILL_BYTES = 512_000


def step_doc_id(seq: int) -> str:
    return OPENING if seq < 0 else f"{seq:06d}"


def step_doc(
    seq: int,
    first: int,
    messages: list[Message],
    events: list[RunEvent],
    interaction: Interaction | None,
    calls: list[ToolCallRecord] | None = None,
) -> tuple[dict[str, Any], bool]:
    """The step document and whether its messages and events spill to the previous layout
    (written there by the caller: one document each, and then ``calls`` too, on their own
    documents as before)."""
    message_docs = [m.model_dump(mode="json") for m in messages]
    event_docs = [e.model_dump(mode="json") for e in events]
    spilled = len(json.dumps([message_docs, event_docs], default=str)) > SPILL_BYTES
    doc: dict[str, Any] = {
        "schema_version": STEP_DOC_VERSION,
        "seq": seq,
        "first": first,
        "end": first + len(messages),
        "spilled": spilled,
        "messages": [] if spilled else to_doc(message_docs),
        "events": [] if spilled else to_doc(event_docs),
        # The highest event id held here: a reader resuming after an id reads only the step
        # documents with events past it (a range on one field).
        "last_event": "" if spilled else max((e.id for e in events), default=""),
        "interaction": (
            to_doc(interaction.model_dump(mode="json")) if interaction is not None else None
        ),
        # The calls no document holds yet: each one's first claim creates its
        # ``tool_calls/{id}`` document from this copy (the dispatch message carries it too).
        "calls": [] if spilled else [to_doc(c.model_dump(mode="json")) for c in calls or []],
    }
    return doc, spilled


def step_calls(doc: dict[str, Any]) -> list[ToolCallRecord]:
    """The calls of a step that their first claim creates, as the step committed them."""
    checked(doc)
    return [ToolCallRecord.model_validate(from_doc(c)) for c in doc.get("calls") or []]


def checked(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc``, if this release knows its version."""
    version = doc.get("schema_version", 1)
    if isinstance(version, int) and version > STEP_DOC_VERSION:
        raise NewerSchemaVersion(
            f"step document {doc.get('seq')} has schema_version {version}, newer than this "
            f"release understands ({STEP_DOC_VERSION}); upgrade cloudagents"
        )
    return doc


def step_messages(doc: dict[str, Any], start: int) -> list[Message]:
    """The messages of an unspilled step document from index ``start`` on."""
    checked(doc)
    first = int(doc["first"])
    found = [Message.model_validate(m) for m in from_doc(doc.get("messages") or [])]
    return found[max(0, start - first) :]


def step_events(doc: dict[str, Any]) -> list[RunEvent]:
    checked(doc)
    return [RUN_EVENT_ADAPTER.validate_python(e) for e in from_doc(doc.get("events") or [])]


def step_interaction(doc: dict[str, Any]) -> Interaction | None:
    data = checked(doc).get("interaction")
    return Interaction.model_validate(from_doc(data)) if data else None


def transcript(steps: list[dict[str, Any]], legacy: list[dict[str, Any]]) -> list[Message]:
    """A run's whole transcript from its raw step documents and its previous-layout message
    documents (each with ``i``), in either order: for readers outside the store (tests)."""
    by_index: dict[int, Message] = {}
    for data in legacy:
        data = dict(data)
        index = int(data.pop("i"))
        data.pop("_id", None)
        by_index[index] = Message.model_validate(from_doc(data))
    for doc in steps:
        if not doc.get("spilled"):
            for offset, message in enumerate(step_messages(doc, int(doc["first"]))):
                by_index[int(doc["first"]) + offset] = message
    return [by_index[i] for i in sorted(by_index)]


def interactions(steps: list[dict[str, Any]], legacy: list[dict[str, Any]]) -> list[Interaction]:
    """A run's interaction records from its step documents and ``interactions`` documents."""
    found = {i.seq: i for i in (Interaction.model_validate(from_doc(d)) for d in legacy)}
    for doc in steps:
        if (record := step_interaction(doc)) is not None:
            found[record.seq] = record
    return [found[seq] for seq in sorted(found)]


def events(steps: list[dict[str, Any]], legacy: list[dict[str, Any]]) -> list[RunEvent]:
    """A run's events from its step documents and ``events`` documents, in id order."""
    found = {
        e.id: e
        for e in (
            RUN_EVENT_ADAPTER.validate_python(from_doc({k: v for k, v in d.items() if k != "_id"}))
            for d in legacy
        )
    }
    for doc in steps:
        for event in step_events(doc):
            found[event.id] = event
    return [found[i] for i in sorted(found)]
