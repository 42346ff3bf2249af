"""Errors raised by graph workflows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudagents.domain.errors import CloudAgentsError

if TYPE_CHECKING:
    from cloudagents.graphs.superstep import Superstep


class GraphError(CloudAgentsError, ValueError):
    """A graph that can never run as declared; the message names the node or edge at fault."""


class WorkflowError(CloudAgentsError):
    """A workflow run ended without completing; ``checkpoint`` is its last superstep."""

    def __init__(self, message: str, *, workflow_id: str, checkpoint: Superstep) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.checkpoint = checkpoint

    @property
    def status(self) -> str:
        """How the run ended: ``failed``, ``cancelled`` or ``step_limit``."""
        return self.checkpoint.status


class WorkflowFailed(WorkflowError):
    """A node failed after its retries, or two parallel nodes wrote one ``last_value`` key."""


class WorkflowCancelled(WorkflowError):
    """``cancel_workflow`` stopped the run at a superstep boundary."""


class StepLimitReached(WorkflowError):
    """The run used its supersteps; ``checkpoint`` keeps the pending tasks, so it can resume."""
