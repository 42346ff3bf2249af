"""Swagger UI at ``/docs`` in headless Chromium, against the local stack's api: it renders every
operation of the generated document under the api's strict policy (no CSP violation, no
JavaScript error, no request to another origin), and "Try it out" with the bearer token calls
the api. Screenshot: ``bench-results/ui/api-docs.png``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cloudagents.local.stack import StackState
from cloudagents.runtime.api import ROUTES
from tests.integration.test_ui_browser import browser, new_page, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.integration
__all__ = ["browser"]  # the fixture, used by name


def test_swagger_ui_renders_the_document_and_tries_an_operation(
    browser: Browser, stack_state: StackState
) -> None:
    assert stack_state.api_token
    page = new_page(browser, stack_state)
    requested: list[str] = []
    console: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
    page.goto("/docs")
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() == len(ROUTES)
    assert page.locator("#operations-default-post_runs").is_visible()
    assert page.locator("#operations-default-get_runs_run_id_events_ws").is_visible()

    page.click("button.authorize")
    page.fill(".modal-ux input", stack_state.api_token)
    page.click(".modal-ux .auth-btn-wrapper button.authorize")
    page.click(".modal-ux button.btn-done")
    operation = page.locator("#operations-default-get_agents")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip().startswith("200")
    assert '"agents"' in operation.locator(".live-responses-table .microlight").first.inner_text()
    screenshot(page, "api-docs.png")

    outside = [u for u in requested if not u.startswith((stack_state.api_url, "data:"))]
    assert outside == [], outside
    refused = [m for m in console if "Content Security Policy" in m or "Refused" in m]
    assert refused == [], refused
    errors = page.js_errors  # type: ignore[attr-defined]
    page.context.close()
    assert errors == [], errors
