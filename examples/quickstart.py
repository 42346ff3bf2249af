"""Seed 000's Quick Start, unchanged but for the import (``agisa_sac.gcp`` -> ``cloudagents.gcp``).

Against the local emulators: start them (``make up``, or ``python -m cloudagents.local.emulators``)
and export the ``*_EMULATOR_HOST`` variables they print, then ``python examples/quickstart.py``.
The topics and the bucket are created on the emulators on first use. Without the variables it
runs against real GCP with your Application Default Credentials (resources from Terraform).
"""

import json
import os
from pathlib import Path

# Reading the emulator env if present: `make up` saves what it started, with its environment, to
# .local/state.json (or $CLOUDAGENTS_STATE); use it unless the emulator variables are already set.
_STATE = Path(
    os.environ.get("CLOUDAGENTS_STATE", Path(__file__).resolve().parents[1] / ".local/state.json")
)
if "PUBSUB_EMULATOR_HOST" not in os.environ and _STATE.is_file():
    for _key, _value in json.loads(_STATE.read_text()).get("env", {}).items():
        if _key.endswith("_EMULATOR_HOST"):
            os.environ.setdefault(_key, _value)

# --- seed 000 Quick Start, verbatim from here but for the import --------------------------------
import asyncio  # noqa: E402

from cloudagents.gcp import Budget, DistributedAgent  # noqa: E402


async def llm_client(request):
    """Your LLM client implementation"""
    # Call OpenAI, Anthropic, or other LLM provider
    return {"done": True, "content": {"answer": "Response"}, "usage": {"total_tokens": 100}}


async def main():
    # Create agent with budget
    agent = DistributedAgent(
        agent_id="my-agent",
        instructions="You are a helpful assistant.",
        model="gpt-4",
        project_id="my-gcp-project",
        workspace_topic="my-workspace",
        budget=Budget(max_tokens_per_run=10000),
    )

    # Run the agent
    result = await agent.run(message="What is 2+2?", context={"llm_client": llm_client})

    print(f"Result: {result.exit.value}")
    print(f"Payload: {result.payload}")


asyncio.run(main())
