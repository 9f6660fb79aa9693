// The dashboard page: reads /api/overview, the dead-letter groups of a chosen subscription, and posts redrive/purge
// per reason group after a confirmation. A token (if the server needs one) is asked for once and kept in this tab's
// session storage; it is never part of a page.
"use strict";

const state = { actions: false, selected: null };

function token() {
  return sessionStorage.getItem("tidings-token");
}

async function api(path, body) {
  const headers = { "Accept": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    const t = window.prompt("This dashboard needs its token:");
    if (t) {
      sessionStorage.setItem("tidings-token", t);
      return api(path, body);
    }
  }
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

const dash = "–";
const fmt = (n) => (n === null || n === undefined ? dash : String(n));
const age = (secs) => {
  if (secs === null || secs === undefined) return dash;
  if (secs < 60) return Math.round(secs) + "s";
  if (secs < 3600) return Math.round(secs / 60) + "m";
  return Math.round(secs / 3600) + "h";
};
const when = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";

function showError(e) {
  const p = document.getElementById("error");
  if (e) { p.textContent = String(e.message || e); p.hidden = false; } else { p.hidden = true; }
}

async function loadOverview() {
  const o = await api("/api/overview");
  state.actions = o.actions;
  const backend = document.getElementById("backend");
  backend.replaceChildren("backend ");
  if (o.manual.backend) {
    const a = document.createElement("a");
    a.href = o.manual.backend; a.target = "_blank"; a.rel = "noopener"; a.textContent = o.backend;
    a.title = "this backend's page in the manual";
    backend.append(a);
  } else {
    backend.append(o.backend);
  }
  backend.append(`, prefix "${o.name_prefix}"`);
  document.getElementById("manual").href = o.manual.dashboard;
  document.getElementById("mode").textContent = o.actions ? "actions on" : "read-only";
  const body = document.querySelector("#topology tbody");
  body.replaceChildren();
  for (const t of o.topics) {
    const delivery = t.delivery ? t.delivery + (t.ordered ? ", ordered" : "") : dash;
    const subs = t.subscriptions.length ? t.subscriptions : [null];
    for (const s of subs) {
      const row = el("tr", { "data-sub": s ? `${t.name}/${s.name}` : "" },
        el("td", {}, t.name), el("td", {}, delivery), el("td", {}, s ? s.name : "(none)"),
        el("td", { class: "num backlog" }, s ? fmt(s.stats.backlog) : ""),
        el("td", { class: "num scheduled" }, s ? fmt(s.stats.scheduled) : ""),
        el("td", { class: "num" }, s ? fmt(s.stats.in_flight) : ""),
        el("td", { class: "num" }, s ? age(s.stats.oldest_unacked) : ""),
        // Only a non-zero DLQ is alarming (bold red); 0 and unknown read as plain figures.
        el("td", { class: "num dlq-count" + (s && s.stats.dead_letters > 0 ? " alarm" : "") }, s ? fmt(s.stats.dead_letters) : ""),
        ...figureCells(o.figures, s ? `${t.name}/${s.name}` : null),
        el("td", {}, s ? el("button", { type: "button", onclick: () => select(t.name, s.name) }, "Dead letters") : ""));
      body.append(row);
    }
  }
  const unknown = document.getElementById("unknown");
  unknown.replaceChildren(...o.unknown.map((u) => el("li", {}, `${dash} ${u.field.replace(/_/g, " ")}: ${u.reason}`)),
    ...o.figures.unknown.map((u) => el("li", {}, `${dash} ${u}`)));
  const c = o.figures.cost;
  document.getElementById("cost").textContent = c
    ? `Estimated bill ${money(c.usd_per_month)}/month at the rate of the last ${Math.round(c.window_secs)} s (list prices: ` +
      c.prices.map((p) => `${p.service} from ${p.source}, ${p.date}`).join("; ") + `). ${c.notes.join("; ")}.`
    : "";
}

const rate = (n) => (n === null || n === undefined ? dash : (Math.abs(n) >= 10 ? n.toFixed(0) : n.toFixed(2)));
const money = (n) => (n === null || n === undefined ? dash : "$" + (n >= 0.01 || n === 0 ? n.toFixed(2) : n.toPrecision(2)));

function figureCells(f, key) {
  if (!key) return ["", "", "", "", "", ""].map(() => el("td", {}, ""));
  const r = f.subscriptions[key] || {};
  const ms = r.handler_mean_secs === null || r.handler_mean_secs === undefined ? dash : (r.handler_mean_secs * 1000).toFixed(1) + " ms";
  return [
    el("td", { class: "num backlog-rate" }, rate(r.backlog)),
    el("td", { class: "num dlq-rate" }, rate(r.dead_letters)),
    el("td", { class: "num acked-rate" }, rate(r.acked)),
    el("td", { class: "num in-flight-handlers", title: f.in_process ? "in this process" : "from the application's metrics" }, fmt(r.in_flight)),
    el("td", { class: "num handler-mean" }, ms),
    el("td", { class: "num cost" }, money(r.usd_per_month)),
  ];
}

async function showTimeline(id) {
  document.getElementById("timeline-id").value = id;
  const list = document.getElementById("timeline");
  try {
    const t = await api(`/api/message/${encodeURIComponent(id)}`);
    list.replaceChildren(...t.events.map((e) => el("li", { class: "event", "data-what": e.what },
      el("strong", {}, e.what), " ", e.at_ms ? when(e.at_ms) : dash, " ", el("span", { class: "muted" }, e.subscription), " ", e.detail)));
    document.getElementById("timeline-unknown").replaceChildren(...t.unknown.map((u) => el("li", {}, `${dash} ${u}`)));
    showError(null);
  } catch (e) { list.replaceChildren(el("li", { class: "muted" }, String(e.message || e))); }
}

document.getElementById("timeline-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  showTimeline(document.getElementById("timeline-id").value.trim());
});

async function loadGroups() {
  if (!state.selected) return;
  const [topic, sub] = state.selected;
  const g = await api(`/api/dlq/${encodeURIComponent(topic)}/${encodeURIComponent(sub)}`);
  document.getElementById("dlq").hidden = false;
  document.getElementById("dlq-name").textContent = `${topic} / ${sub}`;
  document.getElementById("dlq-total").textContent = `(${g.total})`;
  document.getElementById("dlq-empty").hidden = g.total !== 0;
  const body = document.querySelector("#groups tbody");
  body.replaceChildren();
  for (const gr of g.groups) {
    const examples = el("td", {}, ...gr.examples.map(([id, payload]) => el("div", {}, el("code", {}, payload), " ", el("a", { href: "#", class: "muted message-id", onclick: (ev) => { ev.preventDefault(); showTimeline(id); } }, id))));
    const actions = el("td", {});
    if (state.actions) {
      actions.append(
        el("button", { type: "button", class: "redrive", onclick: () => act("redrive", gr) }, "Redrive"), " ",
        el("button", { type: "button", class: "purge", onclick: () => act("purge", gr) }, "Purge"));
    } else {
      actions.append(el("span", { class: "muted" }, "actions off"));
    }
    body.append(el("tr", { "data-reason": gr.reason }, el("td", { class: "num group-count" }, gr.count), el("td", {}, gr.reason), el("td", {}, when(gr.newest_ms)), examples, actions));
  }
}

function confirmDialog(text) {
  return new Promise((resolve) => {
    const d = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
  });
}

async function act(action, group) {
  const [topic, sub] = state.selected;
  const what = action === "redrive" ? "Move back into the subscription" : "Delete for good";
  if (!(await confirmDialog(`${what}: ${group.count} dead letter(s) of ${topic} / ${sub} with reason "${group.reason}"?`))) return;
  try {
    await api(`/api/dlq/${encodeURIComponent(topic)}/${encodeURIComponent(sub)}/${action}`, { reason: group.reason, confirmed: true });
    showError(null);
  } catch (e) { showError(e); }
  await refresh();
}

async function loadLog() {
  const entries = await api("/api/log");
  const body = document.querySelector("#log tbody");
  // Who: the client's short name and the peer address; the full user agent on hover.
  const who = (e) => el("td", { class: "who", title: e.user_agent || "no user agent" },
    el("span", { class: "client" }, e.client), " ", el("span", { class: "muted peer" }, e.peer));
  body.replaceChildren(...entries.map((e) => el("tr", {}, el("td", {}, when(Number(e.at))), who(e), el("td", {}, e.action), el("td", {}, e.subscription), el("td", {}, e.reason), el("td", {}, e.outcome))));
}

function select(topic, sub) {
  state.selected = [topic, sub];
  loadGroups().catch(showError);
}

async function refresh() {
  try {
    await loadOverview();
    await loadGroups();
    await loadLog();
    showError(null);
  } catch (e) { showError(e); }
  document.body.dataset.loaded = String(Date.now());
}

document.getElementById("refresh").addEventListener("click", refresh);
refresh();
setInterval(refresh, 5000);
