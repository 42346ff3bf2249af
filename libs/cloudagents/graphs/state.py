"""The workflow state a node reads: a dict-like bag of values with checkpoints."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from cloudagents.domain.base import Persisted


def _now() -> datetime:
    return datetime.now(UTC)


class StateCheckpoint(Persisted):
    """A copy of a state taken at a node: enough to restore it later."""

    workflow_id: str | None
    node: str
    step: int
    data: dict[str, Any]
    created_at: datetime = Field(default_factory=_now)


class StateDocument(Persisted):
    """The serialised form of a ``State`` (``to_dict`` / ``from_dict``)."""

    workflow_id: str | None = None
    step: int = 0
    data: dict[str, Any] = {}


class State(MutableMapping[str, Any]):
    """Values flowing through a graph; nodes read it and return updates.

    Each node gets its own deep copy of the committed state, so a node that mutates its
    argument changes nothing: only the returned updates are merged, through the reducers.
    """

    def __init__(
        self,
        workflow_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        step: int = 0,
    ) -> None:
        self.workflow_id = workflow_id
        self.step = step
        self._data: dict[str, Any] = copy.deepcopy(dict(data or {}))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"State(workflow_id={self.workflow_id!r}, step={self.step}, data={self._data!r})"

    def copy(self) -> State:
        """A deep copy: changes to it do not reach this state."""
        return State(self.workflow_id, self._data, step=self.step)

    def checkpoint(self, node_name: str) -> StateCheckpoint:
        """Snapshot the data as seen at ``node_name``."""
        return StateCheckpoint(
            workflow_id=self.workflow_id,
            node=node_name,
            step=self.step,
            data=copy.deepcopy(self._data),
        )

    def restore_from_checkpoint(self, checkpoint: StateCheckpoint | Mapping[str, Any]) -> None:
        """Replace the data (and step) with a checkpoint's; accepts its ``model_dump()`` too."""
        cp = StateCheckpoint.model_validate(checkpoint)
        self._data = copy.deepcopy(cp.data)
        self.step = cp.step
        if cp.workflow_id is not None:
            self.workflow_id = cp.workflow_id

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``schema_version``, ``workflow_id``, ``step`` and ``data``."""
        doc = StateDocument(workflow_id=self.workflow_id, step=self.step, data=self._data)
        return copy.deepcopy(doc.model_dump())

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> State:
        """Inverse of ``to_dict``."""
        doc = StateDocument.model_validate(document)
        return cls(doc.workflow_id, doc.data, step=doc.step)
