"""Seed 002's secure function store: static validation, content-hashed versions, sandboxed runs.

``FunctionStore.store_function`` validates without executing; ``run_function`` (never raises for
the function's failures) and ``execute_function`` (the seed's call, raises) run the version in
a fresh ``cloudagents.sandbox.Sandbox``.
"""

from cloudagents.functions.config import DEFAULT_ALLOWED_IMPORTS, FunctionConfig
from cloudagents.functions.errors import FunctionNotFound, FunctionValidationError
from cloudagents.functions.repository import FunctionRepository, InMemoryFunctionRepository
from cloudagents.functions.store import FunctionExecutionError, FunctionStore
from cloudagents.functions.validation import ValidatedFunction, validate_function
from cloudagents.functions.versions import (
    ExecutionRecord,
    ExitKind,
    FunctionAlias,
    FunctionOutcome,
    FunctionVersion,
)

__all__ = [
    "DEFAULT_ALLOWED_IMPORTS",
    "ExecutionRecord",
    "ExitKind",
    "FunctionAlias",
    "FunctionConfig",
    "FunctionExecutionError",
    "FunctionNotFound",
    "FunctionOutcome",
    "FunctionRepository",
    "FunctionStore",
    "FunctionValidationError",
    "FunctionVersion",
    "InMemoryFunctionRepository",
    "ValidatedFunction",
    "validate_function",
]
