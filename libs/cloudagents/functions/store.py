"""``FunctionStore``: seed 002's API over a ``FunctionRepository`` and the ``Sandbox``.

Two ways to execute, one path underneath:

- ``run_function(ref, args)`` never raises for anything the function or its caller did wrong; it
  returns a ``FunctionOutcome`` whose ``message`` the tool invoker hands to the model.
- ``execute_function(name, args)`` is the seed's call: it returns the value, or raises
  ``FunctionExecutionError`` carrying the same outcome.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import jsonschema
from pydantic import JsonValue

from cloudagents.domain.runs import utcnow
from cloudagents.functions.config import FunctionConfig
from cloudagents.functions.errors import FunctionNotFound, FunctionValidationError
from cloudagents.functions.repository import FunctionRepository
from cloudagents.functions.validation import CONTEXT_PARAMETER, validate_function
from cloudagents.functions.versions import (
    ExecutionRecord,
    FunctionAlias,
    FunctionOutcome,
    FunctionVersion,
)
from cloudagents.sandbox import Sandbox, shared_sandbox

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MIN_HASH_PREFIX = 8
_FULL_HASH = re.compile(r"^[0-9a-f]{64}$")
# Versions are immutable, so a cached one is never stale; the bound only caps memory.
_VERSION_CACHE = 256


class FunctionExecutionError(RuntimeError):
    """``execute_function`` failed; ``outcome`` says how (``error_kind``) and why."""

    def __init__(self, outcome: FunctionOutcome) -> None:
        super().__init__(f"{outcome.error_kind}: {outcome.message}")
        self.outcome = outcome


def _schema_problem(schema: dict[str, Any], value: Any) -> str | None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.path) or "(root)"
    return f"{where}: {first.message}"


class FunctionStore:
    """Stores validated, versioned functions and executes them one fresh sandbox per call.

    ``FunctionStore(repository)`` is seed 002's ``FunctionStore(session)``: the repository is
    where versions live (``InMemoryFunctionRepository``, or ``FirestoreFunctionRepository`` from
    ``cloudagents.bootstrap.function_repository``); the sandbox is the process's shared one
    unless another is given.
    """

    def __init__(self, repository: FunctionRepository, sandbox: Sandbox | None = None) -> None:
        self._repository = repository
        self._sandbox = sandbox if sandbox is not None else shared_sandbox()
        self._versions: OrderedDict[str, FunctionVersion] = OrderedDict()

    @property
    def sandbox(self) -> Sandbox:
        return self._sandbox

    async def get_version(self, version_hash: str) -> FunctionVersion | None:
        """A version by its full hash (cached in process: versions never change)."""
        version = self._versions.get(version_hash)
        if version is None:
            version = await self._repository.get_version(version_hash)
            if version is None:
                return None
            self._versions[version_hash] = version
            while len(self._versions) > _VERSION_CACHE:
                self._versions.popitem(last=False)
        return version

    async def store_function(
        self,
        name: str,
        code: str,
        description: str | None = None,
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        is_async: bool | None = None,
        config: FunctionConfig | dict[str, Any] | None = None,
    ) -> FunctionVersion:
        """Validate ``code`` statically (nothing runs), store the version, point ``name`` at it.

        Omitted schemas and description come from the entry function's signature and
        docstring. Raises ``FunctionValidationError`` (with a line number) for refused code.
        """
        if not _NAME.match(name):
            raise FunctionValidationError(0, f"function name {name!r} must match {_NAME.pattern}")
        settings = FunctionConfig.model_validate(config or {})
        # An explicit is_async (argument or config) must match the code; otherwise the code says.
        declared = is_async if is_async is not None else None
        if declared is None and "is_async" in settings.model_fields_set:
            declared = settings.is_async
        checked = validate_function(name, code, settings, is_async=declared)
        if settings.is_async != checked.is_async:
            settings = settings.model_copy(update={"is_async": checked.is_async})
        for label, schema in (("input_schema", input_schema), ("output_schema", output_schema)):
            if schema is not None:
                try:
                    jsonschema.Draft202012Validator.check_schema(schema)
                except jsonschema.SchemaError as exc:
                    raise FunctionValidationError(0, f"{label}: {exc.message}") from exc
        fields: dict[str, Any] = {
            "code": code,
            "entry": checked.entry,
            "description": description if description is not None else checked.description,
            "input_schema": input_schema if input_schema is not None else checked.input_schema,
            "output_schema": output_schema if output_schema is not None else checked.output_schema,
            "config": settings,
        }
        version = FunctionVersion(
            hash=FunctionVersion.content_hash(**fields),
            name=name,
            imports=list(checked.imports),
            **fields,
        )
        existing = await self._repository.get_version(version.hash)
        await self._repository.save_version(version)
        await self._repository.point_alias(name, version.hash)
        return existing or version

    async def get_function(self, ref: str) -> FunctionVersion:
        """Resolve ``name`` (its current version) or ``name@hash`` (a hash prefix of 8+ chars).

        A full hash is looked up directly, not among the alias's (bounded) history: that is
        how a run's pinned versions are found however often the name has moved since."""
        name, _, wanted = ref.partition("@")
        if _FULL_HASH.match(wanted):
            pinned = await self.get_version(wanted)
            if pinned is None or pinned.name != name:
                raise FunctionNotFound(f"{name!r} has no version {wanted}")
            return pinned
        alias = await self._repository.get_alias(name)
        if alias is None:
            raise FunctionNotFound(f"no function named {name!r}")
        if not wanted:
            version_hash = alias.current
        else:
            matches = [h for h in alias.history if h.startswith(wanted.lower())]
            if len(wanted) < _MIN_HASH_PREFIX or len(set(matches)) != 1:
                raise FunctionNotFound(f"{name!r} has no single version matching {wanted!r}")
            version_hash = matches[0]
        version = await self.get_version(version_hash)
        if version is None:
            raise FunctionNotFound(f"version {version_hash} of {name!r} is missing")
        return version

    async def list_functions(self) -> list[FunctionAlias]:
        return await self._repository.list_aliases()

    async def versions(self, name: str) -> list[FunctionVersion]:
        """Every version ``name`` has pointed at, oldest first (repeats removed)."""
        alias = await self._repository.get_alias(name)
        if alias is None:
            raise FunctionNotFound(f"no function named {name!r}")
        found: list[FunctionVersion] = []
        for version_hash in dict.fromkeys(alias.history):
            version = await self._repository.get_version(version_hash)
            if version is not None:
                found.append(version)
        return found

    async def history(
        self, *, function: str | None = None, agent: str | None = None, limit: int = 100
    ) -> list[ExecutionRecord]:
        return await self._repository.executions(function=function, agent=agent, limit=limit)

    async def execute_function(self, name: str, args: dict[str, Any], **kwargs: Any) -> JsonValue:
        """Seed 002's call: the function's value, or ``FunctionExecutionError``."""
        outcome = await self.run_function(name, args, **kwargs)
        if not outcome.ok:
            raise FunctionExecutionError(outcome)
        return outcome.value

    async def run_function(
        self,
        ref: str,
        args: dict[str, Any],
        *,
        context: dict[str, Any] | None = None,
        run_id: str | None = None,
        tool_call_id: str | None = None,
        agent: str | None = None,
    ) -> FunctionOutcome:
        """Validate ``args``, run the version in the sandbox, validate its output, record it."""
        try:
            version = await self.get_function(ref)
        except FunctionNotFound as exc:
            return FunctionOutcome(ok=False, error_kind="not_found", message=str(exc))
        started_at = utcnow()
        outcome, output_bytes = await self._run_version(version, args, context)
        await self._repository.record_execution(
            ExecutionRecord(
                function=version.name,
                version_hash=version.hash,
                exit_kind="ok" if outcome.ok else (outcome.error_kind or "error"),
                duration_ms=outcome.duration_ms,
                output_bytes=output_bytes,
                limits_hit=outcome.limits_hit,
                run_id=run_id,
                tool_call_id=tool_call_id,
                agent=agent,
                started_at=started_at,
            )
        )
        return outcome

    async def _run_version(
        self, version: FunctionVersion, args: dict[str, Any], context: dict[str, Any] | None
    ) -> tuple[FunctionOutcome, int]:
        """The outcome and the bytes of output the call wrote (0 if it never ran)."""
        problem = _schema_problem(version.input_schema, args)
        if problem is not None:
            refused = FunctionOutcome(
                ok=False,
                error_kind="invalid_arguments",
                message=f"invalid arguments for {version.name}: {problem}",
                version_hash=version.hash,
            )
            return refused, 0
        call_args = dict(args)
        if version.config.requires_context:
            call_args[CONTEXT_PARAMETER] = context or {}
        result = await self._sandbox.run(
            version.code,
            version.entry,
            call_args,
            limits=version.config.limits(),
            allowed_imports=version.config.allowed_imports,
            is_async=version.config.is_async,
        )
        common: dict[str, Any] = {
            "version_hash": version.hash,
            "duration_ms": result.duration_ms,
            "limits_hit": result.limits_hit,
        }
        if not result.ok:
            failed = FunctionOutcome(
                ok=False,
                error_kind=result.error_kind or "error",
                message=f"{version.name} failed: {result.message}",
                **common,
            )
            return failed, result.output_bytes
        if version.output_schema is not None:
            problem = _schema_problem(version.output_schema, result.value)
            if problem is not None:
                invalid = FunctionOutcome(
                    ok=False,
                    error_kind="invalid_output",
                    message=f"{version.name} returned a value outside its output_schema: {problem}",
                    **common,
                )
                return invalid, result.output_bytes
        return FunctionOutcome(ok=True, value=result.value, **common), result.output_bytes
