"""Graph workflows (seed 001): nodes, edges and conditional routing run as supersteps.

Build a ``Graph``, register node functions in a ``NodeRegistry`` and run it with an
``Orchestrator``. The planner behind it (``cloudagents.graphs.superstep``) is pure functions
over plain data, so the same superstep logic can run inside a store transaction.
"""

from cloudagents.graphs.errors import (
    GraphError,
    StepLimitReached,
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
)
from cloudagents.graphs.graph import Graph
from cloudagents.graphs.orchestrator import Orchestrator, WorkflowStatus
from cloudagents.graphs.registry import NodeRegistry
from cloudagents.graphs.spec import END, CompiledGraph, RetryPolicy
from cloudagents.graphs.state import State, StateCheckpoint
from cloudagents.graphs.superstep import NodeTask, RouteDecision, Superstep, TaskResult
from cloudagents.graphs.worker import Worker, WorkerStopped

__all__ = [
    "END",
    "CompiledGraph",
    "Graph",
    "GraphError",
    "NodeRegistry",
    "NodeTask",
    "Orchestrator",
    "RetryPolicy",
    "RouteDecision",
    "State",
    "StateCheckpoint",
    "StepLimitReached",
    "Superstep",
    "TaskResult",
    "Worker",
    "WorkerStopped",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowFailed",
    "WorkflowStatus",
]
