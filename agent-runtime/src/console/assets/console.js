// The agent console's page. Everything comes from /api/v1/ with the token typed in the
// header (kept in this tab's sessionStorage); stored text is only ever set as text.
"use strict";

const api = "api/v1";
const STATUS_MARK = {
  Pending: "○", Ready: "◔", Running: "▶", Completed: "✓", Failed: "✕", Blocked: "⏸",
  Cancelled: "⊘", Timeout: "⧗", Retrying: "↻", Skipped: "»",
  Idle: "○", Paused: "⏸", TimedOut: "⧗", queued: "…", interrupted: "⏏", abandoned: "⚠",
};

const $ = (id) => document.getElementById(id);
let following = null; // the AbortController of the stream the page follows

function token() { return sessionStorage.getItem("agent-console-token") || ""; }
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function problem(message) {
  const p = $("problem");
  p.textContent = message || "";
  p.hidden = !message;
}

async function get(path) {
  const r = await fetch(`${api}/${path}`, { headers: headers() });
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try { message = (await r.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return r;
}

async function post(path, body) {
  const r = await fetch(`${api}/${path}`, {
    method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body),
  });
  let data = {};
  try { data = await r.json(); } catch (_) { /* empty */ }
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

// Server-Sent Events over fetch (EventSource cannot send the token).
async function follow(path, onEvent) {
  if (following) following.abort();
  const controller = new AbortController();
  following = controller;
  $("live").classList.remove("on");
  try {
    const r = await fetch(`${api}/${path}`, { headers: headers(), signal: controller.signal });
    if (!r.ok || !r.body) return;
    $("live").classList.add("on");
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (data) onEvent(event, JSON.parse(data));
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") problem(`live updates stopped: ${e.message}`);
  } finally {
    if (following === controller) $("live").classList.remove("on");
  }
}

const time = (ms) => (ms == null ? "" : new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z"));
function span(ms) {
  if (ms == null || ms < 0) return "";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function badge(status) {
  return el("span", { class: `status s-${status}`, "data-status": status }, `${STATUS_MARK[status] || "•"} ${status}`);
}

// ----- the run list ------------------------------------------------------------------

async function showRuns() {
  const status = $("status-filter").value;
  const q = $("search").value.trim();
  const params = new URLSearchParams({ limit: "200" });
  if (status) params.set("status", status);
  if (q) params.set("q", q);
  const data = await (await get(`runs?${params}`)).json();
  const body = $("runs").tBodies[0];
  body.replaceChildren(...data.runs.map((r) => el("tr", { "data-run": r.run_id },
    el("td", {}, el("a", { href: `#run/${encodeURIComponent(r.run_id)}`, class: "mono" }, r.run_id)),
    el("td", {}, r.agent),
    el("td", {}, badge(r.standing)),
    el("td", { class: "mono" }, r.owner || "–"),
    el("td", {}, time(r.created_ms)),
    el("td", {}, time(r.updated_ms)))));
  $("runs-total").textContent = `${data.runs.length} of ${data.total}`;
}

async function showAgents() {
  const data = await (await get("agents")).json();
  const select = $("submit-agent");
  select.replaceChildren(...data.agents.map((a) => el("option", { value: a }, a)));
  $("submit-form").hidden = data.agents.length === 0;
}

// ----- one run -----------------------------------------------------------------------

async function showRun(id) {
  const data = await (await get(`runs/${encodeURIComponent(id)}`)).json();
  const run = data.run, cp = data.checkpoint;
  $("run-title").textContent = run.run_id;
  $("run-status").replaceChildren(badge(run.standing));
  const facts = [["workflow", run.agent], ["owner", run.owner || "–"],
    ["lease", run.lease_until_ms ? `until ${time(run.lease_until_ms)}` : "–"],
    ["started", time(run.created_ms)], ["updated", time(run.updated_ms)], ["epoch", run.epoch]];
  if (cp && cp.last_error) facts.push(["last error", `${cp.last_error.state || ""}: ${cp.last_error.message || JSON.stringify(cp.last_error)}`]);
  if (data.unreadable) facts.push(["records", data.unreadable]);
  // Lineage: the run it was forked from or started by, and the runs made from it.
  const link = (runId) => el("a", { href: `#run/${encodeURIComponent(runId)}`, class: "mono" }, runId);
  if (data.lineage) {
    const l = data.lineage;
    const how = l.kind === "fork" ? `forked at commit ${l.parent_seq ?? "?"} from ` : "child of ";
    facts.push(["made from", el("span", {}, how, link(l.parent_run_id))]);
  }
  if (data.descendants && data.descendants.length) {
    facts.push(["made from it", el("span", {}, ...data.descendants.flatMap((d, i) =>
      [i ? ", " : "", link(d.run_id), ` (${d.kind})`]))]);
  }
  $("run-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  showActions(run, data.graph);
  showStates(cp, data.inputs, run);
  $("context").textContent = data.context ? JSON.stringify(data.context, null, 2) : "(no checkpoint yet)";
  $("history").replaceChildren(...data.history.map((h) => el("li", {}, `#${h.seq} at ${time(h.taken_ms)} (${h.bytes} bytes)`)));
  $("run-inputs").replaceChildren(...(data.inputs.length ? data.inputs.map(inputCard) : [el("p", { class: "muted" }, "none")]));
  // A run whose states started child runs can draw them inside those states.
  const children = (data.descendants || []).some((d) => d.kind === "child");
  $("expand-children").hidden = !children;
  $("expand").dataset.run = run.run_id;
  if (data.graph) await showGraph(run.run_id, children && $("expand").checked); else $("graph").replaceChildren(el("p", { class: "muted" }, "this console was not given the workflow to draw it"));
}

// The buttons a run's standing allows; each asks first.
function showActions(run, known) {
  const s = run.standing;
  const live = s === "Running" || s === "Idle";
  const idle = s === "Paused" || s === "interrupted" || s === "abandoned";
  const actions = [];
  if (live) actions.push(["pause", "Pause", "Pause this run? Running states finish; nothing new starts."]);
  if (idle && known) actions.push(["resume", "Resume", "Resume this run in the console's process?"]);
  if (s === "Failed" && known) actions.push(["retry", "Retry", "Run this run again from the states that failed?"]);
  if (live || idle || s === "queued") actions.push(["cancel", "Cancel", "Cancel this run? Its running states are stopped."]);
  $("actions").replaceChildren(...actions.map(([verb, label, question]) => {
    const button = el("button", { type: "button", class: `action ${verb}`, "data-action": verb }, label);
    button.addEventListener("click", async () => {
      if (!confirm(question)) return;
      try {
        await post(`runs/${encodeURIComponent(run.run_id)}/${verb}`, {});
        problem("");
        showRun(run.run_id).catch((e) => problem(e.message));
      } catch (err) { problem(err.message); }
    });
    return button;
  }));
}

// The states a state's Cancel stops: running (also waiting for a person), or waiting to
// start (for resources) or to be tried again.
const CANCELLABLE = new Set(["Running", "Ready", "Retrying"]);

// A state's Cancel, asked first: its owner cancels the state's running and waiting
// instances, the run goes on.
function stateCancel(run, s) {
  if (!CANCELLABLE.has(s.status) || ["Completed", "Failed", "Cancelled", "TimedOut"].includes(run.standing)) return "";
  const button = el("button", { type: "button", class: "action cancel", "data-action": "cancel-state" }, "Cancel");
  button.addEventListener("click", async () => {
    if (!confirm(`Cancel state “${s.name}” of this run? Its running instances are stopped; the run goes on.`)) return;
    try {
      await post(`runs/${encodeURIComponent(run.run_id)}/states/${encodeURIComponent(s.name)}/cancel`, {});
      problem("");
      showRun(run.run_id).catch((e) => problem(e.message));
    } catch (err) { problem(err.message); }
  });
  return button;
}

function showStates(cp, inputs, run) {
  const states = cp ? cp.states : [];
  const failure = cp && cp.last_error;
  // Time each state waited for a person: its requests, from asked to answered (or now).
  const asked = {};
  for (const i of inputs || []) {
    if (!i.state) continue;
    (asked[i.state] = asked[i.state] || []).push([i.requested_ms, i.answered_ms ?? Date.now()]);
  }
  const waited = (s) => {
    const person = (asked[s.name] || []).reduce((t, [a, b]) => t + Math.max(b - a, 0), 0);
    const parts = [];
    if (s.resource_wait_ms) parts.push(`resources ${span(s.resource_wait_ms)}`);
    if (person) parts.push(`a person ${span(person)}`);
    return parts.join(", ");
  };
  // What its latest attempt held from a pool, with the GPU devices it used.
  const held = (s) => [s.resources, s.gpu_ids && s.gpu_ids.length ? `GPU ${s.gpu_ids.join(", ")}` : ""]
    .filter(Boolean).join("; ");
  $("states").tBodies[0].replaceChildren(...states.map((s) => el("tr", { "data-state": s.name },
    el("td", { class: "mono" }, s.name), el("td", {}, badge(s.status)), el("td", {}, s.completed), el("td", {}, s.failed),
    el("td", {}, s.retries), el("td", {}, s.attempts_made),
    el("td", {}, s.started_ms != null && s.finished_ms != null ? span(s.finished_ms - s.started_ms) : ""),
    el("td", { class: "waited" }, waited(s)),
    el("td", { class: "held" }, held(s)),
    el("td", { class: "error" }, s.error || (failure && failure.state === s.name ? failure.message : "")),
    el("td", { class: "actions" }, stateCancel(run, s)))));
  // The timeline: each state's first start to last end on one time axis, with the time it
  // waited for resources before it started and the waits for a person over it.
  const timed = states.filter((s) => s.started_ms != null);
  const starts = timed.map((s) => s.started_ms - (s.resource_wait_ms || 0));
  const t0 = Math.min(...starts);
  const t1 = Math.max(...timed.map((s) => s.finished_ms ?? Date.now()));
  const width = Math.max(t1 - t0, 1);
  const at = (t) => `${(100 * (t - t0)) / width}%`;
  const wide = (a, b) => `${Math.max((100 * (b - a)) / width, 0.5)}%`;
  $("timeline").replaceChildren(...timed.sort((a, b) => a.started_ms - b.started_ms).map((s) => {
    const end = s.finished_ms ?? Date.now();
    const track = el("span", { class: "track" });
    if (s.resource_wait_ms) {
      const w = el("span", { class: "bar wait-resources", title: `${s.name}: waited ${span(s.resource_wait_ms)} for resources` });
      w.style.left = at(s.started_ms - s.resource_wait_ms);
      w.style.width = wide(s.started_ms - s.resource_wait_ms, s.started_ms);
      track.append(w);
    }
    // Each attempt recorded (retries, timeouts) its own bar, a failed one marked; otherwise
    // the state's first start to its last end.
    const spans = s.attempt_spans && s.attempt_spans.length ? s.attempt_spans : null;
    if (spans) {
      spans.forEach((a, n) => {
        const what = a.failed ? "failed" : "completed";
        const bar = el("span", { class: `bar attempt ${a.failed ? "s-Failed" : `s-${s.status}`}`,
          title: `${s.name}: attempt ${n + 1} of those recorded, ${what} after ${span(a.finished_ms - a.started_ms)}` });
        bar.style.left = at(a.started_ms);
        bar.style.width = wide(a.started_ms, a.finished_ms);
        track.append(bar);
      });
      const last = spans[spans.length - 1].finished_ms;
      if (s.finished_ms == null && last < end) {
        const bar = el("span", { class: `bar s-${s.status}`, title: `${s.name}: ${s.status}` });
        bar.style.left = at(last);
        bar.style.width = wide(last, end);
        track.append(bar);
      }
    } else {
      const bar = el("span", { class: `bar s-${s.status}`, title: `${s.name}: ${s.status}` });
      bar.style.left = at(s.started_ms);
      bar.style.width = wide(s.started_ms, end);
      track.append(bar);
    }
    for (const [a, b] of asked[s.name] || []) {
      const w = el("span", { class: "bar wait-person", title: `${s.name}: waited ${span(b - a)} for a person` });
      w.style.left = at(a);
      w.style.width = wide(a, b);
      track.append(w);
    }
    return el("div", { class: "lane", "data-state": s.name }, el("span", { class: "lane-name mono" }, s.name), track);
  }));
  $("timeline-legend").hidden = timed.length === 0;
}

async function showGraph(id, expand) {
  const text = await (await get(`runs/${encodeURIComponent(id)}/graph.svg${expand ? "?expand=1" : ""}`)).text();
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const svg = doc.documentElement;
  if (svg.nodeName !== "svg") throw new Error("the graph could not be read");
  $("graph").replaceChildren(document.importNode(svg, true));
  const used = [...new Set([...$("graph").querySelectorAll("[data-status]")].map((n) => n.getAttribute("data-status")))];
  $("legend").replaceChildren(...used.map((s) => el("li", {}, badge(s))));
}

function inputCard(i) {
  const card = el("div", { class: "input", "data-request": i.request_id, "data-run": i.run_id });
  card.append(el("p", { class: "prompt" }, i.prompt));
  const facts = [`run ${i.run_id}`, i.state ? `state ${i.state}` : "", i.default != null ? `default: ${i.default}` : "",
    i.deadline_ms ? `${span(i.deadline_ms - Date.now()) || "time is up"} left` : "no time limit"].filter(Boolean);
  card.append(el("p", { class: "muted" }, facts.join(" · ")));
  if (i.answer != null) {
    card.append(el("p", {}, `answered: ${i.answer}${i.defaulted ? " (the default, on time out)" : ""}`));
    return card;
  }
  const field = el("input", { name: "answer", value: i.default ?? "", placeholder: "your answer" });
  const form = el("form", { class: "answer" }, field, el("button", { type: "submit" }, "Answer"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!confirm(`Answer “${i.prompt}” with “${field.value}”?`)) return;
    try {
      await post(`runs/${encodeURIComponent(i.run_id)}/inputs/${encodeURIComponent(i.request_id)}`, { answer: field.value });
      problem("");
      route();
    } catch (err) { problem(err.message); }
  });
  card.append(form);
  return card;
}

// ----- the inbox ---------------------------------------------------------------------

async function showInbox() {
  const data = await (await get("inputs")).json();
  $("inbox").replaceChildren(...(data.inputs.length ? data.inputs.map(inputCard) : [el("p", { class: "muted" }, "Nothing waits for an answer.")]));
}

async function countInbox() {
  try {
    const data = await (await get("inputs")).json();
    $("inbox-count").textContent = data.inputs.length ? String(data.inputs.length) : "";
  } catch (_) { /* shown elsewhere */ }
}

// ----- routing -----------------------------------------------------------------------

async function route() {
  const hash = decodeURIComponent(location.hash.slice(1));
  const [view, id] = hash.startsWith("run/") ? ["run", hash.slice(4)] : [hash || "runs", null];
  $("runs-view").hidden = view !== "runs";
  $("run-view").hidden = view !== "run";
  $("inbox-view").hidden = view !== "inbox";
  try {
    problem("");
    countInbox();
    if (view === "run") {
      await showRun(id);
      // A burst of state events (a fan-out's branches ending) redraws the run once.
      let redraw = null;
      follow(`runs/${encodeURIComponent(id)}/events`, (event) => {
        if (event !== "run" && event !== "state") return;
        clearTimeout(redraw);
        redraw = setTimeout(() => showRun(id).catch((e) => problem(e.message)), 50);
      });
    } else if (view === "inbox") {
      await showInbox();
      follow("events", () => { showInbox().catch((e) => problem(e.message)); countInbox(); });
    } else {
      await Promise.all([showRuns(), showAgents()]);
      follow("events", () => { showRuns().catch((e) => problem(e.message)); countInbox(); });
    }
  } catch (e) {
    problem(e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = token();
  $("token-form").addEventListener("submit", (e) => e.preventDefault());
  $("token").addEventListener("change", () => { sessionStorage.setItem("agent-console-token", $("token").value); route(); });
  $("status-filter").addEventListener("change", () => showRuns().catch((e) => problem(e.message)));
  $("search").addEventListener("input", () => showRuns().catch((e) => problem(e.message)));
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("expand").addEventListener("change", () => showGraph($("expand").dataset.run, $("expand").checked).catch((e) => problem(e.message)));
  $("submit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    let input;
    try { input = $("submit-input").value.trim() ? JSON.parse($("submit-input").value) : {}; } catch (err) { problem(`the input is not JSON: ${err.message}`); return; }
    const start = $("submit-start").checked;
    if (!confirm(`${start ? "Start" : "Submit"} a run of ${$("submit-agent").value}?`)) return;
    try {
      const { run_id } = await post("runs", { agent: $("submit-agent").value, input, start });
      location.hash = `#run/${encodeURIComponent(run_id)}`;
    } catch (err) { problem(err.message); }
  });
  window.addEventListener("hashchange", route);
  route();
});
