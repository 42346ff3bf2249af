"""The fault-injection suite: one local stack (emulators + the five services, with the suite's
tools loaded) for the whole package, and the figures table at the end of the run.

``pytest`` runs it at the default size; ``make faults`` (``FAULTS_SCALE=long``) runs it bigger.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults import figures
from tests.faults.harness import FaultStack, scale

FAULTS_DIR = __file__.rsplit("/", 1)[0]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault-injection suite (tests/faults; FAULTS_SCALE=long for make faults)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    positions = [i for i, item in enumerate(items) if str(item.fspath).startswith(FAULTS_DIR)]
    for i in positions:
        items[i].add_marker(pytest.mark.faults)
    # The suite shares one stack. Tests that kill a client in the middle of its Firestore
    # transactions run last, the crash test at the very end: the emulator keeps a dead client's
    # locks for a while (a minute, in scripts' measurements; longer under load), and runs of the
    # tests after them could stall behind them.
    ordered = sorted((items[i] for i in positions), key=_kills_clients)
    for i, item in zip(positions, ordered, strict=True):
        items[i] = item


KILLERS = ("killed_holder", "keeps_locked", "test_graph_faults", "test_crashes")


def _kills_clients(item: pytest.Item) -> int:
    return next((i + 1 for i, name in enumerate(KILLERS) if name in item.nodeid), 0)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    # SIGTERM (a CI timeout, a `kill`) unwinds like Ctrl-C, so the stack below is stopped.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    fault_stack = FaultStack(tmp_path_factory.mktemp("faults-stack")).start()
    figures.record("suite", "scale", scale())
    figures.record("suite", "stack start seconds", round(time.monotonic() - started, 1))
    try:
        yield fault_stack
    finally:
        try:
            woken = fault_stack.woken_runs()
            figures.record("suite", "runs recovered by a wake-up", len(woken))
            figures.record(
                "suite",
                "wake-up recoveries by kind",
                dict(
                    Counter(
                        s.split(" ")[1] + " " + s.split(" ")[2] for v in woken.values() for s in v
                    )
                ),
            )
        finally:
            fault_stack.stop()
        signal.signal(signal.SIGTERM, previous)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    status = "passed" if exitstatus == 0 else f"exit {exitstatus}"
    written = figures.write(status)
    lines = figures.table()
    if not lines:
        return
    terminalreporter.section("fault-injection figures")
    for line in lines:
        terminalreporter.write_line(line)
    if written:
        terminalreporter.write_line(f"written to {written[0]} and {written[1]}")
