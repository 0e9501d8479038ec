// doppel's dashboard: one page, no dependencies. It reads /dashboard/events (server-sent
// events: a `snapshot` first, then `point`, `look` and `rollout`), keeps the state per
// service, and redraws. Charts are drawn by hand on <canvas>. Every text from the server
// goes in through textContent, never as HTML.
"use strict";

const TOKEN_KEY = "doppel.apiToken";
const MAX_POINTS = 360;
const COLORS = { primary: "#2563eb", shadow: "#d9480f", mirror: "#7c3aed", grid: "#e5e7eb", ink: "#5d6778" };
const services = new Map(); // name -> { data, view }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child == null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function fmt(value, unit) {
  if (value == null || Number.isNaN(value)) return "–";
  if (unit === "%") return (value * 100).toFixed(value < 0.01 && value > 0 ? 2 : 1) + "%";
  if (unit === "ms") return value < 10 ? value.toFixed(2) + " ms" : value.toFixed(0) + " ms";
  if (unit === "/s") return value < 10 ? value.toFixed(1) + "/s" : value.toFixed(0) + "/s";
  if (Math.abs(value) >= 1e6 || (Math.abs(value) > 0 && Math.abs(value) < 1e-3)) return value.toExponential(2);
  return String(Math.round(value * 1000) / 1000);
}

// ---- token --------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function showTokenState() {
  document.getElementById("token-state").textContent = token() ? "token set" : "no token";
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  const value = input.value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  input.value = "";
  showTokenState();
});
document.getElementById("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
});
showTokenState();

async function command(service, name, result) {
  result.className = "result";
  result.textContent = name + "…";
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  try {
    const response = await fetch(
      "/v1/rollouts/" + encodeURIComponent(service) + "/" + name,
      { method: "POST", headers },
    );
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      result.className = "result ok";
      result.textContent = name + ": " + ((body.decision && body.decision.note) || "done");
      const entry = services.get(service);
      if (entry && body.status) {
        entry.data.rollout.status = body.status;
        renderService(entry);
      }
    } else {
      result.className = "result error";
      result.textContent = name + " refused (" + response.status + "): " + (body.error || response.statusText);
    }
  } catch (error) {
    result.className = "result error";
    result.textContent = name + " failed: " + error;
  }
}

// ---- charts -------------------------------------------------------------------------------

const CHARTS = [
  { id: "rate", title: "Requests/s", unit: "/s", series: (p) => [p.primary.rps, p.shadow.rps] },
  { id: "errors", title: "Error rate", unit: "%", series: (p) => [p.primary.error_rate, p.shadow.error_rate] },
  { id: "p50", title: "Latency p50", unit: "ms", series: (p) => [p.primary.p50, p.shadow.p50] },
  { id: "p95", title: "Latency p95", unit: "ms", series: (p) => [p.primary.p95, p.shadow.p95] },
  { id: "p99", title: "Latency p99", unit: "ms", series: (p) => [p.primary.p99, p.shadow.p99] },
  { id: "mismatches", title: "Mirror mismatches", unit: "", series: (p) => [null, p.mirror.mismatches], mirror: true },
];

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// Draws `points` on `canvas`; `markers` are [ms, color] vertical lines (decisions).
function drawChart(canvas, chart, points, markers) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  const height = canvas.clientHeight || 150;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 58, right = 8, top = 8, bottom = 20;
  const w = width - left - right, h = height - top - bottom;
  const values = points.map((p) => chart.series(p));
  let max = 0, drawn = 0;
  for (const pair of values) for (const v of pair) if (v != null && Number.isFinite(v)) { max = Math.max(max, v); drawn++; }
  max = niceMax(chart.unit === "%" ? Math.max(max, 0.01) : max);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = COLORS.ink;
  ctx.strokeStyle = COLORS.grid;
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const y = top + h - (h * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y + 0.5); ctx.lineTo(left + w, y + 0.5); ctx.stroke();
    ctx.fillText(fmt((max * i) / 4, chart.unit), left - 4, y);
  }
  canvas.dataset.points = String(drawn);
  if (points.length === 0) {
    ctx.textAlign = "center";
    ctx.fillText("no traffic yet", left + w / 2, top + h / 2);
    return;
  }
  const t0 = points[0].end_ms, t1 = Math.max(points[points.length - 1].end_ms, t0 + 1);
  const x = (t) => left + ((t - t0) / (t1 - t0)) * w;
  const y = (v) => top + h - (Math.min(v, max) / max) * h;
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText(clock(t0), left, top + h + 4);
  ctx.textAlign = "right";
  ctx.fillText(clock(t1), left + w, top + h + 4);
  for (const [ms, color] of markers) {
    if (ms < t0 || ms > t1) continue;
    ctx.strokeStyle = color;
    ctx.setLineDash([4, 3]);
    ctx.beginPath(); ctx.moveTo(x(ms), top); ctx.lineTo(x(ms), top + h); ctx.stroke();
    ctx.setLineDash([]);
  }
  const colors = chart.mirror ? [COLORS.primary, COLORS.mirror] : [COLORS.primary, COLORS.shadow];
  for (let s = 0; s < 2; s++) {
    ctx.strokeStyle = colors[s];
    ctx.lineWidth = 2;
    ctx.beginPath();
    let open = false;
    points.forEach((p, i) => {
      const v = values[i][s];
      if (v == null || !Number.isFinite(v)) { open = false; return; }
      if (open) ctx.lineTo(x(p.end_ms), y(v)); else ctx.moveTo(x(p.end_ms), y(v));
      open = true;
    });
    ctx.stroke();
    if (points.length === 1 && values[0][s] != null) {
      ctx.fillStyle = colors[s];
      ctx.fillRect(x(points[0].end_ms) - 2, y(values[0][s]) - 2, 4, 4);
    }
  }
}

// ---- one service --------------------------------------------------------------------------

function buildView(name) {
  const result = el("span", { class: "result" });
  const buttons = ["pause", "resume", "rollback", "promote"].map((cmd) => {
    const button = el("button", { type: "button", class: cmd === "rollback" ? "danger" : "", "data-command": cmd }, cmd);
    button.addEventListener("click", () => command(name, cmd, result));
    return button;
  });
  const view = {
    root: el("section", { class: "service", "data-service": name }),
    phase: el("span", { class: "badge phase" }),
    version: el("span", { class: "meta" }),
    step: el("div", { class: "meta" }),
    bar: el("div", { class: "bar" }),
    nodes: el("div", { class: "nodes" }),
    charts: new Map(),
    rules: el("tbody"),
    look: el("p", { class: "look" }),
    synthetic: el("div", { class: "synthetic", hidden: true }),
    timeline: el("ol"),
    result,
  };
  const head = el("div", { class: "service-head" },
    el("h2", {}, name), view.phase, view.version,
    el("div", { class: "weights" }, view.bar, view.step),
    el("div", { class: "controls" }, ...buttons, result));
  const grid = el("div", { class: "charts" });
  for (const chart of CHARTS) {
    const canvas = el("canvas", { "data-chart": chart.id, "data-points": "0" });
    const now = el("span", { class: "now" });
    view.charts.set(chart.id, { canvas, now, chart });
    grid.append(el("figure", { class: "chart" }, el("figcaption", {}, chart.title, now), canvas));
  }
  const swatch = (color) => { const i = el("i"); i.style.background = color; return i; };
  const legend = el("div", { class: "legend" },
    el("span", {}, swatch(COLORS.primary), "primary"),
    el("span", {}, swatch(COLORS.shadow), "shadow"),
    el("span", {}, swatch(COLORS.mirror), "mirror mismatches"),
    el("span", {}, "dashed lines: decisions (red rollback, green promote, amber pause)"));
  const rules = el("div", { class: "rules" }, el("h3", {}, "Rules"),
    el("table", {}, el("thead", {}, el("tr", {},
      ...["rule", "condition", "action", "values", "p-value", "state"].map((t) => el("th", {}, t)))), view.rules),
    view.look, view.synthetic);
  const timeline = el("div", { class: "timeline" }, el("h3", {}, "Decisions"), view.timeline);
  view.root.append(head, view.nodes, grid, legend, el("div", { class: "lower" }, rules, timeline));
  return view;
}

function phaseOf(status) {
  return (status && status.rollout && status.rollout.phase && status.rollout.phase.phase) || "pending";
}

function describe(entry) {
  const input = entry.input || {};
  if (input.input === "command") {
    const cmd = input.command || {};
    return cmd.command === "start" ? "start " + (cmd.version || "") : cmd.command + " (operator)";
  }
  if (input.verdict === "fired") return "rule " + input.rule + " → " + input.action;
  if (input.verdict === "pass") return "analysis passed";
  return input.input || "input";
}

const MARKER = { rolled_back: "#b91c1c", promoted: "#15803d", paused: "#b45309" };

function renderService(entry) {
  const { data, view } = entry;
  const status = data.rollout.status;
  const phase = phaseOf(status);
  view.root.dataset.phase = phase;
  view.phase.className = "badge phase phase-" + phase;
  view.phase.textContent = phase.replace("_", " ");
  view.version.textContent = status.rollout.version ? "shadow version " + status.rollout.version : "no shadow version";
  const shadow = data.rollout.shadow_weight, primary = data.rollout.primary_weight;
  view.bar.replaceChildren(
    el("div", { class: "p" }, "primary " + fmt(primary) + "%"),
    el("div", { class: "s" }, shadow > 0 ? "shadow " + fmt(shadow) + "%" : ""));
  view.bar.children[0].style.width = primary + "%";
  view.bar.children[1].style.width = shadow + "%";
  view.bar.children[0].hidden = primary <= 0;
  view.bar.children[1].hidden = shadow <= 0;
  view.bar.dataset.shadow = String(shadow);
  const plan = status.rollout.plan || [];
  const policy = data.policy;
  view.step.textContent = (status.step ? "step " + status.step + " of " + plan.length : "no step") +
    (policy ? " · " + policy.mode + " · analysis every " + policy.interval_ms / 1000 + " s, α " + policy.alpha +
      ", min sample " + policy.min_sample : "") +
    " · steps " + plan.map((s) => s.weight + "%").join(" → ");
  view.nodes.replaceChildren(...(status.nodes || []).map((n) => {
    const rejected = (n.rejected || []).map((r) => el("span", { class: "rejected" }, " REJECTED " + r.kind + " v" + r.version + ": " + r.error));
    return el("span", {}, "node " + n.node + ": snapshot v" + (n.version ?? "–") + ", " + n.streams + " stream(s)", ...rejected, " ");
  }));

  const decisions = status.decisions || [];
  const markers = decisions.filter((d) => d.changed && MARKER[d.phase]).map((d) => [atOf(d), MARKER[d.phase]]);
  const points = data.history.points;
  for (const { canvas, now, chart } of view.charts.values()) {
    drawChart(canvas, chart, points, markers);
    const last = points.length ? chart.series(points[points.length - 1]) : [null, null];
    now.textContent = chart.mirror ? fmt(last[1], chart.unit) : fmt(last[0], chart.unit) + " / " + fmt(last[1], chart.unit);
  }
  renderRules(data, view);
  renderSynthetic(data, view);
  view.timeline.replaceChildren(...decisions.slice().reverse().map((d) => {
    const li = el("li", { class: "phase-" + d.phase + (d.changed ? " changed" : ""), "data-phase": d.phase },
      el("span", { class: "when" }, clock(atOf(d))),
      el("span", { class: "what" }, describe(d)),
      el("span", { class: "meta" }, " → " + d.phase.replace("_", " ") + (d.step ? " (step " + d.step + ")" : "")),
      el("div", { class: "note" }, d.note));
    return li;
  }));
  if (!decisions.length) view.timeline.append(el("li", {}, "no decisions yet"));
}

function atOf(entry) {
  const input = entry.input || {};
  return input.now_ms ?? input.at_ms ?? 0;
}

function renderRules(data, view) {
  const looks = data.history.looks;
  const last = looks[looks.length - 1];
  const evaluated = looks.slice().reverse().find((l) => l.rules && l.rules.length);
  const states = new Map((evaluated ? evaluated.rules : []).map((r) => [r.name, r]));
  const rules = data.policy ? data.policy.rules : [];
  view.rules.replaceChildren(...rules.map((rule) => {
    const s = states.get(rule.name);
    let state = "–", cls = "";
    if (s) {
      if (s.fired) { state = "fired"; cls = "state-fired"; }
      else if (s.holds && s.streak >= s.for_intervals) { state = "holding (fired earlier)"; cls = "state-holding"; }
      else if (s.holds) { state = "holding " + s.streak + "/" + s.for_intervals; cls = "state-holding"; }
      else { state = "clear"; cls = "state-clear"; }
    }
    const values = s ? Object.entries(s.values).map(([k, v]) => el("code", {}, k + " = " + (typeof v === "number" ? fmt(v) : JSON.stringify(v)))) : ["–"];
    const p = s && s.p_value ? el("span", { title: s.p_value.field }, fmt(s.p_value.value)) : "–";
    return el("tr", { "data-rule": rule.name, "data-state": cls.replace("state-", "") || "none" },
      el("td", {}, rule.name), el("td", {}, el("code", {}, rule.when)),
      el("td", {}, rule.action + (rule.for_intervals > 1 ? " (for " + rule.for_intervals + ")" : "")),
      el("td", { class: "values" }, ...values), el("td", {}, p), el("td", { class: cls }, state));
  }));
  if (!last) view.look.textContent = "No analysis yet: it runs while a rollout is shadowing or paused.";
  else if (last.outcome.state === "inconclusive") view.look.textContent = "Last look " + clock(last.at_ms) + ": inconclusive — " + last.outcome.reason;
  else view.look.textContent = "Last look " + clock(last.at_ms) + " (step " + last.step + "): " +
    (last.outcome.holding.length ? "holding: " + last.outcome.holding.join(", ") : "no rule holds");
}

// The policy's synthetic probes as the last look that ran them saw them: runs, passes and
// latency per variant, and each failure's reason. Hidden for a policy without probes.
function renderSynthetic(data, view) {
  const look = data.history.looks.slice().reverse().find((l) => l.synthetic);
  if (!look) { view.synthetic.hidden = true; return; }
  view.synthetic.hidden = false;
  const s = look.synthetic;
  const row = (name, v) => el("tr", { "data-variant": name, class: v.failed > 0 ? "state-fired" : "" },
    el("td", {}, name), el("td", {}, v.passed + "/" + v.runs), el("td", {}, String(v.failing)),
    el("td", {}, fmt(v.latency_mean_ms, "ms")), el("td", {}, fmt(v.latency_max_ms, "ms")));
  view.synthetic.replaceChildren(
    el("h3", {}, "Synthetic probes ", el("span", { class: "meta" }, "look " + clock(look.at_ms))),
    el("table", {}, el("thead", {}, el("tr", {},
      ...["variant", "passed", "failing probes", "mean", "max"].map((t) => el("th", {}, t)))),
      el("tbody", {}, row("primary", s.primary), row("shadow", s.shadow))),
    el("ul", { class: "failures" }, ...(s.failures || []).map((f) => el("li", {}, el("code", {}, f)))));
}

// ---- state and events ---------------------------------------------------------------------

let pending = false;
function redraw(name) {
  const entry = services.get(name);
  if (!entry) return;
  entry.dirty = true;
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    for (const e of services.values()) if (e.dirty) { e.dirty = false; renderService(e); }
  });
}

function applySnapshot(state) {
  const main = document.getElementById("services");
  const seen = new Set();
  for (const data of state.services) {
    seen.add(data.service);
    let entry = services.get(data.service);
    if (!entry) {
      entry = { data, view: buildView(data.service) };
      services.set(data.service, entry);
      main.append(entry.view.root);
    }
    entry.data = data;
    redraw(data.service);
  }
  for (const [name, entry] of services) if (!seen.has(name)) { entry.view.root.remove(); services.delete(name); }
  document.getElementById("empty").hidden = services.size > 0;
  if (!services.size) document.getElementById("empty").textContent = "The engine runs no service.";
}

function push(list, item, key) {
  if (list.length && list[list.length - 1][key] >= item[key]) return;
  list.push(item);
  if (list.length > MAX_POINTS) list.splice(0, list.length - MAX_POINTS);
}

function connect() {
  const status = document.getElementById("connection");
  const source = new EventSource("/dashboard/events");
  source.addEventListener("open", () => { status.dataset.state = "live"; status.textContent = "live"; });
  source.addEventListener("error", () => { status.dataset.state = "lost"; status.textContent = "reconnecting…"; });
  source.addEventListener("snapshot", (e) => applySnapshot(JSON.parse(e.data)));
  source.addEventListener("point", (e) => {
    const change = JSON.parse(e.data);
    const entry = services.get(change.service);
    if (entry) { push(entry.data.history.points, change.point, "end_ms"); redraw(change.service); }
  });
  source.addEventListener("look", (e) => {
    const change = JSON.parse(e.data);
    const entry = services.get(change.service);
    if (entry) { push(entry.data.history.looks, change.look, "at_ms"); redraw(change.service); }
  });
  source.addEventListener("rollout", (e) => {
    const view = JSON.parse(e.data);
    const entry = services.get(view.service);
    if (entry) { entry.data.rollout = view; redraw(view.service); }
  });
}

window.addEventListener("resize", () => { for (const name of services.keys()) redraw(name); });
connect();
