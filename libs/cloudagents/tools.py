"""Tools: Python functions an agent may call, with JSON schemas generated from their signatures.

The schema comes from the type hints and the docstring (seed 003): the first paragraph describes
the tool, a Google-style ``Args:`` section or reST ``:param x:`` lines describe the parameters.
A tool that raises or times out returns an error result to the model instead of crashing the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from cloudagents.domain.messages import ToolSpec, result_text
from cloudagents.domain.policy import RISK_ORDER, RiskLevel

ToolFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]
ApprovalPredicate = Callable[[Mapping[str, Any]], bool]
"""Says from a call's arguments whether it waits for a person (``needs_approval``)."""
_APPROVAL_PREDICATES: dict[str, ApprovalPredicate] = {}


def approval_predicate(name: str) -> Callable[[ApprovalPredicate], ApprovalPredicate]:
    """Register a predicate an agent definition names in ``approval.tools``::

    @approval_predicate("large_refund")
    def large_refund(args): return args["amount"] > 100
    """

    def register(function: ApprovalPredicate) -> ApprovalPredicate:
        existing = _APPROVAL_PREDICATES.get(name)
        if existing is not None and existing is not function:
            raise ValueError(f"a different approval predicate {name!r} is already registered")
        _APPROVAL_PREDICATES[name] = function
        return function

    return register


def get_approval_predicate(name: str) -> ApprovalPredicate | None:
    return _APPROVAL_PREDICATES.get(name)


def needs_approval(
    tool: Tool | None, rule: str | None, arguments: Mapping[str, Any]
) -> bool | None:
    """What a call's own approval rule says: the agent policy's ``tools`` entry (``always``,
    ``never`` or a predicate's name) if it has one, else the tool's ``needs_approval``;
    ``None`` when neither has a rule. A predicate that raises (or is unknown) says ``True``:
    when in doubt, a person looks."""
    if rule == "always":
        return True
    if rule == "never":
        return False
    predicate: ApprovalPredicate | bool | None
    if rule is not None:
        predicate = get_approval_predicate(rule)
        if predicate is None:
            return True
    else:
        predicate = tool.needs_approval if tool is not None else None
    if predicate is None or predicate is False:
        return None
    if predicate is True:
        return True
    try:
        return bool(predicate(dict(arguments)))
    except Exception:
        return True


_IDEMPOTENCY_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cloudagents_idempotency_key", default=None
)


def idempotency_key() -> str | None:
    """The key of the tool call being executed (``run:seq:index``): the same on every retry of
    the same call, so a tool with side effects can de-duplicate them downstream."""
    return _IDEMPOTENCY_KEY.get()


@contextlib.contextmanager
def idempotency_scope(key: str) -> Iterator[None]:
    token = _IDEMPOTENCY_KEY.set(key)
    try:
        yield
    finally:
        _IDEMPOTENCY_KEY.reset(token)


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ToolResult:
    """What a tool call produced: JSON-able ``content``, or an error message for the model."""

    content: Any
    is_error: bool = False

    def as_text(self) -> str:
        return result_text(self.content)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google-style or reST docstring."""
    if not doc:
        return "", {}
    text = inspect.cleandoc(doc)
    params: dict[str, str] = {}
    for match in re.finditer(r"^\s*:param\s+(?:\w+\s+)?(\w+):\s*(.+)$", text, flags=re.MULTILINE):
        params[match.group(1)] = match.group(2).strip()
    section = re.search(
        r"^(?:Args|Arguments|Parameters):\s*\n(.*?)(?:\n\s*\n|\n\S|\Z)", text, flags=re.S | re.M
    )
    if section:
        current: str | None = None
        for line in section.group(1).splitlines():
            item = re.match(r"^\s+(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if item:
                current = item.group(1)
                params[current] = item.group(2).strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}"
    description = re.split(
        r"\n\s*\n|^(?:Args|Arguments|Parameters|Returns|Raises):", text, maxsplit=1, flags=re.M
    )[0]
    return " ".join(description.split()), params


def arguments_model(function: ToolFunction, param_docs: Mapping[str, str]) -> type[BaseModel]:
    """A pydantic model of the function's parameters; it validates calls and gives the schema."""
    signature = inspect.signature(function)
    hints = get_type_hints(function)
    fields: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(
                f"tool {function.__name__}: *args/**kwargs cannot be described to a model"
            )
        annotation = hints.get(name, Any)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (annotation, FieldInfo(default=default, description=param_docs.get(name)))
    model: type[BaseModel] = create_model(
        f"{function.__name__}_arguments",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    return model


class Tool:
    """A callable the model may invoke, with its schema, risk level and execution limits."""

    def __init__(
        self,
        name: str,
        function: ToolFunction,
        risk_level: RiskLevel = "low",
        *,
        description: str | None = None,
        timeout_seconds: float = 30.0,
        idempotent: bool = True,
        needs_approval: bool | ApprovalPredicate = False,
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"tool name {name!r} must match {_NAME.pattern}")
        if risk_level not in RISK_ORDER:
            raise ValueError(f"risk_level must be one of {list(RISK_ORDER)}, got {risk_level!r}")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        doc_description, param_docs = parse_docstring(inspect.getdoc(function))
        self.name = name
        self.function = function
        self.risk_level: RiskLevel = risk_level
        self.description = description if description is not None else doc_description
        self.timeout_seconds = timeout_seconds
        self.idempotent = idempotent
        # True, or a predicate over the arguments: a call waits for a person (domain/approvals)
        self.needs_approval = needs_approval
        self.arguments = arguments_model(function, param_docs)
        self._spec: ToolSpec | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema

    def spec(self) -> ToolSpec:
        """What the model is told of the tool (built once: every step of every run asks)."""
        if self._spec is None:
            self._spec = ToolSpec(
                name=self.name,
                description=self.description,
                parameters=self.parameters,
                risk_level=self.risk_level,
            )
        return self._spec

    def to_mcp_format(self) -> dict[str, Any]:
        """The tool as an MCP tool listing entry, with its risk level (seed 000)."""
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.parameters,
            "risk_level": self.risk_level,
        }

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolResult:
        """Validate the arguments and run the tool under its timeout; errors become results."""
        try:
            parsed = self.arguments.model_validate(dict(arguments))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors()
            )
            return ToolResult(f"invalid arguments for {self.name}: {problems}", is_error=True)
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        try:
            if inspect.iscoroutinefunction(self.function):
                value = await asyncio.wait_for(self.function(**kwargs), self.timeout_seconds)
            else:
                value = await asyncio.wait_for(
                    asyncio.to_thread(self.function, **kwargs), self.timeout_seconds
                )
        except TimeoutError:
            return ToolResult(f"{self.name} timed out after {self.timeout_seconds}s", is_error=True)
        except Exception as exc:  # a tool's own failure is information for the model
            return ToolResult(f"{self.name} failed: {type(exc).__name__}: {exc}", is_error=True)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        return ToolResult(value)

    def __repr__(self) -> str:
        return f"Tool({self.name!r}, risk_level={self.risk_level!r})"


@overload
def tool(function: ToolFunction, /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    risk_level: RiskLevel = "low",
    timeout_seconds: float = 30.0,
    idempotent: bool = True,
    needs_approval: bool | ApprovalPredicate = False,
) -> Callable[[ToolFunction], Tool]: ...
def tool(
    function: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    risk_level: RiskLevel = "low",
    timeout_seconds: float = 30.0,
    idempotent: bool = True,
    needs_approval: bool | ApprovalPredicate = False,
) -> Tool | Callable[[ToolFunction], Tool]:
    """Decorator making a function a ``Tool``: ``@tool`` or ``@tool(risk_level="high")``."""

    def wrap(fn: ToolFunction) -> Tool:
        return Tool(
            name or fn.__name__,
            fn,
            risk_level,
            timeout_seconds=timeout_seconds,
            idempotent=idempotent,
            needs_approval=needs_approval,
        )

    return wrap(function) if function is not None else wrap


class ToolLike(Protocol):
    """The shape of seed 000's own ``Tool`` class, defined in the user's code."""

    name: str
    function: Callable[..., Any]
    risk_level: str


ToolSource = Tool | ToolFunction | ToolLike
"""What ``tools=`` accepts per entry: a ``Tool``, a plain function, or a seed-000-style tool."""


def as_tool(item: object, name: str | None = None) -> Tool:
    """A cloudagents ``Tool`` from a ``Tool``, a plain function, or any object shaped like seed
    000's own little ``Tool`` class (a ``function`` attribute, optional ``name``, ``risk_level``
    and ``description``). ``name`` (the mapping key) names it when the object has no name."""
    if isinstance(item, Tool):
        return item
    function = getattr(item, "function", None)
    if callable(function) and not inspect.isroutine(item):
        own_name = getattr(item, "name", None)
        risk = getattr(item, "risk_level", None) or "low"
        description = getattr(item, "description", None)
        return Tool(
            own_name if isinstance(own_name, str) and own_name else (name or function.__name__),
            function,
            cast(RiskLevel, risk),
            description=description if isinstance(description, str) else None,
            needs_approval=getattr(item, "needs_approval", False) or False,
        )
    if callable(item):
        return Tool(name or str(getattr(item, "__name__", "tool")), item)
    raise TypeError(
        f"not a tool: {item!r} (expected a Tool, a function, or an object with a "
        "callable `function` attribute)"
    )


class ToolRegistry:
    """Tools by name. The services build one per process from ``CLOUDAGENTS_TOOL_MODULES``."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.register(item)

    @classmethod
    def from_mapping(
        cls, tools: Mapping[str, ToolSource] | Iterable[ToolSource] | None
    ) -> ToolRegistry:
        """Accept seed 000's ``{"name": Tool(...)}`` (its own ``Tool`` class or ours), a list of
        tools, or plain functions."""
        registry = cls()
        if tools is None:
            return registry
        if isinstance(tools, Mapping):
            for key, value in tools.items():
                registry.register(as_tool(value, key))
        else:
            for value in tools:
                registry.register(value)
        return registry

    def register(self, item: ToolSource) -> Tool:
        registered = as_tool(item)
        existing = self._tools.get(registered.name)
        if existing is not None and existing.function is not registered.function:
            raise ValueError(f"a different tool named {registered.name!r} is already registered")
        self._tools[registered.name] = registered
        return registered

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def specs(self) -> dict[str, ToolSpec]:
        return {name: t.spec() for name, t in self._tools.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    async def invoke(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        found = self._tools.get(name)
        if found is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return ToolResult(f"unknown tool {name!r}; available: {known}", is_error=True)
        return await found.invoke(arguments)
