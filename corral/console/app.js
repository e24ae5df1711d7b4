// Corral's web console: reads /ui/api/*, changes things only through the admin API (/admin/*), so every
// change is authorised and audited as the same call from any client. The API key lives in this tab's
// sessionStorage and goes out as a bearer header: never in a cookie or a URL.
"use strict";

const KEY_ITEM = "corral.key";
const POLL_MS = 1500;
const RETRY_MS = 2000;
const S = { key: sessionStorage.getItem(KEY_ITEM), session: null, overview: null, page: "fleet",
  timer: null, down: false, scope: "all", running: false, generation: 0 };
const $ = (id) => document.getElementById(id);
const field = (form, name) => form.elements.namedItem(name);

// Elements from data only (textContent), so a node name or an error text can never become markup.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name === "style") el.style.cssText = value; // through the CSSOM: the CSP refuses style attributes
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = {};
  if (S.key) headers.Authorization = "Bearer " + S.key;
  let body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  const reply = await fetch(path, { method: options.method || "GET", headers, body, cache: "no-store",
    credentials: "omit", redirect: "error" });
  let doc = null;
  try { doc = await reply.json(); } catch (e) { doc = null; }
  if (!reply.ok) {
    const message = doc && doc.error ? (doc.error.message || doc.error) : reply.status + " " + reply.statusText;
    throw new ApiError(String(message), reply.status);
  }
  return doc;
}

// ---- shell: pages, banner, toasts, dialogs -------------------------------------------------------

function isAdmin() { return Boolean(S.overview && S.overview.auth.admin); }

function showPage(name) {
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== "page-" + name;
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === S.page);
}

function route() {
  const wanted = (location.hash.replace(/^#\/?/, "") || "fleet").split("/")[0];
  S.page = ["fleet", "models", "traffic", "keys"].includes(wanted) ? wanted : "fleet";
  if (!S.running) return;
  render();
  refresh();
}

function banner(text) {
  $("banner").hidden = !text;
  $("banner").textContent = text || "";
}

let toastTimer = null;
function toast(text, error) {
  const el = $("toast");
  el.textContent = text;
  el.className = error ? "error" : "";
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}

function confirmAction(text, okLabel) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  dialog.showModal();
  return new Promise((resolve) => {
    const done = (answer) => () => {
      $("confirm-ok").onclick = $("confirm-cancel").onclick = dialog.oncancel = null;
      dialog.close();
      resolve(answer);
    };
    $("confirm-ok").onclick = done(true);
    $("confirm-cancel").onclick = done(false);
    dialog.oncancel = done(false);
  });
}

function showSecret(title, key) {
  $("secret-title").textContent = title;
  $("secret-key").textContent = key;
  $("secret").showModal();
}

$("secret-done").addEventListener("click", () => { $("secret-key").textContent = ""; $("secret").close(); });
$("secret-copy").addEventListener("click", async () => {
  try { await navigator.clipboard.writeText($("secret-key").textContent); toast("Copied"); }
  catch (e) { toast("Copy it by hand: the browser refused the clipboard", true); }
});

// An admin action, confirmed first; the same API call any client would make (and audited as such).
async function act(question, okLabel, path, options, done) {
  if (!(await confirmAction(question, okLabel))) return;
  try {
    const doc = await api(path, options);
    if (done) done(doc);
    refresh();
  } catch (e) {
    toast(e.message, true);
  }
}

// ---- formatting ------------------------------------------------------------------------------------

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return (+(n / Math.pow(1024, i)).toFixed(1)) + " " + units[i];
}

function duration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return seconds + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m " + (seconds % 60) + "s";
  return Math.floor(seconds / 3600) + "h " + Math.floor((seconds % 3600) / 60) + "m";
}

// ---- fleet -----------------------------------------------------------------------------------------

function nodeCard(node, now) {
  const admin = isAdmin();
  const cap = node.max_concurrency;
  const loadedTotal = node.loaded.reduce((sum, m) => sum + (m.size_vram || 0), 0);
  // Each bar: the model's share of the node's VRAM when vram_gb is configured, else the share of the
  // model that sits in VRAM (as `ollama ps` shows "100% GPU"; the rest runs on the CPU).
  const share = (m) => node.vram_bytes ? m.size_vram / node.vram_bytes : (m.size ? m.size_vram / m.size : 0);
  const gpu = (m) => m.size ? ` · ${Math.round((100 * m.size_vram) / m.size)}% GPU` : "";
  const actions = admin ? h("div", { class: "actions" },
    node.state === "draining"
      ? h("button", { class: "quiet", "data-action": "undrain", onclick: () => act(
        `Undrain ${node.name}? It takes new requests again.`, "Undrain",
        `/admin/backends/${encodeURIComponent(node.name)}/undrain`, { method: "POST" },
        () => toast(`${node.name} takes requests again`)) }, "Undrain")
      : h("button", { class: "quiet", "data-action": "drain", onclick: () => act(
        `Drain ${node.name}? It takes no new requests; those in flight finish.`, "Drain",
        `/admin/backends/${encodeURIComponent(node.name)}/drain`, { method: "POST" },
        () => toast(`${node.name} is draining`)) }, "Drain"),
    h("button", { class: "danger", "data-action": "remove", onclick: () => act(
      `Remove ${node.name} from the fleet? Corral stops routing to it until it is added again.`, "Remove",
      `/admin/backends/${encodeURIComponent(node.name)}`, { method: "DELETE" },
      () => toast(`${node.name} removed`)) }, "Remove")) : null;
  return h("article", { class: "card " + node.state, "data-node": node.name, "data-state": node.state },
    h("div", { class: "card-head" },
      h("span", { class: "name", text: node.name }),
      h("span", { class: "badge state " + node.state, text: node.state }),
      node.breaker !== "closed" ? h("span", { class: "badge warn breaker", text: "breaker " + node.breaker.replace("_", "-") }) : null),
    h("div", { class: "facts", text: `${node.url} · ${node.type}` + (node.version ? ` · v${node.version}` : "") }),
    h("div", { class: "row" }, h("span", { text: "in flight" }),
      h("b", { class: "in-flight", text: cap ? `${node.in_flight} / ${cap}` : String(node.in_flight) })),
    h("div", { class: "bar" }, h("span", { style: `width:${Math.min(100, (100 * node.in_flight) / (cap || Math.max(node.parallel, node.in_flight, 1)))}%` })),
    h("div", { class: "row" }, h("span", { text: "requests / failures" }),
      h("span", { text: `${node.requests_total} / ${node.failures_total}` })),
    h("div", { class: "loaded" },
      h("div", { class: "row" }, h("span", { text: "loaded models" }),
        h("span", { class: "muted", text: node.vram_bytes ? `${bytes(loadedTotal)} of ${bytes(node.vram_bytes)} VRAM` : `${bytes(loadedTotal)} VRAM` })),
      node.loaded.length === 0 ? h("div", { class: "muted", text: "none" }) : node.loaded.map((m) => h("div", { class: "model" },
        h("div", { class: "row" }, h("span", {}, m.model, h("span", { class: "muted", text: ` ${bytes(m.size_vram)}${gpu(m)}` })),
          h("span", { class: "muted", text: m.expires_at === null ? "kept loaded" : "unloads in " + duration(m.expires_at - now) })),
        h("div", { class: "bar vram", title: bytes(m.size_vram) + " in VRAM" },
          h("span", { style: `width:${Math.min(100, 100 * share(m))}%` }))))),
    node.last_error ? h("div", { class: "lasterr", text: "last error: " + node.last_error }) : null,
    actions);
}

function renderFleet() {
  const doc = S.overview;
  const up = doc.nodes.filter((n) => n.state === "up").length;
  const draining = doc.nodes.filter((n) => n.state === "draining").length;
  const stat = (value, what) => h("div", {}, h("b", { text: value }), h("span", { class: "muted", text: what }));
  $("fleet-summary").replaceChildren(
    stat(`${up} / ${doc.nodes.length}`, "nodes up"),
    stat(String(draining), "draining"),
    stat(String(doc.nodes.reduce((sum, n) => sum + n.in_flight, 0)), "in flight"),
    stat(`${doc.queue.waiting}`, `queued (max ${doc.queue.max})`),
    stat(doc.ready ? "ready" : "not ready", "gateway"),
    stat("v" + doc.version, "up " + duration(doc.uptime_s)));
  $("nodes").replaceChildren(...doc.nodes.map((n) => nodeCard(n, doc.now)));
  $("add-node").hidden = !isAdmin();
}

$("add-node").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { name: field(form, "name").value.trim(), url: field(form, "url").value.trim(),
    type: field(form, "type").value };
  act(`Add node ${body.name} at ${body.url}?`, "Add node", "/admin/backends", { method: "POST", json: body },
    () => { toast(`${body.name} added`); form.reset(); });
});

// ---- models ----------------------------------------------------------------------------------------

function renderModels() {
  const doc = S.overview;
  const nodes = doc.nodes.map((n) => n.name);
  const head = h("tr", {}, h("th", { text: "model" }), nodes.map((n) => h("th", { text: n })), h("th", { text: "requests, last 5 min" }));
  const rows = doc.models.map((m) => h("tr", { class: m.drift ? "drift" : "", "data-model": m.name },
    h("td", {}, m.name, m.drift ? h("span", { class: "badge warn", text: " digest drift" }) : null),
    nodes.map((n) => {
      const cell = m.nodes[n];
      if (!cell) return h("td", { class: "muted", text: "–" });
      return h("td", { "data-node": n, title: cell.digest ? "sha256:" + cell.digest : "" },
        cell.loaded ? "● loaded " : "○ available ", h("span", { class: "digest", text: cell.digest.slice(0, 7) }));
    }),
    h("td", { text: Object.entries(m.recent).map(([n, count]) => `${n} ${count}`).join(" · ") || "–" })));
  $("matrix").replaceChildren(h("thead", {}, head), h("tbody", {}, rows.length ? rows : h("tr", {},
    h("td", { class: "muted", text: "No models listed by any node yet." }))));
}

// ---- traffic ---------------------------------------------------------------------------------------

const CHARTS = [
  { id: "requests", unit: "", series: [["requests_s", "requests/s", "#1f5f8b"], ["errors_s", "errors/s", "#c4320a"]] },
  { id: "ttft", unit: "s", series: [["ttft_p50_s", "p50", "#1a7f37"], ["ttft_p99_s", "p99", "#b54708"]] },
  { id: "tokens", unit: "", series: [["tokens_s", "tokens/s", "#7a5af8"]] },
  { id: "queue", unit: "", series: [["queue", "queued", "#c4320a"], ["in_flight", "in flight", "#1f5f8b"]] },
];

function renderTraffic(doc) {
  const select = $("scope");
  const options = doc.scopes.map((s) => s === "all" ? "all" : s);
  if (select.dataset.options !== options.join("\n")) {
    select.replaceChildren(...options.map((s) => h("option", { value: s, text: s === "all" ? "everything" : s.replace(":", ": ") })));
    select.dataset.options = options.join("\n");
  }
  select.value = doc.scope;
  for (const chart of CHARTS) {
    const series = chart.series.map(([field, name, color]) => ({ name, color, values: doc[field] }));
    Charts.draw($("chart-" + chart.id), doc.t, series, chart.unit);
    $("legend-" + chart.id).replaceChildren(...series.map((s) => {
      const last = [...s.values].reverse().find((v) => v !== null);
      return h("span", { "data-series": s.name },
        h("i", { style: "background:" + s.color }), s.name + " ",
        h("b", { text: last === undefined ? "–" : Charts.label(last, chart.unit) }));
    }));
  }
}

$("scope").addEventListener("change", (event) => { S.scope = event.target.value; refresh(); });

// ---- keys ------------------------------------------------------------------------------------------

function renderKeys(doc) {
  const now = doc.now;
  const limit = (used, max) => max ? `${used} / ${max}` : `${used}`;
  const head = h("tr", {}, ["name", "prefix", "role", "models", "requests/min", "tokens/min", "concurrent",
    "refused (5 min)", "created", ""].map((t) => h("th", { text: t })));
  const rows = doc.keys.map((k) => {
    const revoked = k.revoked_at !== null;
    const expired = k.expires_at !== null && k.expires_at <= now;
    const u = k.usage;
    return h("tr", { class: revoked ? "revoked" : "", "data-key": k.name },
      h("td", { text: k.name }), h("td", { text: k.prefix }), h("td", { text: k.role }),
      h("td", { text: k.models.join(", ") }),
      h("td", { class: "rpm", text: limit(u.requests_1m, k.rpm) }),
      h("td", { class: "tpm", text: limit(u.tokens_1m, k.tpm) }),
      h("td", { text: k.max_concurrency ? "max " + k.max_concurrency : "–" }),
      h("td", { text: String(u.throttled_5m) }),
      h("td", { text: new Date(k.created_at * 1000).toLocaleString() }),
      h("td", {}, revoked ? "revoked" : expired ? "expired" : [
        h("button", { class: "quiet", "data-action": "rotate", onclick: () => act(
          `Rotate ${k.name}? Its current secret stops working at once.`, "Rotate",
          `/admin/keys/${encodeURIComponent(k.name)}/rotate`, { method: "POST" },
          (created) => showSecret(`New secret for ${k.name}`, created.key)) }, "Rotate"), " ",
        h("button", { class: "danger", "data-action": "revoke", onclick: () => act(
          `Revoke ${k.name}? Requests with it are refused from now on.`, "Revoke",
          `/admin/keys/${encodeURIComponent(k.name)}`, { method: "DELETE" },
          () => toast(`${k.name} revoked`)) }, "Revoke")]));
  });
  $("keys").replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
}

$("create-key").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { name: field(form, "name").value.trim(), role: field(form, "role").value,
    models: field(form, "models").value.split(",").map((m) => m.trim()).filter(Boolean) };
  for (const name of ["rpm", "tpm", "max_concurrency"]) {
    const value = field(form, name).value;
    if (value !== "") body[name] = Number(value);
  }
  act(`Create ${body.role} key ${body.name} for ${body.models.join(", ") || "no models"}?`, "Create key",
    "/admin/keys", { method: "POST", json: body },
    (created) => { form.reset(); showSecret(`New key ${created.name}`, created.key); });
});

// ---- the loop: poll, render, reconnect -------------------------------------------------------------

function pageFor() {
  if (S.page === "keys" && !S.overview.auth.keys) return "nokeys";
  if (S.page === "keys" && !isAdmin()) return "denied";
  return S.page;
}

function render() {
  const doc = S.overview;
  if (!doc) return;
  $("nav").hidden = false;
  for (const link of document.querySelectorAll("#nav a[data-admin]")) link.hidden = doc.auth.keys && !isAdmin();
  const a = doc.auth;
  $("who").textContent = a.keys ? `${a.name} (${a.role})` : "read-only";
  $("signout").hidden = !a.keys;
  const notice = $("notice");
  notice.hidden = a.keys;
  if (!a.keys) {
    notice.replaceChildren("API keys are off (Corral's default on a loopback address), so this console is read-only. ",
      "To manage nodes and keys here, set ", h("code", { text: "auth.enabled: true" }), ", create an admin key with ",
      h("code", { text: "corral keys create --name admin --role admin" }), ", restart Corral and sign in with the key.");
  }
  const page = pageFor();
  showPage(page);
  if (page === "fleet") renderFleet();
  if (page === "models") renderModels();
}

// One poll loop: a refresh started by a click or a page change supersedes the one in flight.
async function refresh() {
  clearTimeout(S.timer);
  const generation = ++S.generation;
  const current = () => generation === S.generation && S.running;
  try {
    const overview = await api("/ui/api/overview");
    if (!current()) return;
    S.overview = overview;
    const page = pageFor();
    render();
    if (page === "traffic") {
      const doc = await api("/ui/api/traffic?scope=" + encodeURIComponent(S.scope) + "&window=900&step=5");
      if (!current()) return;
      renderTraffic(doc);
    } else if (page === "keys") {
      const doc = await api("/ui/api/keys");
      if (!current()) return;
      renderKeys(doc);
    }
    if (S.down) toast("Reconnected to Corral");
    S.down = false;
    banner(null);
    document.body.dataset.live = "1";
    S.timer = setTimeout(refresh, POLL_MS);
  } catch (e) {
    if (!current()) return;
    if (e instanceof ApiError && e.status === 401) { signOut("Your key is no longer accepted. Sign in again."); return; }
    if (e instanceof ApiError && e.status === 403 && S.scope !== "all") { S.scope = "all"; }
    if (!(e instanceof ApiError)) {
      S.down = true;
      document.body.dataset.live = "0";
      banner("Corral is unreachable: reconnecting…");
    } else {
      toast(e.message, true);
    }
    S.timer = setTimeout(refresh, S.down ? RETRY_MS : POLL_MS);
  }
}

function signOut(message) {
  S.running = false;
  clearTimeout(S.timer);
  S.key = null;
  S.overview = null;
  sessionStorage.removeItem(KEY_ITEM);
  $("nav").hidden = true;
  $("who").textContent = "";
  $("signout").hidden = true;
  $("notice").hidden = true;
  $("signin-error").hidden = !message;
  $("signin-error").textContent = message || "";
  showPage("signin");
}

$("signout").addEventListener("click", () => signOut(null));

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  S.key = $("signin-key").value.trim();
  try {
    S.overview = await api("/ui/api/overview");
  } catch (e) {
    const message = e instanceof ApiError && e.status === 401 ? "This key was not accepted." : e.message;
    signOut(message);
    return;
  }
  $("signin-key").value = "";
  sessionStorage.setItem(KEY_ITEM, S.key);
  start();
});

function start() {
  S.running = true;
  route();
}

async function boot() {
  try {
    S.session = await api("/ui/api/session");
  } catch (e) {
    banner("Corral is unreachable: reconnecting…");
    setTimeout(boot, RETRY_MS);
    return;
  }
  banner(null);
  if (S.session.keys && !S.key) { signOut(null); return; }
  start();
}

window.addEventListener("hashchange", route);
boot();
