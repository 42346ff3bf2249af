"""The script run inside the sandbox: ``python3 -I -S /sandbox/runner.py /sandbox/function.py``.

It runs under the OS boundary, never in a service process, and uses the standard library only.
Order matters: the modules the runner itself needs are imported first, then the import hook is
installed, then the user's code is compiled and executed. The request (entry name, JSON
arguments, allowed imports, result cap) arrives as one JSON document on stdin; exactly one JSON
line goes to the original stdout. The user's own prints are redirected to stderr (fd 2), so they
can neither corrupt nor forge that line by accident.

The hook is a policy, not the boundary: CPython cannot stop code that walks the object graph to
the real ``__import__``; the namespaces, seccomp filter, uid and rlimits around it hold anyway.
"""

from __future__ import annotations
import __future__

import builtins
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

RUNNER_FILE = os.path.abspath(__file__)
STDLIB_PREFIX = os.path.dirname(os.path.dirname(os.path.abspath(json.__file__))) + os.sep


class ImportNotAllowed(ImportError):
    """Raised by the hook; the runner reports it as ``import_not_allowed``."""


def _trusted_caller(filename: str) -> bool:
    # Imports made by the standard library on its own behalf (``re`` importing ``enum``) and by
    # this runner are not the user's; everything else, including exec'd strings, is checked.
    return (
        filename == RUNNER_FILE
        or filename.startswith(STDLIB_PREFIX)
        or filename.startswith("<frozen ")
    )


def install_import_hook(allowed: frozenset[str]) -> None:
    """Replace ``builtins.__import__`` with one that enforces the top-level allow-list."""
    real_import = builtins.__import__

    def guarded_import(
        name: str,
        globals: Mapping[str, object] | None = None,
        locals: Mapping[str, object] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        # The caller's frame, not the ``globals`` argument: that one the caller can forge.
        caller = sys._getframe(1).f_code.co_filename
        if not _trusted_caller(caller):
            top = name.partition(".")[0]
            if level != 0 or top not in allowed:
                shown = ", ".join(sorted(allowed)) or "none"
                raise ImportNotAllowed(f"import of {name!r} is not allowed (allowed: {shown})")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import


def _run_entry(entry: Callable[..., Any], args: dict[str, Any]) -> Any:
    value = entry(**args)
    if hasattr(value, "__await__"):
        import asyncio  # the runner's own import: trusted by the hook

        async def _await() -> Any:
            return await value

        value = asyncio.run(_await())
    return value


def _error(kind: str, exc: BaseException) -> dict[str, Any]:
    # Walk the traceback by hand: traceback.extract_tb over a million recursion frames costs
    # seconds and memory the call may no longer have.
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename != RUNNER_FILE:
            where = f" (line {tb.tb_lineno} in {tb.tb_frame.f_code.co_name})"
        tb = tb.tb_next
    return {"ok": False, "kind": kind, "message": f"{type(exc).__name__}: {exc}{where}"[:2000]}


def execute(code_path: str, request: dict[str, Any]) -> dict[str, Any]:
    """Compile and run the user's module, then call its entry function with the arguments."""
    install_import_hook(frozenset(request.get("allowed_imports", ())))
    namespace: dict[str, Any] = {"__name__": "__cloudagents_function__", "__file__": code_path}
    try:
        with open(code_path, encoding="utf-8") as source:
            # Annotations stay strings, as the validator read them: never evaluated, so
            # ``-> List[str]`` needs no ``typing`` import (which the allow-list may not have).
            code = compile(
                source.read(),
                code_path,
                "exec",
                flags=__future__.annotations.compiler_flag,
                dont_inherit=True,
            )
        exec(code, namespace)
        entry = namespace.get(request["entry"])
        if not callable(entry):
            return {"ok": False, "kind": "error", "message": f"no function {request['entry']!r}"}
        value = _run_entry(entry, dict(request.get("args", {})))
    except ImportNotAllowed as exc:
        return _error("import_not_allowed", exc)
    except MemoryError as exc:
        return _error("memory", exc)
    except RecursionError as exc:
        return _error("error", exc)
    except BaseException as exc:  # the user's failure (SystemExit included) is the result
        return _error("error", exc)
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return {"ok": False, "kind": "error", "message": f"result is not JSON: {exc}"}
    limit = int(request.get("max_result_bytes", 256 * 1024))
    if len(encoded.encode("utf-8")) > limit:
        return {
            "ok": False,
            "kind": "output_too_large",
            "message": f"result is {len(encoded.encode('utf-8'))} bytes; the limit is {limit}",
        }
    return {"ok": True, "value": value}


def main() -> None:
    result_fd = os.dup(1)
    os.dup2(2, 1)  # user prints, even os.write(1, ...), land on stderr
    sys.stdout = sys.stderr
    try:
        request = json.loads(sys.stdin.buffer.read())
    except ValueError as exc:
        outcome: dict[str, Any] = {"ok": False, "kind": "error", "message": f"bad request: {exc}"}
    else:
        outcome = execute(sys.argv[1], request)
    line = (json.dumps(outcome, ensure_ascii=False) + "\n").encode("utf-8")
    while line:
        line = line[os.write(result_fd, line) :]
    sys.stderr.flush()
    # Skip interpreter shutdown: no atexit hooks or lingering threads of the user's run after this.
    os._exit(0)


if __name__ == "__main__":
    main()
