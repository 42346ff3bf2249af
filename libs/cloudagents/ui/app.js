// The cloudagents run viewer: plain JavaScript against the api that serves it (no build step).
// Every request carries the bearer token kept in sessionStorage; the event stream
// (EventSource on /agent-stream/{id}) authenticates with the cloudagents_token cookie, which the
// api accepts on its stream routes only. Data is written with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "cloudagents.token";
const COOKIE = "cloudagents_token";
const COOKIE_SAFE = /^[A-Za-z0-9._~+/=-]+$/;
const TREE_LIMIT = 50;

const $ = (id) => document.getElementById(id);
const VIEWS = ["login-view", "runs-view", "new-view", "run-view"];
let stream = null; // the open EventSource of the run page
let currentRun = null; // the run id the run page shows
let reloadTimer = null;

// ---- the token ---------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function secure() {
  return location.protocol === "https:" ? "; Secure" : "";
}

function storeToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
  if (COOKIE_SAFE.test(value)) {
    document.cookie = `${COOKIE}=${value}; Path=/; SameSite=Strict${secure()}`;
  }
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  document.cookie = `${COOKIE}=; Path=/; Max-Age=0; SameSite=Strict${secure()}`;
}

// ``/ui#token=...`` (the link ``cloudagents up`` prints): the fragment never reaches a server.
function tokenFromFragment() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    storeToken(decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search + "#/");
  }
}

// ---- the api -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}`, Accept: "application/json" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (response.status === 401) {
    forgetToken();
    showLogin("the api refused the token: " + ((data && data.error) || "401"));
  }
  if (!response.ok) {
    throw new ApiError(response.status, (data && data.error) || `HTTP ${response.status}`);
  }
  return data;
}

function streamUrl(runId) {
  const path = `/agent-stream/${encodeURIComponent(runId)}`;
  const value = token();
  // The cookie carries a token made of cookie-safe characters; any other goes in the query.
  return COOKIE_SAFE.test(value) ? path : `${path}?token=${encodeURIComponent(value)}`;
}

// ---- small DOM helpers -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function runLink(runId) {
  return el("a", { href: `#/runs/${encodeURIComponent(runId)}`, class: "run-link" }, runId);
}

function pretty(value) {
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

function money(value) {
  return "$" + Number(value || 0).toFixed(6);
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function show(view) {
  for (const id of VIEWS) $(id).hidden = id !== view;
}

function setError(id, message) {
  $(id).textContent = message || "";
}

// ---- routing -----------------------------------------------------------------------------------

function stopStream() {
  if (stream) {
    stream.close();
    stream = null;
  }
  clearTimeout(reloadTimer);
  currentRun = null;
}

async function route() {
  stopStream();
  if (!token()) return showLogin("");
  $("logout").hidden = false;
  const hash = location.hash || "#/";
  loadApprovals();
  if (hash.startsWith("#/runs/")) return showRun(decodeURIComponent(hash.slice("#/runs/".length)));
  if (hash === "#/new") return showNew();
  return showRuns(new URLSearchParams(hash.split("?")[1] || ""));
}

function showLogin(message) {
  stopStream();
  show("login-view");
  $("approvals").hidden = true;
  $("logout").hidden = true;
  $("whoami").textContent = "";
  setError("login-error", message);
}

async function login(event) {
  event.preventDefault();
  const value = $("login-token").value.trim();
  if (!value) return;
  storeToken(value);
  try {
    await api("GET", "/agents");
  } catch (err) {
    if (err.status !== 401) setError("login-error", err.message);
    return;
  }
  $("login-token").value = "";
  $("whoami").textContent = "signed in";
  route();
}

// ---- approvals (shown only when the api has them) ----------------------------------------------

async function loadApprovals() {
  const panel = $("approvals");
  let data;
  try {
    data = await api("GET", "/approvals?status=pending");
  } catch (err) {
    panel.hidden = true; // 404: this api has no approvals
    if (err.status !== 404) setError("approval-error", err.message);
    return;
  }
  const items = Array.isArray(data) ? data : (data && (data.approvals || data.items)) || [];
  const list = $("approval-list");
  list.replaceChildren();
  for (const item of items) {
    const approvalId = item.approval_id || item.id;
    const runId = item.run_id;
    const reason = el("input", { type: "text", placeholder: "reason", class: "approval-reason" });
    const decide = (decision) => async () => {
      try {
        await api("POST", `/runs/${encodeURIComponent(runId)}/approvals/${encodeURIComponent(approvalId)}`, {
          decision,
          reason: reason.value,
        });
        loadApprovals();
      } catch (err) {
        setError("approval-error", err.message);
      }
    };
    const what = item.tool || item.tool_name || item.summary || item.description || item.kind || "";
    list.append(
      el(
        "li",
        { class: "approval", "data-approval-id": approvalId, "data-run-id": runId },
        runLink(runId),
        " ",
        el("strong", {}, what),
        " ",
        item.arguments ? el("code", {}, JSON.stringify(item.arguments)) : null,
        " ",
        item.expires_at ? el("span", { class: "expires" }, `expires ${item.expires_at}`) : null,
        " ",
        reason,
        el("button", { type: "button", class: "approve", onclick: decide("approve") }, "Approve"),
        el("button", { type: "button", class: "reject", onclick: decide("reject") }, "Reject"),
      ),
    );
  }
  panel.hidden = items.length === 0;
  panel.dataset.count = String(items.length);
}

// ---- the runs list -----------------------------------------------------------------------------

async function fillAgents(select, keep) {
  const { agents } = await api("GET", "/agents");
  const first = select.options[0] && select.options[0].value === "" ? select.options[0] : null;
  select.replaceChildren(...(first ? [first] : []));
  for (const agent of agents) select.append(el("option", { value: agent.id }, agent.id));
  if (keep !== undefined) select.value = keep;
}

function filtersChanged() {
  const query = new URLSearchParams();
  if ($("filter-status").value) query.set("status", $("filter-status").value);
  if ($("filter-agent").value) query.set("agent", $("filter-agent").value);
  const text = query.toString();
  location.hash = text ? `#/?${text}` : "#/";
}

async function showRuns(filters) {
  show("runs-view");
  setError("runs-error", "");
  const status = filters.get("status") || "";
  const agent = filters.get("agent") || "";
  $("filter-status").value = status;
  const query = new URLSearchParams({ limit: "100" });
  if (status) query.set("status", status);
  if (agent) query.set("agent", agent);
  const body = $("runs-table").tBodies[0];
  try {
    await fillAgents($("filter-agent"), agent);
    const { runs } = await api("GET", `/runs?${query}`);
    body.replaceChildren();
    for (const run of runs) {
      const progress = run.progress || {};
      body.append(
        el(
          "tr",
          { "data-run-id": run.run_id },
          el("td", {}, runLink(run.run_id)),
          el("td", { class: "agent" }, run.agent_id),
          el("td", { class: "status" }, run.status),
          el("td", { class: "exit" }, run.exit || ""),
          el("td", { class: "tokens" }, progress.total_tokens || 0),
          el("td", { class: "cost" }, money(progress.cost_usd)),
          el("td", {}, when(run.created_at)),
        ),
      );
    }
    $("runs-empty").hidden = runs.length > 0;
    $("runs-view").dataset.loaded = query.toString();
  } catch (err) {
    setError("runs-error", err.message);
  }
}

// ---- starting a run ----------------------------------------------------------------------------

async function showNew() {
  show("new-view");
  setError("start-error", "");
  try {
    await fillAgents($("start-agent"));
  } catch (err) {
    setError("start-error", err.message);
  }
}

async function startRun(event) {
  event.preventDefault();
  setError("start-error", "");
  const body = { agent_id: $("start-agent").value, message: $("start-message").value };
  const variables = $("start-variables").value.trim();
  if (variables) {
    try {
      body.variables = JSON.parse(variables);
    } catch (err) {
      return setError("start-error", "variables are not JSON: " + err.message);
    }
  }
  $("start-submit").disabled = true;
  try {
    const started = await api("POST", "/runs", body);
    $("start-message").value = "";
    location.hash = `#/runs/${encodeURIComponent(started.run_id)}`;
  } catch (err) {
    setError("start-error", err.message);
  } finally {
    $("start-submit").disabled = false;
  }
}

// ---- one run -----------------------------------------------------------------------------------

function clearRunPage(runId) {
  $("run-id").textContent = runId;
  setError("run-error", "");
  for (const id of ["events", "transcript", "handoff-chain", "run-tree", "dead-letters", "result-errors"]) {
    $(id).replaceChildren();
  }
  for (const id of ["tool-calls", "model-calls"]) $(id).tBodies[0].replaceChildren();
  $("live-response").textContent = "";
  $("result-text").textContent = "";
  $("result-section").hidden = true;
  $("thinking").hidden = true;
  $("stream-state").textContent = "";
  $("run-view").dataset.streamState = "";
}

async function showRun(runId) {
  show("run-view");
  clearRunPage(runId);
  currentRun = runId;
  try {
    await loadRun(runId);
  } catch (err) {
    setError("run-error", err.message);
    return;
  }
  if (currentRun === runId) follow(runId);
}

function renderSummary(run) {
  const progress = run.progress || {};
  $("run-agent").textContent = run.agent_id;
  $("run-status").textContent = run.status;
  $("run-exit").textContent = run.exit || "";
  $("run-iterations").textContent = progress.iterations || 0;
  $("run-tool-count").textContent = progress.tool_calls || 0;
  $("run-prompt-tokens").textContent = progress.prompt_tokens || 0;
  $("run-completion-tokens").textContent = progress.completion_tokens || 0;
  $("run-total-tokens").textContent = progress.total_tokens || 0;
  $("run-cost").textContent = money(progress.cost_usd);
  $("run-principal").textContent = run.principal || run.source || "";
  $("run-cancel").hidden = run.status === "finished";
  $("run-view").dataset.status = run.status;
  if (run.result) {
    $("result-section").hidden = false;
    // A text reply is stored as {"answer": text}; a structured one as the object itself.
    const payload = run.result.payload || {};
    const keys = Object.keys(payload);
    const text = keys.length === 1 && keys[0] === "answer" ? payload.answer : payload;
    $("result-text").textContent = pretty(text);
    $("result-section").dataset.exit = run.result.exit;
    $("result-errors").replaceChildren(...(run.result.errors || []).map((e) => el("li", {}, e)));
  }
  const letters = run.dead_letters || [];
  $("dead-letters-section").hidden = letters.length === 0;
  $("dead-letters").replaceChildren(
    ...letters.map((d) => el("li", {}, `${d.source}: ${d.reason}${d.replayed ? " (replayed)" : ""}`)),
  );
}

function renderTranscript(messages) {
  const list = $("transcript");
  list.replaceChildren();
  for (const message of messages) {
    const item = el("li", { class: `message ${message.role}`, "data-role": message.role });
    item.append(el("span", { class: "role" }, message.name ? `${message.role} (${message.name})` : message.role));
    if (message.content) item.append(el("pre", { class: "content" }, message.content));
    for (const call of message.tool_calls || []) {
      item.append(el("div", { class: "call" }, `→ ${call.name}(${JSON.stringify(call.arguments || {})})`));
    }
    if (message.tool_call_id) item.append(el("div", { class: "call-id" }, `result of ${message.tool_call_id}`));
    list.append(item);
  }
}

function renderModelCalls(calls) {
  const body = $("model-calls").tBodies[0];
  body.replaceChildren();
  for (const call of calls) {
    const usage = call.usage || {};
    body.append(
      el(
        "tr",
        {},
        el("td", {}, call.seq),
        el("td", {}, call.model),
        el("td", {}, usage.prompt_tokens || 0),
        el("td", {}, usage.completion_tokens || 0),
        el("td", {}, usage.total_tokens || 0),
        el("td", { class: "cost" }, money(call.cost_usd)),
        el("td", {}, call.applied ? "yes" : "no (discarded)"),
      ),
    );
  }
}

function renderChain(chain, runId) {
  $("handoff-chain").replaceChildren(
    ...chain.map((link) =>
      el(
        "li",
        { class: link.run_id === runId ? "current" : "", "data-run-id": link.run_id },
        runLink(link.run_id),
        ` ${link.agent_id}${link.exit ? " — " + link.exit : ""}`,
      ),
    ),
  );
}

// The tree of runs this one belongs to: up to its root by parent_run_id, then the root's
// GET /runs/{id}/tree (agent-to-agent calls and handoffs below it).
async function renderTree(run) {
  let root = run;
  const seen = new Set([run.run_id]);
  while (root.parent_run_id && !seen.has(root.parent_run_id) && seen.size < TREE_LIMIT) {
    seen.add(root.parent_run_id);
    try {
      root = await api("GET", `/runs/${encodeURIComponent(root.parent_run_id)}`);
    } catch (_) {
      break;
    }
  }
  let tree;
  try {
    tree = await api("GET", `/runs/${encodeURIComponent(root.run_id)}/tree`);
  } catch (_) {
    return;
  }
  const build = (node) => {
    const how = node.how ? ` [${node.how}]` : "";
    const item = el(
      "li",
      { "data-run-id": node.run_id, class: node.run_id === run.run_id ? "current" : "" },
      runLink(node.run_id),
      ` ${node.agent_id}${how} — ${node.exit || node.status}`,
    );
    if (node.children && node.children.length) {
      item.append(el("ul", {}, ...node.children.map(build)));
    }
    return item;
  };
  if (currentRun === run.run_id) $("run-tree").replaceChildren(build(tree));
}

async function loadRun(runId) {
  const [run, transcript] = await Promise.all([
    api("GET", `/runs/${encodeURIComponent(runId)}`),
    api("GET", `/runs/${encodeURIComponent(runId)}/messages`),
  ]);
  if (currentRun !== runId) return;
  renderSummary(run);
  renderTranscript(transcript.messages || []);
  renderModelCalls(transcript.model_calls || []);
  renderChain(run.handoff_chain || [], runId);
  await renderTree(run);
}

function reloadSoon(runId) {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => {
    if (currentRun === runId) loadRun(runId).catch((err) => setError("run-error", err.message));
  }, 150);
}

// tool_call ids are {seq}-b{k}, their results {seq}-c{k}: the k-th call of the step.
function toolRow(event) {
  const [seq, rest] = event.id.split("-");
  const key = `${seq}-${rest.slice(1)}`;
  const body = $("tool-calls").tBodies[0];
  let row = body.querySelector(`tr[data-call="${key}"]`);
  if (!row) {
    row = el(
      "tr",
      { "data-call": key },
      el("td", {}, Number(seq)),
      el("td", { class: "tool" }, event.toolName || ""),
      el("td", {}, el("pre", { class: "arguments" })),
      el("td", {}, el("pre", { class: "result" }, "running…")),
    );
    body.append(row);
  }
  return row;
}

function onToolEvent(event) {
  const row = toolRow(event);
  if (event.eventType === "tool_call") {
    row.querySelector(".arguments").textContent = pretty(event.arguments || {});
  } else {
    const result = row.querySelector(".result");
    result.textContent = pretty(event.result);
    result.classList.toggle("error", Boolean(event.isError));
  }
}

function setStreamState(state) {
  $("stream-state").textContent = state;
  $("run-view").dataset.streamState = state;
}

function onAgentEvent(runId, event) {
  const summary = [event.status, event.toolName, event.error].filter(Boolean).join(" · ");
  const item = el(
    "li",
    { class: `event ${event.eventType}`, "data-type": event.eventType, "data-id": event.id },
    el("span", { class: "type" }, event.eventType),
    " ",
    el("span", { class: "id" }, event.id),
    " ",
    summary,
  );
  if (event.eventType !== "content_chunk" && event.eventType !== "thinking" && event.content) {
    item.append(el("pre", {}, event.content));
  }
  $("events").append(item);
  switch (event.eventType) {
    case "content_chunk":
      $("live-response").textContent += event.content || "";
      break;
    case "thinking":
      $("thinking").hidden = false;
      $("thinking").textContent = event.status;
      if ((event.status || "").startsWith("calling model")) $("live-response").textContent = "";
      break;
    case "tool_call":
    case "tool_result":
      onToolEvent(event);
      reloadSoon(runId);
      break;
    case "handoff":
      reloadSoon(runId);
      break;
    case "completed":
    case "failed":
      $("thinking").hidden = true;
      if (event.final_response) $("live-response").textContent = event.final_response;
      setStreamState(event.eventType === "completed" ? "completed" : "failed");
      stopStreamOnly();
      reloadSoon(runId);
      break;
  }
}

function stopStreamOnly() {
  if (stream) {
    stream.close();
    stream = null;
  }
}

// The whole run from its first event: the stream replays what is stored, then follows.
function follow(runId) {
  stopStreamOnly();
  setStreamState("connecting");
  const source = new EventSource(streamUrl(runId));
  stream = source;
  source.onopen = () => {
    if (stream === source && $("run-view").dataset.streamState === "connecting") setStreamState("live");
  };
  source.onmessage = (message) => {
    if (stream === source) onAgentEvent(runId, JSON.parse(message.data));
  };
  source.onerror = () => {
    // EventSource reconnects by itself, resuming after the last id it received.
    if (stream === source) setStreamState("reconnecting");
  };
}

async function cancelRun() {
  if (!currentRun) return;
  try {
    const run = await api("POST", `/runs/${encodeURIComponent(currentRun)}/cancel`);
    renderSummary(run); // the stream's failed event follows once the hub reads the run again
  } catch (err) {
    setError("run-error", err.message);
  }
}

// ---- start -------------------------------------------------------------------------------------

function main() {
  tokenFromFragment();
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => {
    forgetToken();
    showLogin("signed out");
  });
  $("start-form").addEventListener("submit", startRun);
  $("filter-status").addEventListener("change", filtersChanged);
  $("filter-agent").addEventListener("change", filtersChanged);
  $("refresh").addEventListener("click", route);
  $("run-cancel").addEventListener("click", cancelRun);
  window.addEventListener("hashchange", route);
  if (token()) $("whoami").textContent = "signed in";
  route();
}

main();
