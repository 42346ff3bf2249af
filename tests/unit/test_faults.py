"""Crash points: off without the emulator environment, and each forked worker draws its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _run(code: str, **env: str) -> str:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("CLOUDAGENTS_", "FIRESTORE_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


FORKED_DRAWS = """
    import os
    from cloudagents import faults

    def draws():
        return ",".join(f"{faults._RANDOM.random():.6f}" for _ in range(3))

    children = []
    for _ in range(3):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, draws().encode())
            os._exit(0)
        os.close(write)
        children.append(os.read(read, 1000).decode())
        os.waitpid(pid, 0)
    print("\\n".join(children))
"""


def test_forked_workers_draw_different_sequences() -> None:
    out = _run(FORKED_DRAWS, CLOUDAGENTS_CRASH_SEED="7").split()
    assert len(out) == 3
    assert len(set(out)) == 3, out


def test_crash_points_are_off_without_the_emulator_environment() -> None:
    code = """
        from cloudagents import faults
        faults.crash_point("executor.after_commit")
        print("alive", faults._ACTIVE)
    """
    assert _run(code, CLOUDAGENTS_CRASH_POINTS="executor.after_commit=1").strip() == "alive {}"


def test_a_crash_point_at_probability_one_exits_137() -> None:
    code = "from cloudagents import faults; faults.crash_point('executor.after_commit')"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={
            **os.environ,
            "CLOUDAGENTS_CRASH_POINTS": "executor.after_commit=1",
            "FIRESTORE_EMULATOR_HOST": "localhost:1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 137
    assert "injected crash at executor.after_commit" in done.stderr
