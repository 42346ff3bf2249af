"""cloudagents: a GCP-native, serverless runtime for LLM agents.

Run an agent in process with ``Agent``; run it durably on Pub/Sub, Firestore, Cloud Storage and
Cloud Tasks with the services, or with ``cloudagents.gcp.DistributedAgent`` (seed 000's API).
"""

from cloudagents.domain.agents import AgentDefinition, ModelConfig, ScriptedTurn
from cloudagents.domain.errors import ConfigurationError, ModelError
from cloudagents.domain.handoffs import HandoffTarget
from cloudagents.domain.intents import IntentionMessage, StartRun
from cloudagents.domain.messages import GenerationParams, Message, ModelRequest, ModelResponse
from cloudagents.domain.policy import Budget, GuardrailConfig, RetryConfig
from cloudagents.domain.results import LoopExit, LoopResult
from cloudagents.runner import Agent, load_definitions
from cloudagents.tools import Tool, ToolRegistry, ToolResult, tool

__all__ = [
    "Agent",
    "AgentDefinition",
    "Budget",
    "ConfigurationError",
    "GenerationParams",
    "GuardrailConfig",
    "HandoffTarget",
    "IntentionMessage",
    "LoopExit",
    "LoopResult",
    "Message",
    "ModelConfig",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "RetryConfig",
    "ScriptedTurn",
    "StartRun",
    "Tool",
    "ToolRegistry",
    "ToolResult",
    "load_definitions",
    "tool",
]
