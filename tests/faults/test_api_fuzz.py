"""schemathesis against the running api's ``GET /openapi.json``: no 5xx on generated input.

Every operation of the document gets positive (schema-valid) and negative (schema-violating)
cases, sent with the stack's bearer token; a case fails if the api answers 5xx or the request
errors out. ``schemathesis`` and ``hypothesis`` are dev dependencies (``uv.lock``).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from tests.faults import figures
from tests.faults.harness import FaultStack, sized

EXAMPLES = sized(25, 150)  # per operation and generation mode
SECTION = "api fuzz (schemathesis)"


class Fuzz:
    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.base_url = base_url
        self.headers = headers
        self.cases = 0
        self.codes: Counter[int] = Counter()
        self.failures: list[dict[str, Any]] = []

    def operation(self, operation: Any, mode: Any) -> None:
        try:
            strategy = operation.as_strategy(generation_mode=mode)
        except Exception:  # nothing of this mode to generate for the operation
            figures.add(SECTION, f"strategies not built ({mode.value})", 1)
            return

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            self.send(case, operation.label, mode.value)

        try:
            run()
        except Unsatisfiable:  # e.g. no schema-violating input exists for a bodiless GET
            figures.add(SECTION, f"operations with no {mode.value} cases", 1)

    def send(self, case: Any, label: str, mode: str) -> None:
        self.cases += 1
        try:
            response = case.call(base_url=self.base_url, headers=self.headers, timeout=30)
        except Exception as exc:
            self.failures.append({"operation": label, "mode": mode, "error": repr(exc)[:300]})
            return
        self.codes[response.status_code] += 1
        if response.status_code >= 500:
            self.failures.append(
                {
                    "operation": label,
                    "mode": mode,
                    "status": response.status_code,
                    "body": response.text[:300],
                    "curl": case.as_curl_command(headers=self.headers)[:500],
                }
            )


def test_start_run_with_a_slash_in_agent_id_is_a_client_error(stack: FaultStack) -> None:
    """Found by schemathesis: ``POST /runs`` with an ``agent_id`` holding ``/`` was a 500."""
    assert stack.api is not None
    response = stack.api.post("/runs", json={"agent_id": "a/b", "message": "hi"})
    assert 400 <= response.status_code < 500, response.status_code


@pytest.mark.timeout(1200)
def test_no_server_error_on_generated_input(stack: FaultStack) -> None:
    assert stack.state is not None
    base_url = stack.state.api_url
    auth = {"Authorization": f"Bearer {stack.state.api_token}"}
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=auth, timeout=30)
    started = time.monotonic()
    fuzz = Fuzz(base_url, auth)
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzz.operation(operation, mode)
    figures.record(SECTION, "operations", operations)
    figures.record(SECTION, "cases run", fuzz.cases)
    figures.record(SECTION, "cases failed (5xx or no answer)", len(fuzz.failures))
    figures.record(SECTION, "status codes", dict(sorted(fuzz.codes.items())))
    figures.record(SECTION, "seconds", round(time.monotonic() - started, 1))
    if fuzz.failures:
        figures.record(SECTION, "first failures", fuzz.failures[:3])
    assert operations >= 10
    assert fuzz.failures == [], fuzz.failures[:5]
