"""Seed 001's ``distributed_agents.core.graph``: ``Graph`` and ``END``."""

from cloudagents.graphs.graph import Graph
from cloudagents.graphs.spec import END

__all__ = ["END", "Graph"]
