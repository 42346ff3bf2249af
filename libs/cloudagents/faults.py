"""Crash points for the reliability suite: die at a named line, as a SIGKILL would.

Off unless ``CLOUDAGENTS_CRASH_POINTS`` is set *and* the process runs against the emulators
(``FIRESTORE_EMULATOR_HOST``), so production can never crash itself on purpose. The value is a
comma list of ``point=probability`` (e.g. ``executor.after_commit=0.2``); ``CLOUDAGENTS_CRASH_SEED``
makes the draws repeatable per process: a forked process (a gunicorn worker) re-seeds with the seed
and its pid, so workers forked from one master do not all draw the same sequence.
"""

from __future__ import annotations

import os
import random
import sys

POINTS = (
    "executor.after_model_call",  # the model was called, nothing committed
    "executor.after_commit",  # the step is committed, its outbox not yet published
    "invoker.after_tool",  # the tool ran, its result not yet recorded
    "invoker.after_finish",  # the result is recorded, the wake-up not yet published
    "snapshotter.after_write",  # the object is written, the pointer not yet recorded
    "broker.after_claim",  # the offer is claimed, the target run not yet started
    "approvals.after_decide",  # an approval is decided, its tool call not yet dispatched
)


def _parse(spec: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, probability = item.partition("=")
        if name not in POINTS:
            raise ValueError(f"unknown crash point {name!r}; known: {', '.join(POINTS)}")
        points[name] = float(probability or "1")
    return points


_SPEC = os.environ.get("CLOUDAGENTS_CRASH_POINTS", "")
_ACTIVE = _parse(_SPEC) if _SPEC and os.environ.get("FIRESTORE_EMULATOR_HOST") else {}
_SEED = os.environ.get("CLOUDAGENTS_CRASH_SEED")
_RANDOM = random.Random(_SEED)


def _reseed_after_fork() -> None:
    _RANDOM.seed(f"{_SEED}:{os.getpid()}" if _SEED is not None else None)


os.register_at_fork(after_in_child=_reseed_after_fork)


def crash_point(name: str) -> None:
    """Exit at once, without cleanup, with the configured probability for ``name``."""
    probability = _ACTIVE.get(name)
    if probability and _RANDOM.random() < probability:
        sys.stderr.write(f"cloudagents: injected crash at {name}\n")
        sys.stderr.flush()
        os._exit(137)
