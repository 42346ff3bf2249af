"""Static validation of stored code. It parses; it never imports, compiles to run, or executes.

Checks, in order: size, syntax, complexity, exactly one entry function, imports against the
allow-list (``import``, ``from``-import, ``__import__`` and ``importlib`` calls), and in
``safe_mode`` a lint of the attribute and name accesses that object-graph escapes start from.
The sandbox enforces the import allow-list again at run time; the lint only raises the bar,
since the OS boundary, not CPython, is what holds.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from cloudagents.functions.config import FunctionConfig
from cloudagents.functions.errors import FunctionValidationError
from cloudagents.functions.schema import entry_schemas

MAX_CODE_BYTES = 64 * 1024
MAX_AST_NODES = 20_000
MAX_NESTING = 40
CONTEXT_PARAMETER = "context"

# Dunders that name things without reaching into the object graph.
_HARMLESS_DUNDERS = {"__init__", "__name__", "__doc__", "__qualname__", "__post_init__"}
# Frame, generator, coroutine, traceback and code internals: the other road to globals.
_INTERNAL_ATTRIBUTES = {
    "f_back",
    "f_globals",
    "f_locals",
    "f_builtins",
    "f_code",
    "gi_frame",
    "gi_code",
    "cr_frame",
    "cr_code",
    "ag_frame",
    "ag_code",
    "tb_frame",
    "tb_next",
    "co_code",
    "mro",
}
_DYNAMIC_BUILTINS = {
    "eval",
    "exec",
    "compile",
    "globals",
    "locals",
    "vars",
    "breakpoint",
    "__import__",
    "__builtins__",
    "__loader__",
    "__spec__",
}
_ATTRIBUTE_BUILTINS = {"getattr", "setattr", "delattr"}


@dataclass(frozen=True)
class ValidatedFunction:
    """What validation learned: the entry function and the schemas from its signature."""

    entry: str
    is_async: bool
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    imports: tuple[str, ...]


def _depth(node: ast.AST, level: int = 0) -> int:
    children = list(ast.iter_child_nodes(node))
    if level > MAX_NESTING:
        return level
    return max((_depth(child, level + 1) for child in children), default=level)


def _choose_entry(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    named = [f for f in functions if f.name == name]
    if len(named) > 1:
        raise FunctionValidationError(named[1].lineno, f"function {name!r} is defined twice")
    if named:
        return named[0]
    if len(functions) == 1:
        return functions[0]
    if not functions:
        raise FunctionValidationError(0, "the code defines no top-level function")
    listed = ", ".join(f.name for f in functions)
    raise FunctionValidationError(
        functions[1].lineno,
        f"several top-level functions ({listed}) and none named {name!r}: "
        "name the entry function like the stored function",
    )


def _check_imports(tree: ast.Module, allowed: set[str]) -> tuple[str, ...]:
    found: set[str] = set()
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise FunctionValidationError(node.lineno, "relative imports are not allowed")
            modules = [node.module or ""]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "__import__":
                raise FunctionValidationError(node.lineno, "__import__() calls are not allowed")
            if isinstance(func, ast.Attribute) and func.attr in ("import_module", "__import__"):
                raise FunctionValidationError(
                    node.lineno, f"dynamic imports ({ast.unparse(func)}) are not allowed"
                )
        for module in modules:
            top = module.partition(".")[0]
            if top not in allowed:
                shown = ", ".join(sorted(allowed)) or "none"
                raise FunctionValidationError(
                    getattr(node, "lineno", 0),
                    f"import of {module!r} is not allowed (allowed: {shown})",
                )
            found.add(top)
    return tuple(sorted(found))


def _lint_safe_mode(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            attr = node.attr
            dunder = attr.startswith("__") and attr.endswith("__")
            if (dunder and attr not in _HARMLESS_DUNDERS) or attr in _INTERNAL_ATTRIBUTES:
                raise FunctionValidationError(
                    node.lineno, f"safe_mode: access to attribute {attr!r} is not allowed"
                )
        elif isinstance(node, ast.Name) and node.id in _DYNAMIC_BUILTINS:
            raise FunctionValidationError(node.lineno, f"safe_mode: {node.id!r} is not allowed")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _ATTRIBUTE_BUILTINS
        ):
            target = node.args[1] if len(node.args) > 1 else None
            literal = isinstance(target, ast.Constant) and isinstance(target.value, str)
            if not literal or (
                isinstance(target, ast.Constant)
                and str(target.value).startswith("_")
                and target.value not in _HARMLESS_DUNDERS
            ):
                raise FunctionValidationError(
                    node.lineno,
                    f"safe_mode: {node.func.id}() needs a literal, non-underscore attribute name",
                )


def validate_function(
    name: str, code: str, config: FunctionConfig, *, is_async: bool | None = None
) -> ValidatedFunction:
    """Validate ``code`` as the stored function ``name``; raise ``FunctionValidationError``."""
    if len(code.encode("utf-8")) > MAX_CODE_BYTES:
        raise FunctionValidationError(0, f"code is larger than {MAX_CODE_BYTES} bytes")
    try:
        tree = ast.parse(code, filename=f"<function {name}>", mode="exec")
    except SyntaxError as exc:
        raise FunctionValidationError(exc.lineno or 0, f"syntax error: {exc.msg}") from exc
    except (RecursionError, MemoryError) as exc:  # pathological nesting in the parser itself
        raise FunctionValidationError(0, "code nests too deeply to parse") from exc
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_AST_NODES:
        raise FunctionValidationError(
            0, f"code has {nodes} syntax nodes; the cap is {MAX_AST_NODES}"
        )
    if _depth(tree) > MAX_NESTING:
        raise FunctionValidationError(0, f"code nests deeper than {MAX_NESTING} levels")
    entry = _choose_entry(tree, name)
    entry_is_async = isinstance(entry, ast.AsyncFunctionDef)
    if is_async is not None and is_async != entry_is_async:
        kind = "async def" if entry_is_async else "def"
        raise FunctionValidationError(
            entry.lineno, f"is_async={is_async} but {entry.name!r} is declared with {kind}"
        )
    parameters = {a.arg for a in entry.args.args + entry.args.kwonlyargs}
    if config.requires_context and CONTEXT_PARAMETER not in parameters:
        raise FunctionValidationError(
            entry.lineno, f"requires_context is set but {entry.name!r} has no 'context' parameter"
        )
    imports = _check_imports(tree, set(config.allowed_imports))
    if config.safe_mode:
        _lint_safe_mode(tree)
    description, input_schema, output_schema = entry_schemas(
        entry, context_parameter=CONTEXT_PARAMETER if config.requires_context else None
    )
    return ValidatedFunction(
        entry=entry.name,
        is_async=entry_is_async,
        description=description,
        input_schema=input_schema,
        output_schema=output_schema,
        imports=imports,
    )
