"""The run viewer (``/ui``) and seed 004's JavaScript clients in headless Chromium, against the
local stack's api (uvicorn serving ``services/api/main.py:asgi_app`` on the emulators).

The browser is Debian's ``chromium`` (``make install`` installs it when run as root), driven by
Playwright for Python through ``executable_path``: no ``playwright install`` download. The tests
skip, saying so, only when no chromium binary is on this machine. Screenshots go to
``bench-results/ui/`` (described in docs/streaming.md).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from cloudagents.local.stack import StackState
from cloudagents.runtime.ui import viewer_link
from tests.integration.conftest import register, wait_for_run

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "bench-results" / "ui"
SEED_004 = ROOT.parent / "shared" / "seeds" / "004_58c9cb7f3227386f.txt"
REPLY = "Six times seven is forty-two; the calculator agrees, to the digit. " * 2
# Prices per million tokens, so the run has a cost to show: 600+600 tokens, then 400+400.
PRICE_IN, PRICE_OUT = 3.0, 15.0
EXPECTED_COST = (600 * PRICE_IN + 600 * PRICE_OUT + 400 * PRICE_IN + 400 * PRICE_OUT) / 1e6

# Seed 004's JavaScript client examples, verbatim (checked against the seed file when present).
SEED_WEBSOCKET = """const ws = new WebSocket('ws://localhost:4000/agent-stream/abc-123');

ws.onmessage = (event) => {
  const agentEvent = JSON.parse(event.data);

  switch (agentEvent.eventType) {
    case 'content_chunk':
      appendToResponse(agentEvent.content);
      break;
    case 'thinking':
      showThinkingIndicator(agentEvent.status);
      break;
    case 'completed':
      hideThinkingIndicator();
      showFinalResponse(agentEvent.final_response);
      break;
    case 'failed':
      showError(agentEvent.error);
      break;
  }
};"""
SEED_EVENT_SOURCE = """const eventSource = new EventSource('/agent-stream/abc-123');

eventSource.onmessage = (event) => {
  const agentEvent = JSON.parse(event.data);
  handleAgentEvent(agentEvent);
};

eventSource.onerror = (error) => {
  console.error('SSE error:', error);
  // Automatically reconnects
};"""
# The functions the seed's snippets call, as an application page would define them.
SEED_APP_FUNCTIONS = """
window.seen = {chunks: [], thinking: [], hidden: 0, finals: [], errors: [], sse: [], sseErrors: 0};
function appendToResponse(content) { seen.chunks.push(content); }
function showThinkingIndicator(status) { seen.thinking.push(status); }
function hideThinkingIndicator() { seen.hidden += 1; }
function showFinalResponse(text) { seen.finals.push(text); }
function showError(error) { seen.errors.push(error); }
function handleAgentEvent(agentEvent) { seen.sse.push(agentEvent); }
// The test's own watch on the sockets the snippets open: how they close, how often they fail.
window.WebSocket = class extends WebSocket {
  constructor(...args) { super(...args); this.addEventListener('close', e => { seen.wsClose = e.code; }); }
};
window.EventSource = class extends EventSource {
  constructor(...args) { super(...args); this.addEventListener('error', () => { seen.sseErrors += 1; }); }
};
"""


def chromium_path() -> str | None:
    candidates = (
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    )
    return next((c for c in candidates if c and Path(c).exists()), None)


def slow_agent(agent_id: str, delay: float = 0.0) -> dict[str, Any]:
    """A calculator call, then a ~140-character reply streamed in 16-character pieces over
    ``delay`` seconds."""
    return {
        "id": agent_id,
        "instructions": "You do arithmetic with the calculator.",
        "model": {
            "provider": "scripted",
            "name": "scripted-slow",
            "input_price_per_million": PRICE_IN,
            "output_price_per_million": PRICE_OUT,
            "script": [
                {
                    "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}],
                    "total_tokens": 1200,
                },
                {"content": REPLY, "delay_seconds": delay, "total_tokens": 800},
            ],
        },
        "tools": ["calculator"],
    }


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        pytest.skip(
            "no chromium binary (/usr/lib/chromium/chromium or chromium on PATH): `make install` "
            "installs Debian's chromium when run as root; the browser tests need it"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True)
        yield launched
        launched.close()


def new_page(browser: Browser, stack_state: StackState, **options: Any) -> Page:
    context = browser.new_context(
        base_url=stack_state.api_url, viewport={"width": 1280, "height": 900}, **options
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # type: ignore[attr-defined]
    return page


@pytest.fixture
def page(browser: Browser, stack_state: StackState) -> Iterator[Page]:
    opened = new_page(browser, stack_state)
    yield opened
    errors = opened.js_errors  # type: ignore[attr-defined]
    opened.context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def sign_in(page: Page, token: str | None) -> None:
    assert token
    page.goto("/ui")
    page.fill("#login-token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#runs-view:not([hidden])")


def screenshot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def start(api: httpx.Client, agent_id: str, message: str = "What is 6*7?") -> str:
    started = api.post("/runs", json={"agent_id": agent_id, "message": message})
    assert started.status_code == 202, started.text
    return str(started.json()["run_id"])


def stored_events(api: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = api.get(f"/runs/{run_id}/events").json()["events"]
    return events


# ---- the viewer ------------------------------------------------------------------------------


def test_the_page_and_its_files_come_from_the_api_without_a_token(stack_state: StackState) -> None:
    with httpx.Client(base_url=stack_state.api_url, timeout=30.0) as anonymous:
        page = anonymous.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for asset, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
            assert f'"/ui/{asset}"' in page.text
            response = anonymous.get(f"/ui/{asset}")
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        assert anonymous.get("/ui/secrets.txt").status_code == 404
        assert anonymous.get("/runs").status_code == 401  # the data still needs the token


def test_a_wrong_token_is_refused_and_the_page_asks_again(page: Page) -> None:
    page.goto("/ui")
    page.fill("#login-token", "not-a-token-of-this-api")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:has-text('refused the token')")
    assert page.is_visible("#login-view") and not page.is_visible("#runs-view")
    assert page.evaluate("sessionStorage.getItem('cloudagents.token')") is None
    screenshot(page, "sign-in-refused.png")


def test_the_link_cloudagents_up_prints_signs_in_and_drops_the_token_from_the_address(
    page: Page, stack_state: StackState
) -> None:
    assert stack_state.api_token
    page.goto(
        viewer_link(stack_state.api_url, stack_state.api_token).removeprefix(stack_state.api_url)
    )
    page.wait_for_selector("#runs-view:not([hidden])")
    assert stack_state.api_token not in page.url and page.url.endswith("/ui#/")
    assert page.evaluate("sessionStorage.getItem('cloudagents.token')") == stack_state.api_token
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["cloudagents_token"]["value"] == stack_state.api_token
    assert cookies["cloudagents_token"]["sameSite"] == "Strict"
    page.click("#logout")
    page.wait_for_selector("#login-view:not([hidden])")
    assert "cloudagents_token" not in {c["name"] for c in page.context.cookies()}


def test_a_run_started_from_the_page_streams_to_its_end_and_shows_the_result(
    page: Page, api: httpx.Client, stack_state: StackState
) -> None:
    # 3 s: a feed that joins while the run waits for its tool looks again within 2 s
    # (docs/streaming.md, the idle rule), so the page sees the reply while it is written.
    register(api, slow_agent("ui-slow", delay=3.0))
    sign_in(page, stack_state.api_token)
    page.click("#nav-new")
    page.wait_for_selector("#start-agent option[value=ui-slow]", state="attached")
    page.select_option("#start-agent", "ui-slow")
    page.fill("#start-message", "What is 6*7?")
    page.click("#start-submit")
    page.wait_for_url("**/ui#/runs/*")
    run_id = page.text_content("#run-id")
    assert run_id and run_id.startswith("run-")

    page.wait_for_selector("#events li[data-type=content_chunk]")
    assert api.get(f"/runs/{run_id}").json()["result"] is None  # still streaming its reply
    screenshot(page, "run-streaming.png")

    page.wait_for_selector("#run-view[data-stream-state=completed]")
    page.wait_for_selector("#result-section:not([hidden])")
    page.wait_for_selector("#run-view[data-status=finished]")
    assert page.text_content("#result-text") == REPLY
    assert page.text_content("#live-response") == REPLY
    assert page.get_attribute("#result-section", "data-exit") == "SATISFIED"
    # Every stored event reached the page once, in order.
    shown = page.eval_on_selector_all("#events li", "items => items.map(i => i.dataset.id)")
    assert shown == [e["id"] for e in stored_events(api, run_id)]
    assert wait_for_run(api, run_id)["result"]["exit"] == "SATISFIED"
    screenshot(page, "run-finished.png")


def test_the_run_page_shows_transcript_tool_calls_tokens_and_cost(
    page: Page, api: httpx.Client, stack_state: StackState
) -> None:
    register(api, slow_agent("ui-calc"))
    run_id = start(api, "ui-calc")
    run = wait_for_run(api, run_id)
    transcript = api.get(f"/runs/{run_id}/messages").json()
    sign_in(page, stack_state.api_token)
    page.goto(f"/ui#/runs/{run_id}")
    page.wait_for_selector("#run-view[data-stream-state=completed]")
    page.wait_for_selector("#model-calls tbody tr")

    roles = page.eval_on_selector_all("#transcript li", "items => items.map(i => i.dataset.role)")
    assert roles == [m["role"] for m in transcript["messages"]]
    assert "user" in roles and roles.count("tool") == 1 and roles[-1] == "assistant"
    assert page.text_content("#transcript li[data-role=user] .content") == "What is 6*7?"
    assert 'calculator({"expression":"6*7"})' in (page.text_content("#transcript") or "")
    assert page.text_content("#transcript li[data-role=tool] .content") == "42"

    rows = page.query_selector_all("#tool-calls tbody tr")
    assert len(rows) == 1
    assert page.text_content("#tool-calls .tool") == "calculator"
    assert json.loads(page.text_content("#tool-calls .arguments") or "") == {"expression": "6*7"}
    assert page.text_content("#tool-calls .result") == "42"

    progress = run["progress"]
    assert progress["total_tokens"] == 2000 and progress["prompt_tokens"] == 1000
    assert page.text_content("#run-total-tokens") == "2000"
    assert page.text_content("#run-prompt-tokens") == "1000"
    assert page.text_content("#run-completion-tokens") == "1000"
    assert progress["cost_usd"] == pytest.approx(EXPECTED_COST)
    assert page.text_content("#run-cost") == f"${EXPECTED_COST:.6f}"
    call_costs = page.eval_on_selector_all(
        "#model-calls .cost", "cells => cells.map(c => c.textContent)"
    )
    assert call_costs == [f"${c['cost_usd']:.6f}" for c in transcript["model_calls"]]
    assert page.eval_on_selector_all("#handoff-chain li", "l => l.map(i => i.dataset.runId)") == [
        run_id
    ]
    assert page.eval_on_selector_all("#run-tree li", "l => l.map(i => i.dataset.runId)") == [run_id]
    assert page.is_visible("#result-section") and page.text_content("#result-text") == REPLY
    assert not page.is_visible("#run-cancel")


def test_the_runs_list_filters_by_agent_and_status(
    page: Page, api: httpx.Client, stack_state: StackState
) -> None:
    for agent in ("ui-list-a", "ui-list-b"):
        register(api, {**slow_agent(agent), "id": agent})
    run_a, run_b = start(api, "ui-list-a"), start(api, "ui-list-b")
    wait_for_run(api, run_a), wait_for_run(api, run_b)
    sign_in(page, stack_state.api_token)

    def shown() -> list[str]:
        return list(
            page.eval_on_selector_all(
                "#runs-table tbody tr", "rows => rows.map(r => r.dataset.runId)"
            )
        )

    page.wait_for_selector(f"#runs-table tr[data-run-id='{run_a}']")
    page.select_option("#filter-agent", "ui-list-a")
    page.wait_for_selector("#runs-view[data-loaded*='agent=ui-list-a']")
    listed = [r["run_id"] for r in api.get("/runs?agent=ui-list-a&limit=100").json()["runs"]]
    assert shown() == listed and run_a in listed and run_b not in listed
    agents = page.eval_on_selector_all(
        "#runs-table td.agent", "cells => cells.map(c => c.textContent)"
    )
    assert set(agents) == {"ui-list-a"}
    screenshot(page, "runs-list.png")

    page.select_option("#filter-status", "queued")
    page.wait_for_selector("#runs-view[data-loaded*='status=queued']")
    queued = [r["run_id"] for r in api.get("/runs?agent=ui-list-a&status=queued").json()["runs"]]
    assert shown() == queued and run_a not in shown()
    page.select_option("#filter-status", "finished")
    page.wait_for_selector("#runs-view[data-loaded*='status=finished']")
    assert run_a in shown()
    assert "status=finished" in page.url and "agent=ui-list-a" in page.url  # a shareable link
    page.click(f"#runs-table tr[data-run-id='{run_a}'] a")
    page.wait_for_selector("#run-view[data-stream-state=completed]")
    assert page.text_content("#run-id") == run_a


def test_a_pending_approval_is_approved_from_the_page(
    page: Page, api: httpx.Client, stack_state: StackState
) -> None:
    """A run waiting for approval is in the panel with its tool and arguments; Approve (with a
    reason) decides it through ``POST /runs/{id}/approvals/{approval_id}`` and the run ends."""
    register(
        api,
        {
            "id": "ui-refunds",
            "instructions": "You refund orders.",
            "model": {
                "provider": "scripted",
                "name": "scripted-ui",
                "script": [
                    {
                        "tool_calls": [
                            {
                                "name": "refund_order",
                                "arguments": {"order_id": "UI-7", "amount_eur": 12.5},
                            }
                        ]
                    },
                    {"content": "refunded UI-7"},
                ],
            },
            "tools": ["refund_order"],
            "approval": {"threshold": "high", "timeout_seconds": 300},
        },
    )
    run_id = api.post("/runs", json={"agent_id": "ui-refunds", "message": "refund"}).json()[
        "run_id"
    ]
    deadline = time.monotonic() + 60
    while api.get(f"/runs/{run_id}").json()["status"] != "waiting_approval":
        assert time.monotonic() < deadline, "the run never waited for approval"
        time.sleep(0.2)
    sign_in(page, stack_state.api_token)
    item = f"#approval-list li[data-run-id='{run_id}']"
    page.wait_for_selector(item)
    assert page.is_visible("#approvals")
    text = page.text_content(item) or ""
    assert "refund_order" in text and "UI-7" in text
    page.fill(f"{item} .approval-reason", "customer called")
    page.click(f"{item} button.approve")
    page.wait_for_selector(item, state="detached")
    assert wait_for_run(api, run_id)["result"]["exit"] == "SATISFIED"
    (approval,) = api.get(f"/runs/{run_id}/approvals").json()["approvals"]
    assert approval["status"] == "approved" and approval["decision_reason"] == "customer called"


# ---- seed 004's clients, as written -----------------------------------------------------------


def test_the_seed_snippets_are_the_seeds_text() -> None:
    if not SEED_004.exists():
        pytest.skip(f"seed 004 not at {SEED_004} (outside this checkout)")
    seed = SEED_004.read_text()
    assert SEED_WEBSOCKET in seed and SEED_EVENT_SOURCE in seed


def run_seed_snippets(page: Page, stack_state: StackState, run_id: str) -> None:
    """The seed's two snippets as two classic scripts on a page of the api's origin, with only
    its placeholders (``localhost:4000``, ``abc-123``) replaced by this api and this run."""
    host = stack_state.api_url.removeprefix("http://")
    page.add_script_tag(content=SEED_APP_FUNCTIONS)
    page.add_script_tag(
        content=SEED_WEBSOCKET.replace("localhost:4000", host).replace("abc-123", run_id)
    )
    page.add_script_tag(content=SEED_EVENT_SOURCE.replace("abc-123", run_id))


def test_seed_004s_websocket_and_event_source_clients_run_as_written(
    browser: Browser, api: httpx.Client, stack_state: StackState
) -> None:
    """Signed in to the viewer (its cookie is what a same-origin browser client authenticates
    with), the seed's ``new WebSocket`` and ``new EventSource`` follow a run to its end."""
    register(api, slow_agent("ui-seed", delay=0.5))
    # The seed's snippets are inline scripts; the viewer's CSP allows only its own files.
    page = new_page(browser, stack_state, bypass_csp=True)
    try:
        sign_in(page, stack_state.api_token)
        run_id = start(api, "ui-seed")
        started = time.monotonic()
        run_seed_snippets(page, stack_state, run_id)
        page.wait_for_function(
            "() => seen.wsClose !== undefined && seen.sse.some(e => e.eventType === 'completed')"
        )
        page.evaluate("eventSource.close()")
        seen = page.evaluate("seen")
        assert page.js_errors == []  # type: ignore[attr-defined]
    finally:
        page.context.close()
    events = stored_events(api, run_id)
    assert time.monotonic() - started < 30
    # WebSocket: the switch saw every chunk, thinking status and the final response.
    assert "".join(seen["chunks"]) == REPLY
    assert seen["thinking"] == [e["status"] for e in events if e["type"] == "thinking"]
    assert seen["finals"] == [REPLY] and seen["hidden"] == 1 and seen["errors"] == []
    assert seen["wsClose"] == 1000  # closed by the api after the terminal event
    # EventSource: every event, in order, once; the same JSON the WebSocket carries.
    assert [e["id"] for e in seen["sse"]] == [e["id"] for e in events]
    assert [e["eventType"] for e in seen["sse"]] == [e["type"] for e in events]
    assert seen["sse"][-1]["final_response"] == REPLY
    assert seen["sse"][-1]["usage"]["total_tokens"] == 2000


def test_seed_004s_clients_without_a_session_are_refused(
    browser: Browser, api: httpx.Client, stack_state: StackState
) -> None:
    """The same snippets on a page that never signed in: the socket closes 4401, the event
    source errors; neither delivers an event."""
    register(api, slow_agent("ui-seed-anon"))
    run_id = start(api, "ui-seed-anon")
    page = new_page(browser, stack_state, bypass_csp=True)
    try:
        page.goto("/ui")
        run_seed_snippets(page, stack_state, run_id)
        page.wait_for_function("() => seen.wsClose !== undefined && seen.sseErrors > 0")
        page.evaluate("eventSource.close()")
        seen = page.evaluate("seen")
    finally:
        page.context.close()
    assert seen["wsClose"] == 4401
    assert seen["sse"] == [] and seen["chunks"] == [] and seen["finals"] == []


def test_a_handoff_shows_its_chain_and_run_tree_on_both_runs(
    page: Page, api: httpx.Client, stack_state: StackState
) -> None:
    register(
        api,
        {
            "id": "ui-reader",
            "instructions": "You read what you are handed.",
            "model": {
                "provider": "scripted",
                "name": "scripted-reader",
                "script": [{"content": "read: 42"}],
            },
            "capabilities": ["ui-viewer-ocr"],
        },
    )
    register(
        api,
        {
            "id": "ui-triage",
            "instructions": "You hand scanned documents on.",
            "model": {
                "provider": "scripted",
                "name": "scripted-triage",
                "script": [
                    {
                        "content": "Handing this to a reader.",
                        "handoff_target": {
                            "required_capabilities": ["ui-viewer-ocr"],
                            "ttl_seconds": 60,
                            "message": "Read the scan.",
                        },
                    }
                ],
            },
            "capabilities": ["ui-viewer-triage"],
            "max_chain_depth": 2,
        },
    )
    source_id = start(api, "ui-triage", "a scanned page")
    source = wait_for_run(api, source_id)
    assert source["result"]["exit"] == "HANDOFF"
    target_id = wait_until_child(api, source_id)
    wait_for_run(api, target_id)
    sign_in(page, stack_state.api_token)
    for shown_id in (target_id, source_id):
        page.goto(f"/ui#/runs/{shown_id}")
        page.wait_for_selector(f"#run-id:has-text('{shown_id}')")
        page.wait_for_selector("#run-tree li li")
        chain = page.eval_on_selector_all("#handoff-chain li", "l => l.map(i => i.dataset.runId)")
        assert chain == [source_id, target_id]
        tree = page.eval_on_selector_all("#run-tree li", "l => l.map(i => i.dataset.runId)")
        assert tree == [source_id, target_id]  # the source is the root, the target its child
        assert page.get_attribute(f"#run-tree li[data-run-id='{shown_id}']", "class") == "current"
    screenshot(page, "run-handoff.png")
    page.click(f"#handoff-chain li[data-run-id='{target_id}'] a")
    page.wait_for_selector(f"#run-id:has-text('{target_id}')")
    page.wait_for_selector("#run-view[data-stream-state=completed]")
    assert page.text_content("#result-text") == "read: 42"


def test_agent_calls_show_as_the_run_tree(
    page: Page, api: httpx.Client, stack_state: StackState
) -> None:
    for peer in ("ui-left", "ui-right"):
        register(
            api,
            {
                "id": peer,
                "instructions": "You answer.",
                "model": {"provider": "scripted", "name": "s", "script": [{"content": peer}]},
            },
        )
    register(
        api,
        {
            "id": "ui-boss",
            "instructions": "You ask two agents.",
            "model": {
                "provider": "scripted",
                "name": "s",
                "script": [
                    {
                        "tool_calls": [
                            {"name": "invoke_ui_left", "arguments": {"request": "a"}},
                            {"name": "invoke_ui_right", "arguments": {"request": "b"}},
                        ]
                    },
                    {"content": "both answered"},
                ],
            },
            "allowed_peers": ["ui-left", "ui-right"],
        },
    )
    root = start(api, "ui-boss", "ask them")
    assert wait_for_run(api, root)["result"]["exit"] == "SATISFIED"
    children = [f"{root}-c000000-000", f"{root}-c000000-001"]
    sign_in(page, stack_state.api_token)
    page.goto(f"/ui#/runs/{children[1]}")  # from a child: the tree is its root's
    page.wait_for_selector(f"#run-id:has-text('{children[1]}')")
    page.wait_for_selector("#run-tree li li")
    tree = page.eval_on_selector_all("#run-tree li", "l => l.map(i => i.dataset.runId)")
    assert tree == [root, *children]
    assert "[call]" in (page.text_content(f"#run-tree li[data-run-id='{children[0]}']") or "")
    assert page.get_attribute(f"#run-tree li[data-run-id='{children[1]}']", "class") == "current"


def wait_until_child(api: httpx.Client, run_id: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        children = api.get(f"/runs/{run_id}").json()["child_run_ids"]
        if children:
            return str(children[-1])
        assert time.monotonic() < deadline, f"{run_id} handed to no run in {timeout}s"
        time.sleep(0.1)


def test_the_start_form_refuses_bad_variables_and_a_run_can_be_cancelled_from_its_page(
    page: Page, api: httpx.Client, stack_state: StackState
) -> None:
    register(
        api,
        {
            "id": "ui-slowpoke",
            "instructions": "You take your time.",
            "model": {
                "provider": "scripted",
                "name": "scripted-slowpoke",
                "script": [{"content": "Thinking it over, slowly. " * 8, "delay_seconds": 3}],
            },
        },
    )
    sign_in(page, stack_state.api_token)
    page.click("#nav-new")
    page.wait_for_selector("#start-agent option[value=ui-slowpoke]", state="attached")
    page.select_option("#start-agent", "ui-slowpoke")
    page.fill("#start-message", "take your time")
    page.fill("#start-variables", "{not json")
    page.click("#start-submit")
    page.wait_for_selector("#start-error:has-text('variables are not JSON')")
    assert page.url.endswith("#/new")  # nothing was started
    page.fill("#start-variables", '{"topic": "patience"}')
    screenshot(page, "start-form.png")
    page.click("#start-submit")
    page.wait_for_url("**/ui#/runs/*")
    run_id = page.text_content("#run-id") or ""
    assert api.get(f"/runs/{run_id}").json()["variables"] == {"topic": "patience"}
    page.wait_for_selector("#events li[data-type=content_chunk]")
    page.click("#run-cancel")
    page.wait_for_selector("#run-view[data-status=finished]")  # from the cancel's answer
    assert page.text_content("#run-exit") == "CANCELLED"
    assert not page.is_visible("#run-cancel")
    assert api.get(f"/runs/{run_id}").json()["result"]["exit"] == "CANCELLED"
    # (The stream's own `failed` event follows when the hub's feed next reads the run document:
    # up to 5 s after the cancelled call's last chunk, docs/streaming.md; not waited for here.)
