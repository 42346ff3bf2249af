"""The seed 001 examples run as scripts and print their results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
NAMES = ("simple_workflow.py", "conditional_workflow.py", "llm_agents.py")


@pytest.fixture(scope="module")
def outputs() -> dict[str, list[str]]:
    # Both scripts start at once: most of each one's time is importing cloudagents.
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(EXAMPLES / name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in NAMES
    }
    found: dict[str, list[str]] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        found[name] = stdout.splitlines()
    return found


def test_simple_workflow_prints_the_report(outputs: dict[str, list[str]]) -> None:
    assert outputs["simple_workflow.py"] == ["Report with 1 findings"]


def test_conditional_workflow_loops_until_approved(outputs: dict[str, list[str]]) -> None:
    lines = outputs["conditional_workflow.py"]
    assert lines[0] == "Published after 3 reviews: section 1, section 2, section 3"
    assert lines[1].startswith("status=completed supersteps=7 graph=")


def test_llm_agents_run_agent_nodes_with_tools(outputs: dict[str, list[str]]) -> None:
    assert outputs["llm_agents.py"] == [
        "findings: ['Cloud Run scales to zero', 'Pub/Sub delivers at least once']",
        "minutes saved: 30.0",
        "draft: Serverless agents scale to zero and survive redelivery. (sources: search)",
        "revisions=2 writer tokens=80",
        "research-1.0000-researcher: SATISFIED, task 0000-researcher of research-1",
        "research-1.0001-analyst: SATISFIED, task 0001-analyst of research-1",
    ]
