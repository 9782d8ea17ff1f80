// opsbot's board: polls /board/api/state with Telegram's signed initData, renders it, and
// sends the board's actions to /board/api/act. No framework, no build step, no inline script.
"use strict";

const webApp = (window.Telegram && window.Telegram.WebApp) || null;
const initData = webApp ? webApp.initData || "" : "";
const SVG = "http://www.w3.org/2000/svg";
const THEME = {
  bg_color: "--tg-theme-bg-color", text_color: "--tg-theme-text-color",
  hint_color: "--tg-theme-hint-color", link_color: "--tg-theme-link-color",
  button_color: "--tg-theme-button-color", button_text_color: "--tg-theme-button-text-color",
  secondary_bg_color: "--tg-theme-secondary-bg-color",
  destructive_text_color: "--tg-theme-destructive-text-color",
};
const STATE_WORDS = { ok: "✓ OK", warn: "! Degraded", fail: "✕ Down" };
let timer = null;
let refresh = 10;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.includes("-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function applyTheme() {
  const params = (webApp && webApp.themeParams) || {};
  const root = document.documentElement.style;
  for (const [key, name] of Object.entries(THEME)) {
    if (params[key]) root.setProperty(name, params[key]);
  }
  const dark = webApp && webApp.colorScheme === "dark";
  document.documentElement.dataset.scheme = dark ? "dark" : "light";
}

function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function ms(value) {
  if (value === null || value === undefined) return "no latency yet";
  return value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(1)} s`;
}

function sparkline(points) {
  const box = svg("svg", { class: "spark", viewBox: "0 0 96 32", preserveAspectRatio: "none",
    role: "img", "aria-label": "latency over the last 24 hours" });
  const seen = points.filter((p) => p !== null);
  if (!seen.length) return box;
  const top = Math.max(...seen) || 1;
  const coords = [];
  points.forEach((p, i) => {
    if (p !== null) coords.push(`${i + 0.5},${(31 - (p / top) * 29).toFixed(1)}`);
  });
  if (coords.length === 1) coords.push(coords[0].replace(/^[\d.]+/, (x) => String(+x + 1)));
  box.append(svg("polyline", { points: coords.join(" ") }));
  return box;
}

function uptimeBars(uptime) {
  const grid = el("div", { class: "uptime" });
  for (const [label, pct] of Object.entries(uptime)) {
    const bar = svg("svg", { viewBox: "0 0 100 6", preserveAspectRatio: "none",
      role: "img", "aria-label": `uptime ${label} ${pct}%` });
    bar.append(svg("rect", { class: "track", x: 0, y: 0, width: 100, height: 6, rx: 3 }));
    bar.append(svg("rect", { class: "fill", x: 0, y: 0, width: pct, height: 6, rx: 3 }));
    const shown = pct >= 100 ? "100%" : `${pct.toFixed(2)}%`;
    grid.append(el("span", {}, label), bar, el("span", { class: "pct" }, shown));
  }
  return grid;
}

function button(label, body, secondary) {
  const b = el("button", { type: "button", class: secondary ? "secondary" : "" }, label);
  b.dataset.action = body.do;
  b.addEventListener("click", () => confirmThen(`${label}?`, () => act(body, b)));
  return b;
}

function confirmThen(question, then) {
  if (webApp && typeof webApp.showConfirm === "function") {
    webApp.showConfirm(question, (yes) => { if (yes) then(); });
  } else {
    then();
  }
}

function list(id, items, render, emptyText) {
  const node = document.getElementById(id);
  node.replaceChildren(...items.map(render));
  if (!items.length) node.append(el("li", { class: "empty" }, emptyText));
}

function budgetLine(o) {
  // the objective's figures as the server computed them (the /slo arithmetic)
  const pct = (v) => (v === null ? "–" : `${Math.floor(v * 100) / 100} %`);  // as /slo: floored
  const burn = o.burn_1h === null ? "" : o.burn_1h === 0 ? " · not burning" : ` · burning ${o.burn_1h}×`;
  if (o.sli === null) return el("div", { class: "meta slo" }, `SLO ${pct(o.objective)} · no rounds recorded yet`);
  const spent = o.budget_left !== null && o.budget_left <= 0;
  return el("div", { class: `meta slo${spent ? " spent" : ""}`, title: o.verdict },
    `SLO ${pct(o.objective)} · ${pct(o.sli)} · ${spent ? "budget spent" : pct(o.budget_left) + " budget left"}${burn}`);
}

function targetCard(t, now) {
  const since = t.since ? ` · since ${ago(now - t.since)}` : "";
  const failing = Object.keys(t.checks || {});
  const card = el("li", { class: `card ${t.state}`, "data-target": t.name },
    el("div", { class: "row" },
      el("span", { class: "name" }, t.name),
      el("span", { class: `state ${t.state}` }, STATE_WORDS[t.state] || t.state)),
    el("div", { class: "meta" },
      `${t.kind} · ${ms(t.latency_ms)}${since}${failing.length ? " · " + failing.join(", ") : ""}`),
    sparkline(t.spark),
    uptimeBars(t.uptime));
  if (t.objective) card.append(budgetLine(t.objective));
  if (t.actions.length) {
    card.append(el("div", { class: "actions" },
      ...t.actions.map((a) => button(a[0].toUpperCase() + a.slice(1), { do: a, target: t.name },
        a !== "restart"))));
  }
  return card;
}

function alertCard(a, now) {
  const state = a.severity === "critical" ? "fail" : "warn";
  const notes = [a.acked_by ? `acked by ${a.acked_by}` : "", a.silenced ? "silenced" : ""]
    .filter(Boolean).join(" · ");
  const card = el("li", { class: `card ${state}`, "data-alert": a.id },
    el("div", { class: "row" }, el("span", { class: "name" }, a.target || a.id),
      el("span", { class: `state ${state}` }, a.severity)),
    el("div", {}, a.summary),
    el("div", { class: "meta" }, `firing ${ago(now - a.since)}${notes ? " · " + notes : ""}`));
  const buttons = [];
  if (a.can.ack) buttons.push(button("Ack", { do: "ack", alert: a.id }));
  if (a.can.silence) buttons.push(button("Silence 1h", { do: "silence", alert: a.id }, true));
  if (buttons.length) card.append(el("div", { class: "actions" }, ...buttons));
  return card;
}

function incidentCard(i, now) {
  const card = el("li", { class: "card fail", "data-incident": i.id },
    el("div", { class: "row" }, el("span", { class: "name" }, `${i.id} ${i.severity}`),
      el("span", { class: "state warn" }, i.state)),
    el("div", {}, i.title),
    el("div", { class: "meta" }, `${i.commander} · ${ago(now - i.since)}`),
    el("ol", { class: "timeline", reversed: true },
      ...i.timeline.map((e) => el("li", {}, `${ago(now - e.at)} ago · ${e.actor}: ${e.text}`))));
  if (i.can.update) {
    const input = el("input", { type: "text", placeholder: "Update…", maxLength: 1000,
      "aria-label": `update ${i.id}` });
    const send = el("button", { type: "button" }, "Update");
    send.addEventListener("click", () => {
      if (input.value.trim()) act({ do: "update", incident: i.id, text: input.value }, send);
    });
    card.append(el("div", { class: "update" }, input, send));
  }
  return card;
}

function requestCard(r, now) {
  const card = el("li", { class: "card warn", "data-request": r.id },
    el("div", { class: "row" }, el("span", { class: "name" }, `${r.action} ${r.target}`),
      el("span", { class: "state warn" }, r.status)),
    el("div", { class: "meta" },
      `${r.id} · by ${r.requester} · expires in ${ago(r.expires - now)}`));
  const buttons = [];
  if (r.can.approve) buttons.push(button("Approve", { do: "approve", request: r.id }));
  if (r.can.deny) buttons.push(button("Deny", { do: "deny", request: r.id }, true));
  if (buttons.length) card.append(el("div", { class: "actions" }, ...buttons));
  return card;
}

function backupCard(b) {
  const age = b.age === null ? "no backup yet" : `${ago(b.age)} old`;
  const rpo = b.rpo === null ? "no RPO" : `RPO ${ago(b.rpo)}`;
  return el("li", { class: `card ${b.state}` },
    el("div", { class: "row" }, el("span", { class: "name" }, `${b.target} ${b.type}`),
      el("span", { class: `state ${b.state}` }, b.state === "ok" ? "✓ within RPO" :
        b.age === null ? "✕ none yet" : b.state === "fail" ? "✕ over RPO" : "! none")),
    el("div", { class: "meta" }, `${b.source} · ${age} · ${rpo}`));
}

function render(board) {
  const now = board.generated;
  const down = board.targets.filter((t) => t.state === "fail").length;
  const firing = board.alerts.length;
  document.getElementById("summary").textContent =
    `${board.targets.length} targets, ${down} down · ${firing} alert${firing === 1 ? "" : "s"} ` +
    `firing · ${board.incidents.length} open incident${board.incidents.length === 1 ? "" : "s"}`;
  list("targets", board.targets, (t) => targetCard(t, now), "No targets are configured.");
  list("alerts", board.alerts, (a) => alertCard(a, now), "Nothing is firing.");
  list("incidents", board.incidents, (i) => incidentCard(i, now), "No open incidents.");
  list("backups", board.backups, backupCard, "No backups are configured.");
  document.getElementById("requests-section").hidden = !board.requests.length;
  list("requests", board.requests, (r) => requestCard(r, now), "");
  const when = new Date(now * 1000).toISOString().slice(11, 19);
  document.getElementById("updated").textContent =
    `${board.you.name} (${board.you.role}) · updated ${when} UTC, every ${board.refresh} s`;
  refresh = board.refresh;
}

function outside() {
  clearTimeout(timer);
  document.querySelector("main").replaceChildren(
    el("p", { class: "gate", id: "gate" }, "Open this from Telegram: the board needs the " +
      "sign-in Telegram gives it, and only people configured in opsbot may see it."));
  document.getElementById("summary").textContent = "Not signed in";
}

async function call(path, options) {
  const response = await fetch(path, { ...options, headers: {
    ...(options && options.headers), Authorization: `tma ${initData}` } });
  if (response.status === 401) { outside(); return null; }
  return response;
}

async function load() {
  clearTimeout(timer);
  try {
    const response = await call("/board/api/state");
    if (response === null) return;
    if (response.ok) render(await response.json());
  } catch (error) {
    document.getElementById("summary").textContent = "opsbot is not answering; retrying…";
  }
  timer = setTimeout(load, refresh * 1000);
}

function notice(text) {
  const node = document.getElementById("notice");
  if (!node) return;
  node.textContent = text;
  node.hidden = false;
}

async function act(body, source) {
  if (source) source.disabled = true;
  try {
    const response = await call("/board/api/act", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (response === null) return;
    const answer = await response.json();
    notice(answer.text || answer.error || "");
  } catch (error) {
    notice("opsbot did not answer; try again.");
  } finally {
    if (source) source.disabled = false;
    load();
  }
}

applyTheme();
if (webApp) {
  if (typeof webApp.onEvent === "function") webApp.onEvent("themeChanged", applyTheme);
  if (typeof webApp.ready === "function") webApp.ready();
  if (typeof webApp.expand === "function") webApp.expand();
}
if (initData) load(); else outside();
