"""Uid slots: concurrent calls never share a uid, and a slot stays usable call after call."""

from __future__ import annotations

import asyncio
import signal

from cloudagents.sandbox import Sandbox, SandboxLimits, UidPool
from cloudagents.sandbox.sandbox import _Capture, _interpret

UID_PROBE = """
import os, time
def probe():
    time.sleep(0.2)
    return os.getuid()
"""


async def test_concurrent_calls_use_distinct_uids(sandbox: Sandbox) -> None:
    results = await asyncio.gather(
        *(sandbox.run(UID_PROBE, "probe", {}, allowed_imports=["os", "time"]) for _ in range(8))
    )
    assert all(r.ok for r in results), results
    uids = [r.value for r in results]
    assert set(uids) <= set(sandbox.uids)
    # Four slots, eight calls of 0.2 s: two waves, each wave on four different uids.
    assert len(set(uids)) == len(sandbox.uids)


async def test_a_slot_survives_more_calls_than_its_process_limit(sandbox: Sandbox) -> None:
    del sandbox  # only for its skip when not root or without bubblewrap
    # Each call leaves bwrap's PID-1 helper as a zombie of the slot uid until someone reaps it;
    # unreaped, they would exhaust RLIMIT_NPROC (8 here) within a few calls.
    box = Sandbox(pool=UidPool(61200, size=1))
    status = await box.check()
    assert status.available, status.reason
    limits = SandboxLimits(max_processes=8)
    try:
        for _ in range(12):
            result = await box.run("def probe():\n    return 1\n", "probe", {}, limits=limits)
            assert result.ok, result
    finally:
        box.close()


def _capture(data: bytes) -> _Capture:
    capture = _Capture(limit=1024)
    capture.data += data
    capture.total = len(data)
    return capture


def test_interpretation_of_exits() -> None:
    limits = SandboxLimits(timeout_s=2)
    empty = _capture(b"")

    def interpret(returncode: int | None, out: _Capture = empty, duration_ms: float = 10.0):
        return _interpret(
            returncode=returncode,
            out=out,
            err=empty,
            timed_out=False,
            limits=limits,
            duration_ms=duration_ms,
        )

    xcpu = interpret(128 + signal.SIGXCPU, duration_ms=2000)
    assert xcpu.error_kind == "timeout" and xcpu.limits_hit == ["cpu"]
    assert interpret(128 + signal.SIGKILL, duration_ms=3000).error_kind == "timeout"
    early_kill = interpret(128 + signal.SIGKILL, duration_ms=50)
    assert early_kill.error_kind == "error" and "signal 9" in early_kill.message
    ok = interpret(0, _capture(b'{"ok": true, "value": [1, 2]}\n'))
    assert ok.ok and ok.value == [1, 2]
    blocked = interpret(
        0, _capture(b'{"ok": false, "kind": "import_not_allowed", "message": "m"}\n')
    )
    assert blocked.error_kind == "import_not_allowed" and blocked.message == "m"
    forged = interpret(0, _capture(b'{"ok": false, "kind": "sandbox_unavailable"}\n'))
    assert forged.error_kind == "error"  # the code cannot claim the sandbox is down
    garbage = interpret(1, _capture(b"not json"))
    assert garbage.error_kind == "error" and "exit code 1" in garbage.message


async def test_pools_in_two_processes_never_hand_out_one_uid_at_once() -> None:
    """Every service process has a pool over the same uids: a uid's host-wide lock keeps two
    pools (two processes) from running calls as one uid at the same time."""
    first, second = UidPool(61300, size=2), UidPool(61300, size=2)
    got: list[int] = []
    release = asyncio.Event()

    async def third() -> None:
        async with second.slot() as uid:
            got.append(uid)
            await release.wait()

    async with first.slot() as a, second.slot() as b:
        assert a != b
        task = asyncio.create_task(third())
        await asyncio.sleep(0.2)
        assert got == []  # both uids are taken host-wide: the third call waits
    await asyncio.sleep(0.5)
    assert got and got[0] in (a, b)
    release.set()
    await task
