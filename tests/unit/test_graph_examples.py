"""The seed 001 examples run as scripts and print their results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


def run(name: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_simple_workflow_prints_the_report() -> None:
    assert run("simple_workflow.py") == ["Report with 1 findings"]


def test_conditional_workflow_loops_until_approved() -> None:
    lines = run("conditional_workflow.py")
    assert lines[0] == "Published after 3 reviews: section 1, section 2, section 3"
    assert lines[1].startswith("status=completed supersteps=7 graph=")
