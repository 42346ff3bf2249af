"""A Sandbox's host directory (the runner copy) does not outlive it."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from cloudagents.sandbox.sandbox import Sandbox


def test_the_runner_directory_goes_with_the_sandbox() -> None:
    sandbox = Sandbox()
    workdir = sandbox._runner_path().parent
    assert (workdir / "runner.py").is_file()
    del sandbox
    gc.collect()
    assert not workdir.exists()


def test_the_runner_directory_goes_when_the_process_exits_without_close() -> None:
    code = (
        "from cloudagents.sandbox.sandbox import Sandbox\n"
        "s = Sandbox()\n"
        "print(s._runner_path().parent)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    workdir = out.stdout.strip()
    assert workdir.startswith("/") and "cloudagents-sandbox-" in workdir
    assert not Path(workdir).exists()
