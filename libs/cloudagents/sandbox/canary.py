"""The start-up canary: a probe run through the real launcher whose answers prove the boundary.

If any answer is wrong the sandbox is unavailable, and every call fails closed.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

CANARY_ENTRY = "canary"
CANARY_IMPORTS = ("os", "socket")
CANARY_CODE = '''
import os
import socket


def canary() -> dict:
    """Report what the sandboxed process can see of itself."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    try:
        with open("/proc/1/environ", "rb") as environ:
            first = [item.decode(errors="replace") for item in environ.read().split(b"\\0") if item]
    except OSError:
        first = []
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "pid": os.getpid(),
        "env": sorted(os.environ),
        "proc1_environ": first,
        "seccomp": fields.get("Seccomp", ""),
        "no_new_privs": fields.get("NoNewPrivs", ""),
        "cap_eff": fields.get("CapEff", ""),
        "interfaces": [name for _, name in socket.if_nameindex()],
    }
'''
# PWD comes from bwrap's --chdir, LC_CTYPE from CPython's C-locale coercion (PEP 538).
_ALLOWED_ENV = {"PWD", "LC_CTYPE"}


def canary_problems(report: Any, uids: Collection[int]) -> list[str]:
    """What is wrong with the canary's report; empty when the boundary holds."""
    if not isinstance(report, dict):
        return [f"canary returned {type(report).__name__}, not a report"]
    problems: list[str] = []
    if report.get("uid") not in uids or report.get("gid") not in uids:
        ids = f"{report.get('uid')}/{report.get('gid')}"
        problems.append(f"uid/gid not dropped to a slot uid: {ids}")
    if report.get("groups"):
        problems.append(f"supplementary groups kept: {report.get('groups')}")
    if set(report.get("env", ["?"])) - _ALLOWED_ENV:
        problems.append(f"environment not empty: {report.get('env')}")
    if report.get("proc1_environ"):
        problems.append("bwrap's own environment (/proc/1/environ) is not empty")
    if report.get("seccomp") != "2":
        problems.append(f"seccomp filter not active (Seccomp: {report.get('seccomp')!r})")
    if report.get("no_new_privs") != "1":
        problems.append("no_new_privs not set")
    if report.get("cap_eff") != "0000000000000000":
        problems.append(f"capabilities kept: {report.get('cap_eff')}")
    if set(report.get("interfaces", ["?"])) - {"lo"}:
        problems.append(f"network interfaces visible: {report.get('interfaces')}")
    pid = report.get("pid")
    if not isinstance(pid, int) or pid > 10:
        problems.append(f"no pid namespace (pid {pid})")
    return problems
