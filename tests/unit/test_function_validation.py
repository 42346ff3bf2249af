"""Stored functions: static validation, schemas from the AST, content hashes, the store's API."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from cloudagents import Tool
from cloudagents.functions import (
    FunctionConfig,
    FunctionExecutionError,
    FunctionNotFound,
    FunctionStore,
    FunctionValidationError,
    FunctionVersion,
    InMemoryFunctionRepository,
    validate_function,
)
from cloudagents.sandbox import BwrapLauncher, Sandbox
from cloudagents.sandbox.seccomp import (
    AUDIT_ARCH_X86_64,
    SECCOMP_RET_KILL_PROCESS,
    X86_64_DENIED,
    UnsupportedArchitecture,
    build_filter,
)

HYPOT = '''
import math


def hypot(a: float, b: float = 3.0, *, unit: str = "m") -> dict[str, float]:
    """The hypotenuse of a right triangle.

    Args:
        a: the first side
        b: the second side
        unit: a label, unused
    """
    return {"length": math.sqrt(a * a + b * b)}
'''


def refused(code: str, *, name: str = "probe", **config: Any) -> FunctionValidationError:
    with pytest.raises(FunctionValidationError) as caught:
        validate_function(name, code, FunctionConfig(**config))
    return caught.value


# ---- refusals carry the line and the reason ----------------------------------------------


@pytest.mark.parametrize(
    ("code", "line", "reason"),
    [
        ("def probe(:\n    pass\n", 1, "syntax error"),
        ("import math\nimport os\ndef probe():\n    pass\n", 2, "import of 'os' is not allowed"),
        ("def probe():\n    from subprocess import run\n", 2, "'subprocess' is not allowed"),
        ("from . import x\ndef probe():\n    pass\n", 1, "relative imports"),
        ("def probe():\n    return __import__('os')\n", 2, "__import__() calls"),
        ("import json\ndef probe(m):\n\n    return m.import_module('os')\n", 4, "dynamic imports"),
        ("def probe():\n    return ().__class__.__base__\n", 2, "'__base__'"),
        ("def probe():\n    x = 1\n    return x.__subclasses__()\n", 3, "'__subclasses__'"),
        ("def probe(f):\n    return f.__globals__\n", 2, "'__globals__'"),
        ("def probe(g):\n    return g.gi_frame.f_back\n", 2, "'f_back'"),
        ("def probe():\n    return __builtins__\n", 2, "'__builtins__'"),
        ("def probe():\n    return eval('1')\n", 2, "'eval'"),
        ("def probe(o, n):\n    return getattr(o, n)\n", 2, "getattr() needs a literal"),
        ("def probe(o):\n    return getattr(o, '__class__')\n", 2, "getattr() needs a literal"),
        ("x = 1\n", 0, "no top-level function"),
        ("def a():\n    pass\n\n\ndef b():\n    pass\n", 5, "none named 'probe'"),
        ("def probe(*args):\n    pass\n", 1, "*args/**kwargs"),
        ("def probe(x: bytes) -> None:\n    pass\n", 1, "cannot be described as JSON"),
        ("def probe(x=[i for i in 'a']):\n    pass\n", 1, "must be a literal"),
    ],
)
def test_refusals_name_line_and_reason(code: str, line: int, reason: str) -> None:
    error = refused(code)
    assert error.line == line, error
    assert reason in error.reason, error


def test_caps_on_size_and_nesting() -> None:
    assert "larger than" in refused("def probe():\n    pass\n" + "#" * 70_000).reason
    nested = (
        "def probe(x):\n"
        + "".join("    " * (i + 1) + "if x:\n" for i in range(45))
        + "    " * 46
        + "pass\n"
    )
    assert "nests" in refused(nested).reason


def test_safe_mode_off_allows_dunders_but_not_imports() -> None:
    validate_function(
        "probe", "def probe():\n    return ().__class__\n", FunctionConfig(safe_mode=False)
    )
    assert "not allowed" in refused("import os\ndef probe():\n    pass\n", safe_mode=False).reason


def test_is_async_must_match_the_definition() -> None:
    with pytest.raises(FunctionValidationError, match="is_async=True"):
        validate_function("probe", "def probe():\n    pass\n", FunctionConfig(), is_async=True)
    checked = validate_function(
        "probe", "async def probe():\n    pass\n", FunctionConfig(is_async=True)
    )
    assert checked.is_async


def test_requires_context_needs_the_parameter_and_hides_it() -> None:
    with pytest.raises(FunctionValidationError, match="no 'context' parameter"):
        validate_function(
            "probe", "def probe(x: int):\n    pass\n", FunctionConfig(requires_context=True)
        )
    checked = validate_function(
        "probe",
        "def probe(x: int, context: dict):\n    pass\n",
        FunctionConfig(requires_context=True),
    )
    assert list(checked.input_schema["properties"]) == ["x"]


# ---- schemas from the signature and docstring ----------------------------------------------


def test_schema_matches_what_tools_derive_for_the_same_signature() -> None:
    checked = validate_function("hypot", HYPOT, FunctionConfig())
    assert checked.entry == "hypot" and checked.imports == ("math",)
    assert checked.description == "The hypotenuse of a right triangle."
    namespace: dict[str, Any] = {}
    exec(compile(HYPOT, "<test>", "exec"), namespace)  # the test's own trusted copy
    tool_schema = Tool("hypot", namespace["hypot"]).parameters
    assert checked.input_schema["properties"] == tool_schema["properties"]
    assert checked.input_schema["required"] == tool_schema["required"] == ["a"]
    assert checked.output_schema == {"type": "object", "additionalProperties": {"type": "number"}}


def test_annotation_mapping() -> None:
    code = """
from typing import Literal, Optional
def probe(a: list[int], b: Optional[str], c: int | None, d: Literal["x", "y"],
          e: tuple[int, str], f: "dict[str, bool]", g=1.5) -> list[dict]:
    pass
"""
    props = validate_function(
        "probe", code, FunctionConfig(allowed_imports=["typing"])
    ).input_schema["properties"]
    assert props["a"] == {"type": "array", "items": {"type": "integer"}}
    assert props["b"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert props["c"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert props["d"] == {"enum": ["x", "y"]}
    assert props["e"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    assert props["f"] == {"type": "object", "additionalProperties": {"type": "boolean"}}
    assert props["g"] == {"default": 1.5}


def test_the_only_function_is_the_entry_whatever_its_name() -> None:
    assert (
        validate_function("stored_name", "def other():\n    pass\n", FunctionConfig()).entry
        == "other"
    )


# ---- versions and the store (no sandbox needed) ---------------------------------------------


def _unavailable_store() -> FunctionStore:
    # A launcher whose bwrap does not exist: the canary fails, so the sandbox never runs code.
    broken = BwrapLauncher(bwrap="/nonexistent/bwrap")
    return FunctionStore(InMemoryFunctionRepository(), Sandbox(launcher=broken))


def test_hash_is_stable_and_covers_code_config_and_schemas() -> None:
    base: dict[str, Any] = {
        "code": HYPOT,
        "entry": "hypot",
        "description": "d",
        "input_schema": {"type": "object"},
        "output_schema": None,
        "config": FunctionConfig(),
    }
    first = FunctionVersion.content_hash(**base)
    assert first == FunctionVersion.content_hash(**dict(base, config=FunctionConfig()))
    assert len(first) == 64
    changes = [
        {"code": HYPOT + "\n"},
        {"entry": "other"},
        {"input_schema": {"type": "object", "properties": {}}},
        {"output_schema": {"type": "number"}},
        {"config": FunctionConfig(timeout=5)},
        {"config": FunctionConfig(memory_limit=256)},
        {"config": FunctionConfig(allowed_imports=["math"])},
    ]
    hashes = {FunctionVersion.content_hash(**dict(base, **change)) for change in changes}
    assert first not in hashes and len(hashes) == len(changes)
    assert first != FunctionVersion.content_hash(**base, python_version="3.12")
    # The allow-list is a set: order does not change the version.
    assert FunctionConfig(allowed_imports=["re", "math"]) == FunctionConfig(
        allowed_imports=["math", "re"]
    )


async def test_store_versions_aliases_and_name_at_hash() -> None:
    store = _unavailable_store()
    v1 = await store.store_function("hypot", HYPOT, description="first")
    again = await store.store_function("hypot", HYPOT, description="first")
    assert again.hash == v1.hash and again.created_at == v1.created_at
    v2 = await store.store_function("hypot", HYPOT.replace("3.0", "4.0"), description="second")
    assert v2.hash != v1.hash
    assert (await store.get_function("hypot")).hash == v2.hash
    assert (await store.get_function(f"hypot@{v1.hash[:8]}")).description == "first"
    assert (await store.get_function(v1.ref)).hash == v1.hash
    assert [v.hash for v in await store.versions("hypot")] == [v1.hash, v2.hash]
    assert [a.name for a in await store.list_functions()] == ["hypot"]
    spec = v2.tool_spec()
    assert spec.name == "hypot" and spec.parameters == v2.input_schema
    assert spec.description == "second" and spec.risk_level == "medium"
    with pytest.raises(FunctionNotFound):
        await store.get_function("hypot@" + "0" * 8)
    with pytest.raises(FunctionNotFound):
        await store.get_function(f"hypot@{v1.hash[:4]}")  # too short to pin
    with pytest.raises(FunctionNotFound):
        await store.get_function("nothing")
    with pytest.raises(pydantic_error()):
        v1.code = "changed"  # type: ignore[misc]


def pydantic_error() -> type[Exception]:
    from pydantic import ValidationError

    return ValidationError


async def test_is_async_comes_from_the_code_unless_declared() -> None:
    store = _unavailable_store()
    version = await store.store_function("later", "async def later() -> int:\n    return 1\n")
    assert version.config.is_async
    with pytest.raises(FunctionValidationError, match="is_async=False"):
        await store.store_function("later", "async def later():\n    pass\n", is_async=False)
    with pytest.raises(FunctionValidationError, match="is_async=True"):
        await store.store_function("now", "def now():\n    pass\n", config={"is_async": True})


async def test_store_refuses_bad_names_and_schemas() -> None:
    store = _unavailable_store()
    with pytest.raises(FunctionValidationError, match="must match"):
        await store.store_function("bad name", HYPOT)
    with pytest.raises(FunctionValidationError, match="input_schema"):
        await store.store_function("hypot", HYPOT, input_schema={"type": "nonsense"})


async def test_unavailable_sandbox_fails_closed_and_is_recorded() -> None:
    store = _unavailable_store()
    await store.store_function("hypot", HYPOT)
    outcome = await store.run_function("hypot", {"a": 3.0}, run_id="r1", agent="a1")
    assert not outcome.ok and outcome.error_kind == "sandbox_unavailable"
    with pytest.raises(FunctionExecutionError) as caught:
        await store.execute_function("hypot", {"a": 3.0})
    assert caught.value.outcome.error_kind == "sandbox_unavailable"
    history = await store.history(function="hypot")
    assert [r.exit_kind for r in history] == ["sandbox_unavailable"] * 2
    assert (await store.history(agent="a1"))[0].run_id == "r1"
    bad = await store.run_function("hypot", {"a": "three"})
    assert bad.error_kind == "invalid_arguments" and "'three' is not of type" in bad.message
    assert (await store.run_function("missing", {})).error_kind == "not_found"


# ---- the seccomp program ----------------------------------------------------------------


def test_seccomp_program_checks_arch_first_and_lists_every_denied_call() -> None:
    program = build_filter("x86_64")
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    assert insns[0] == (0x20, 0, 0, 4)  # load seccomp_data.arch
    assert insns[1][0] == 0x15 and insns[1][3] == AUDIT_ARCH_X86_64
    assert insns[-1] == (0x06, 0, 0, SECCOMP_RET_KILL_PROCESS)
    compared = {k for code, _, _, k in insns if code == 0x15}
    assert set(X86_64_DENIED.values()) <= compared
    assert len(program) < 512
    with pytest.raises(UnsupportedArchitecture):
        build_filter("aarch64")


# ---- round trip through the real sandbox ---------------------------------------------------

needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="needs root and bubblewrap (make install installs it as root)",
)


@pytest.fixture(scope="module")
def live_store() -> Iterator[FunctionStore]:
    sandbox = Sandbox()
    yield FunctionStore(InMemoryFunctionRepository(), sandbox)
    sandbox.close()


@needs_sandbox
async def test_round_trip_through_the_sandbox(live_store: FunctionStore) -> None:
    version = await live_store.store_function("hypot", HYPOT)
    assert await live_store.execute_function("hypot", {"a": 4}) == {"length": 5.0}
    assert await live_store.execute_function(version.ref, {"a": 6, "b": 8}) == {"length": 10.0}
    record = (await live_store.history(function="hypot"))[0]
    assert record.exit_kind == "ok" and record.version_hash == version.hash
    assert record.output_bytes > 0 and record.duration_ms > 0


@needs_sandbox
async def test_async_context_output_schema_and_limits(live_store: FunctionStore) -> None:
    await live_store.store_function(
        "greet",
        "async def greet(name: str, context: dict) -> str:\n    return f\"hi {name} from {context['agent']}\"\n",
        is_async=True,
        config={"requires_context": True},
    )
    outcome = await live_store.run_function("greet", {"name": "ada"}, context={"agent": "a1"})
    assert (await live_store.get_function("greet")).config.is_async
    assert outcome.ok and outcome.value == "hi ada from a1"
    await live_store.store_function("liar", "def liar() -> int:\n    return 'not an int'\n")
    lied = await live_store.run_function("liar", {})
    assert lied.error_kind == "invalid_output"
    await live_store.store_function(
        "spin", "def spin():\n    while True:\n        pass\n", config={"timeout": 0.5}
    )
    with pytest.raises(FunctionExecutionError) as caught:
        await live_store.execute_function("spin", {})
    assert caught.value.outcome.error_kind == "timeout"
    assert caught.value.outcome.limits_hit == ["wall_clock"]
    await live_store.store_function("boom", "def boom(n: int):\n    return 1 // n\n")
    failed = await live_store.run_function("boom", {"n": 0})
    assert failed.error_kind == "error" and "ZeroDivisionError" in failed.message
    assert "line 2" in failed.message
