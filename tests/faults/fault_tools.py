"""Tools the services load during the fault-injection suite.

The stack started by ``tests/faults/conftest.py`` runs every service with
``CLOUDAGENTS_TOOL_MODULES=cloudagents.builtin_tools,tests.faults.fault_tools`` and the repo root
on ``PYTHONPATH``, so agents in the suite may call these. Each execution of ``charge_card`` and
``rate_probe`` is recorded in the Firestore collection ``fault_ledger`` (one document per
execution, with the call's ``idempotency_key()``), which is how the tests count executions: a
non-idempotent tool run twice for one call shows up as two ledger documents with the same key.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from typing import Any

from cloudagents.tools import idempotency_key, tool

LEDGER = "fault_ledger"
BIG_OUTPUT_BYTES = 20_000
_client_lock = threading.Lock()
_client: Any = None


def _db() -> Any:
    global _client
    with _client_lock:
        if _client is None:
            from google.cloud import firestore

            _client = firestore.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
        return _client


def _record(tool_name: str, **fields: Any) -> None:
    """One ledger document per execution (auto id: two executions never overwrite)."""
    _db().collection(LEDGER).add(
        {
            "tool": tool_name,
            "key": idempotency_key(),
            "at": time.time(),
            "pid": os.getpid(),
            **fields,
        }
    )


@tool(risk_level="medium", idempotent=False, timeout_seconds=10)
def charge_card(customer: str, amount_cents: int) -> dict[str, Any]:
    """Charge a customer's card (a side effect that must never happen twice for one call).

    Args:
        customer: the customer id
        amount_cents: the amount to charge, in cents
    """
    _record("charge_card", customer=customer, amount_cents=amount_cents)
    return {"charged": amount_cents, "customer": customer, "status": "ok"}


@tool
def rate_probe(tag: str) -> str:
    """Record that a rate-limited tool ran (idempotent; each execution lands in the ledger).

    Args:
        tag: anything
    """
    _record("rate_probe", tag=tag)
    return f"probe {tag} ok"


@tool
def big_output(n: int) -> str:
    """Return about 20 KB of deterministic text for step ``n``.

    Args:
        n: the step number, mixed into the text
    """
    seed = hashlib.sha256(str(n).encode()).hexdigest()
    line = f"row {n:05d} {seed} " + "x" * 40 + "\n"
    text = (line * (BIG_OUTPUT_BYTES // len(line) + 1))[:BIG_OUTPUT_BYTES]
    return text


@tool(risk_level="medium", idempotent=False, timeout_seconds=10)
def slow_charge(customer: str, amount_cents: int, seconds: float) -> dict[str, Any]:
    """Charge a card through a slow payment provider (not idempotent).

    Args:
        customer: the customer id
        amount_cents: the amount to charge, in cents
        seconds: how long the provider takes
    """
    time.sleep(seconds)
    _record("slow_charge", customer=customer, amount_cents=amount_cents)
    return {"charged": amount_cents, "customer": customer, "status": "ok"}


@tool(timeout_seconds=3600)
async def hang(seconds: float) -> str:
    """A tool that does not return for a long time (a provider that never answers).

    Args:
        seconds: how long it hangs
    """
    await asyncio.sleep(seconds)
    return "finally"


@tool(timeout_seconds=3600)
def gate(flag: str, seconds: float) -> str:
    """A tool that returns once the test opens its gate (creates the file ``flag``), or after
    ``seconds``: a test orders what the tool's result meets after it returns.

    Args:
        flag: the path of the file that opens the gate
        seconds: the longest it waits
    """
    deadline = time.monotonic() + seconds
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "opened" if os.path.exists(flag) else "timed out"
