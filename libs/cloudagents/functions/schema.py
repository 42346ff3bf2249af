"""JSON schemas from an entry function's AST: its annotations and docstring, never importing it.

The mapping follows what ``cloudagents.tools`` produces through pydantic for the same
signature, for the JSON-expressible annotations a stored function may use.
"""

from __future__ import annotations

import ast
from typing import Any

from cloudagents.functions.errors import FunctionValidationError
from cloudagents.tools import parse_docstring

_SCALARS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "None": {"type": "null"},
    "dict": {"type": "object"},
    "Dict": {"type": "object"},
    "list": {"type": "array"},
    "List": {"type": "array"},
    "tuple": {"type": "array"},
    "Tuple": {"type": "array"},
    "Sequence": {"type": "array"},
    "Mapping": {"type": "object"},
    "Any": {},
    "object": {},
}
_ARRAYS = {"list", "List", "Sequence", "tuple", "Tuple"}
_OBJECTS = {"dict", "Dict", "Mapping"}


def _name_of(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # typing.List, t.Optional
        return node.attr
    if isinstance(node, ast.Constant) and node.value is None:
        return "None"
    return None


def annotation_schema(node: ast.expr | None) -> dict[str, Any]:
    """The JSON schema of one annotation; unknown annotations are refused with their line."""
    if node is None:
        return {}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:  # a string annotation ("list[int]")
            return annotation_schema(ast.parse(node.value, mode="eval").body)
        except SyntaxError as exc:
            raise FunctionValidationError(node.lineno, f"bad annotation {node.value!r}") from exc
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([node.left, node.right])
    name = _name_of(node)
    if name is not None and name in _SCALARS:
        return dict(_SCALARS[name])
    if isinstance(node, ast.Subscript):
        base = _name_of(node.value)
        params = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base in ("Optional",) and len(params) == 1:
            return _union([params[0], ast.Constant(value=None)])
        if base == "Union":
            return _union(params)
        if base == "Literal" and all(isinstance(p, ast.Constant) for p in params):
            return {"enum": [p.value for p in params if isinstance(p, ast.Constant)]}
        if base in _ARRAYS:
            if base in ("tuple", "Tuple") and not (
                len(params) == 2 and isinstance(params[1], ast.Constant) and params[1].value is ...
            ):
                items = [annotation_schema(p) for p in params]
                return {"type": "array", "prefixItems": items, "minItems": len(items)}
            return {"type": "array", "items": annotation_schema(params[0])}
        if base in _OBJECTS and len(params) == 2:
            return {"type": "object", "additionalProperties": annotation_schema(params[1])}
    raise FunctionValidationError(
        node.lineno, f"annotation {ast.unparse(node)!r} cannot be described as JSON"
    )


def _union(members: list[ast.expr]) -> dict[str, Any]:
    flat: list[dict[str, Any]] = []
    for member in members:
        schema = annotation_schema(member)
        flat.extend(schema.get("anyOf", [schema]))
    return {"anyOf": flat}


def entry_schemas(
    entry: ast.FunctionDef | ast.AsyncFunctionDef, *, context_parameter: str | None = None
) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(description, input schema, output schema or None) of the entry function."""
    description, param_docs = parse_docstring(ast.get_docstring(entry))
    arguments = entry.args
    if arguments.vararg or arguments.kwarg:
        raise FunctionValidationError(entry.lineno, "*args/**kwargs cannot be described to a model")
    if arguments.posonlyargs:
        raise FunctionValidationError(entry.lineno, "positional-only parameters are not callable")
    positional = arguments.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults))
    defaults += list(arguments.defaults)
    pairs = list(zip(positional, defaults, strict=True))
    pairs += list(zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True))
    properties: dict[str, Any] = {}
    required: list[str] = []
    for arg, default in pairs:
        if arg.arg == context_parameter:
            continue
        schema = annotation_schema(arg.annotation)
        if arg.arg in param_docs:
            schema["description"] = param_docs[arg.arg]
        if default is None:
            required.append(arg.arg)
        else:
            try:
                schema["default"] = ast.literal_eval(default)
            except ValueError as exc:
                raise FunctionValidationError(
                    default.lineno, f"default of {arg.arg!r} must be a literal"
                ) from exc
        properties[arg.arg] = schema
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        input_schema["required"] = required
    output = annotation_schema(entry.returns) if entry.returns is not None else None
    return description, input_schema, output
