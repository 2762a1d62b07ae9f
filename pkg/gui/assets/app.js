// meshca web view. Plain JavaScript, no library: hash routes, one JSON poll
// every 2 s per page (never two at once), DOM built with textContent only.
"use strict";

const POLL_MS = 2000;
const STATES = ["valid", "expiring", "expired", "failing", "none"];
const STATE_HELP = {
  valid: "valid", expiring: "expiring (under 20 % of lifetime left)", expired: "expired",
  failing: "failing (last issuance failed)", none: "no certificate yet",
};

// ---- small helpers -------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const SVGNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const kid of kids.flat()) if (kid) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}

function pad(n) { return String(n).padStart(2, "0"); }

// absUTC renders an ISO time as "2026-11-29 18:30:05 UTC".
function absUTC(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

// span renders a duration in seconds as "2d 3h", "4m 05s", "12s".
function span(sec) {
  if (Math.abs(sec) < 1 && sec !== 0) return `${Math.abs(sec).toFixed(2).replace(/0+$/, "")}s`;
  sec = Math.abs(Math.round(sec));
  const d = Math.floor(sec / 86400), hr = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60), x = sec % 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${pad(m)}m`;
  if (m) return `${m}m ${pad(x)}s`;
  return `${x}s`;
}

// rel renders iso relative to the server's now: "in 4m 05s" or "3m ago".
function rel(iso, now) {
  const dt = (new Date(iso) - new Date(now)) / 1000;
  if (Math.abs(dt) < 1) return "now";
  return dt > 0 ? `in ${span(dt)}` : `${span(dt)} ago`;
}

// when renders a time both ways: relative, then absolute UTC below.
function when(iso, now) {
  if (!iso) return h("span", { class: "muted", text: "—" });
  return h("time", { datetime: iso, title: absUTC(iso) }, rel(iso, now), h("span", { class: "abs", text: absUTC(iso) }));
}

function badge(state) {
  return h("span", { class: `badge st-${state}`, "data-state": state, title: STATE_HELP[state] || state, text: state });
}

function num(n, digits) {
  return Number(n).toLocaleString("en-US", { minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0 });
}

function usd(n) { return "$" + num(n, 2); }

// ---- routing --------------------------------------------------------------

// route parses "#/meshes/M/dataplanes/N?x=y".
function route() {
  const raw = location.hash.replace(/^#/, "") || "/meshes";
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  if (parts[0] === "zones") return { page: "zones", params };
  if (parts[0] !== "meshes") return { page: "meshes", params };
  if (parts.length === 1) return { page: "meshes", params };
  const mesh = parts[1];
  if (parts[2] === "dataplanes" && parts.length >= 4) return { page: "dataplane", mesh, name: parts.slice(3).join("/"), params };
  if (["dataplanes", "timeline", "budget"].includes(parts[2])) return { page: parts[2], mesh, params };
  return { page: "meshes", params };
}

function href(page, mesh, params, name) {
  const m = encodeURIComponent(mesh);
  if (page === "zones") return "#/zones";
  let p = page === "meshes" ? "#/meshes" : `#/meshes/${m}/${page === "dataplane" ? "dataplanes/" + encodeURIComponent(name) : page}`;
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== undefined && v !== null)).toString() : "";
  return q ? `${p}?${q}` : p;
}

// setParams rewrites the current hash's query without adding history.
function setParams(r, changes) {
  const params = new URLSearchParams(r.params);
  for (const [k, v] of Object.entries(changes)) {
    if (v === "" || v === undefined || v === null) params.delete(k); else params.set(k, v);
  }
  r.params = params;
  const obj = Object.fromEntries(params.entries());
  history.replaceState(null, "", href(r.page, r.mesh, obj, r.name));
}

// ---- polling --------------------------------------------------------------

const state = { gen: 0, timer: 0, paused: false, meshes: [], view: null, lastMesh: "" };

// The user token, on a listener that wants one (HTTPS): kept for this tab
// only (sessionStorage), sent as the API wants it.
const TOKEN_KEY = "meshca-user-token";

async function getJSON(url) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(url, { headers, cache: "no-store", credentials: "omit" });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const why = body.detail || body.title || `HTTP ${resp.status}`;
    const causes = (body.causes || []).map((c) => `${c.field}: ${c.message}`).join("; ");
    const err = new Error(causes && causes !== why ? `${why} (${causes})` : why);
    err.unauthorized = resp.status === 401;
    throw err;
  }
  return body;
}

// showTokenForm asks for a user token after the API answered 401.
function showTokenForm(why) {
  const main = document.getElementById("main");
  if (main.querySelector("#token-form")) return;
  const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true, "aria-describedby": "token-help" });
  const form = h("form", { id: "token-form", class: "card" },
    h("h1", { text: "Sign in" }),
    h("p", { id: "token-help" }, "This API needs a user token: ", h("code", { text: "meshctl generate user-token" }),
      ". It is kept in this tab only, and sent to this server only.", h("br"), h("span", { class: "err", text: `The API said: ${why}` })),
    h("label", { for: "token", text: "User token" }), " ", input, " ", h("button", { type: "submit", text: "Use token" }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    start();
  });
  main.replaceChildren(form);
  input.focus();
}

function showAlert(msg) {
  const el = document.getElementById("alert");
  if (!msg) { el.hidden = true; el.textContent = ""; return; }
  el.hidden = false;
  el.textContent = msg;
}

// start renders the page of the current route and keeps it fresh.
function start() {
  const gen = ++state.gen;
  clearTimeout(state.timer);
  const r = route();
  if (r.mesh && r.mesh !== "-") state.lastMesh = r.mesh;
  const views = { meshes: MeshesPage, zones: ZonesPage, dataplanes: TablePage, dataplane: DetailPage, timeline: TimelinePage, budget: BudgetPage };
  const main = document.getElementById("main");
  main.replaceChildren(h("p", { text: "Loading…" }));
  state.view = new views[r.page](r, main);
  markNav(r);
  const tick = async () => {
    if (gen !== state.gen) return;
    if (!state.paused && !document.hidden) {
      try {
        await refreshMeshList(r);
        if (gen !== state.gen) return;
        await state.view.refresh();
        if (gen !== state.gen) return;
        showAlert("");
        document.getElementById("updated").textContent = `Updated ${absUTC(new Date().toISOString())} · refreshing every ${POLL_MS / 1000} s`;
      } catch (e) {
        if (gen !== state.gen) return;
        if (e.unauthorized) {
          sessionStorage.removeItem(TOKEN_KEY);
          showAlert("");
          showTokenForm(e.message);
          return; // polling starts again once a token is given
        }
        showAlert(`Could not refresh: ${e.message}`);
      }
    }
    if (gen === state.gen) state.timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

// refreshMeshList fills the mesh picker once per page (the Meshes page
// keeps it current itself) and resolves the "-" placeholder mesh.
async function refreshMeshList(r) {
  if (r.page === "meshes" || r.page === "zones" || (r.listed && r.mesh !== "-")) return;
  const body = await getJSON("/gui/api/meshes");
  r.listed = true;
  setMeshes(body.meshes.map((m) => m.name));
  if (r.mesh === "-") {
    if (!state.meshes.length) throw new Error("there is no mesh yet");
    r.mesh = state.lastMesh && state.meshes.includes(state.lastMesh) ? state.lastMesh : state.meshes[0];
    state.lastMesh = r.mesh;
    history.replaceState(null, "", href(r.page, r.mesh, Object.fromEntries(r.params.entries())));
    state.view = new state.view.constructor(r, document.getElementById("main"));
    markNav(r);
    setMeshes(state.meshes);
  }
}

// keepFocus re-renders el's content with render() and puts the keyboard
// focus back on the equivalent element (same id or link target), so a
// refresh every 2 s never throws a keyboard user out of the page.
function keepFocus(el, render) {
  const a = document.activeElement;
  const key = a && el.contains(a) ? (a.id ? `#${CSS.escape(a.id)}` : a.getAttribute("href") ? `[href="${CSS.escape(a.getAttribute("href"))}"]` : "") : "";
  render();
  if (key) {
    const b = el.querySelector(key);
    if (b && b !== document.activeElement) b.focus({ preventScroll: true });
  }
}

function setMeshes(names) {
  state.meshes = names;
  const sel = document.getElementById("mesh-select");
  const cur = route().mesh || state.lastMesh;
  const opts = names.map((n) => h("option", { value: n, selected: n === cur, text: n }));
  if (sel.options.length !== opts.length || [...sel.options].some((o, i) => o.value !== names[i])) sel.replaceChildren(...opts);
  if (cur && names.includes(cur)) sel.value = cur;
}

function markNav(r) {
  const mesh = r.mesh && r.mesh !== "-" ? r.mesh : state.lastMesh || "-";
  for (const a of document.querySelectorAll("#nav a")) {
    const page = a.dataset.page;
    a.setAttribute("href", page === "meshes" || page === "zones" ? `#/${page}` : href(page, mesh));
    const current = page === r.page || (page === "dataplanes" && r.page === "dataplane");
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}

// ---- Zones page -------------------------------------------------------------

// ZonesPage lists a global control plane's zones (Kuma's /zones/_overview):
// connected or not and since when, last sync, traffic, and their data
// planes' certificate state as the zones report it.
class ZonesPage {
  constructor(r, main) { this.r = r; this.main = main; document.title = "Zones · meshca"; }

  async refresh() {
    const body = await getJSON("/zones/_overview?size=1000");
    const now = new Date().toISOString();
    const out = [h("h1", { text: "Zones" })];
    if (!body.items.length) {
      out.push(h("p", { text: "No zone. Zones exist on a global control plane (meshca-cp run --mode global): each zone control plane that connected once is listed here." }));
    } else {
      const t = h("table", { class: "zones" }, h("thead", {}, h("tr", {},
        ...["Zone", "Status", "Since", "Last sync", "Data planes", "Failing", "Last error", "Version"].map((c) => h("th", { scope: "col", text: c })))));
      const tb = h("tbody");
      for (const z of body.items) {
        const subs = z.zoneInsight.subscriptions || [];
        const sub = subs[subs.length - 1] || { status: {}, version: { kumaCp: {} } };
        const online = !!(sub.connectTime && !sub.disconnectTime);
        const since = online ? sub.connectTime : sub.disconnectTime;
        const dp = z.dataplanes || { total: 0, failing: 0 };
        tb.append(h("tr", { "data-zone": z.name },
          h("th", { scope: "row", text: z.name }),
          h("td", {}, h("span", { class: `badge ${online ? "st-valid" : "st-failing"}`, "data-field": "status", text: online ? "Online" : "Offline" })),
          h("td", {}, when(since, now)),
          h("td", {}, when(sub.status.lastUpdateTime, now)),
          h("td", { "data-field": "dataplanes", text: num(dp.total) }),
          h("td", { "data-field": "failing", class: dp.failing ? "err" : "", text: num(dp.failing) }),
          h("td", { class: "err-text", text: dp.lastError || "—" }),
          h("td", { text: (sub.version.kumaCp || {}).version || "—" })));
      }
      t.append(tb);
      out.push(h("div", { class: "table-wrap" }, t));
    }
    keepFocus(this.main, () => this.main.replaceChildren(...out));
  }
}

// ---- Meshes page ------------------------------------------------------------

class MeshesPage {
  constructor(r, main) { this.r = r; this.main = main; document.title = "Meshes · meshca"; }

  async refresh() {
    const body = await getJSON("/gui/api/meshes");
    setMeshes(body.meshes.map((m) => m.name));
    const now = body.now;
    const out = [h("h1", { text: "Meshes" })];
    if (!body.meshes.length) out.push(h("p", { text: "No mesh yet. Create one with meshctl apply -f mesh.yaml." }));
    const cards = h("div", { class: "cards" });
    for (const m of body.meshes) cards.append(this.card(m, now));
    out.push(cards);
    keepFocus(this.main, () => this.main.replaceChildren(...out));
  }

  card(m, now) {
    const sec = h("section", { class: "card", "data-mesh": m.name, "aria-labelledby": `mesh-${m.name}` });
    sec.append(h("h2", { id: `mesh-${m.name}` }, h("a", { href: href("dataplanes", m.name), text: m.name })));
    const kv = h("dl", { class: "kv" });
    const add = (k, ...v) => kv.append(h("dt", { text: k }), h("dd", {}, ...v));
    if (m.mtls) {
      add("Enabled backend", h("strong", { "data-field": "backend", text: m.enabledBackend }), ` (${m.backendType})`);
      add("Certificate lifetime", span(m.lifetimeSeconds));
    } else {
      add("mTLS", "off (no enabled backend)");
    }
    if (m.backends && m.backends.length > 1) {
      add("Backends", m.backends.map((b) => `${b.name} (${b.type})${b.enabled ? ", enabled" : ""}: ${b.holding} holding`).join("; "));
    }
    add("Data planes", h("span", { "data-field": "total", text: num(m.total) }));
    if (m.error) add("Backend error", h("span", { class: "err", text: m.error }));
    sec.append(kv);

    // States, as counts with a label (and a bar for the shape).
    const ul = h("ul", { class: "states", "aria-label": "Data planes by certificate state" });
    const bar = h("div", { class: "stackbar", "aria-hidden": "true" });
    for (const st of STATES) {
      const n = m.states[st] || 0;
      ul.append(h("li", { "data-state": st },
        h("a", { href: href("dataplanes", m.name, { state: st }), title: `Show the ${STATE_HELP[st]} data planes` },
          badge(st), h("span", { class: "count", text: num(n) }))));
      if (n && m.total) {
        const seg = h("span", { class: `fill-${st}`, title: `${st}: ${n}` });
        seg.style.width = `${(100 * n) / m.total}%`;
        bar.append(seg);
      }
    }
    sec.append(ul, bar);

    if (m.switch) {
      const sw = m.switch;
      const from = Object.entries(sw.from).map(([b, n]) => `${b}: ${num(n)}`).join(", ");
      sec.append(h("h3", { text: "CA switch in progress" }),
        h("p", { "data-field": "switch" },
          h("progress", { max: sw.of, value: sw.done, "aria-label": `CA switch to ${sw.to}` }),
          ` ${num(sw.done)} of ${num(sw.of)} data planes (${num(sw.percent, 0)} %) hold ${sw.to}'s certificate; still on the old CA: ${from}`));
    }

    if (m.errors && m.errors.length) {
      sec.append(h("h3", { text: "Failing" }),
        h("ul", { class: "err-list mesh-errors" }, m.errors.map((e) =>
          h("li", {}, h("strong", { text: `${num(e.dataplanes)} data plane${e.dataplanes === 1 ? "" : "s"}` }),
            ` (e.g. `, h("a", { href: href("dataplane", m.name, null, e.example), text: e.example }), `): `,
            h("span", { class: "err-text", text: e.error })))));
    }

    sec.append(h("h3", { text: `Trust bundle (${m.roots.length} root${m.roots.length === 1 ? "" : "s"})` }));
    if (!m.roots.length) sec.append(h("p", { class: "muted", text: "No trust bundle yet." }));
    else {
      const t = h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "Subject" }), h("th", { text: "Expires" }), h("th", { text: "Serial" }))));
      const tb = h("tbody");
      for (const c of m.roots) tb.append(h("tr", {}, h("td", { text: c.subject }), h("td", {}, when(c.notAfter, now)), h("td", { class: "mono", text: c.serial })));
      t.append(tb);
      sec.append(h("div", { class: "table-wrap" }, t));
    }
    if (m.budget) {
      const b = m.budget;
      sec.append(h("p", {}, "External CA: ", h("a", { href: href("budget", m.name), text: "ACM PCA budget" }),
        ` · ${num(b.requestsPerSecond, 1)} of ${num(b.maxRequestsPerSecond, 1)} requests/s · ${num(b.issuedThisMonth)} billable certificates this month · projected ${usd(b.projectedMonthlyCost)} a month`));
    }
    return sec;
  }
}

// ---- Data planes table ---------------------------------------------------

const COLUMNS = [
  { key: "name", label: "Name" }, { key: "state", label: "State" }, { key: "zone", label: "Zone" },
  { key: "services", label: "Services" }, { key: "backend", label: "Backend" }, { key: "serial", label: "Serial" },
  { key: "notAfter", label: "Not after" }, { key: "timeLeft", label: "Time left" }, { key: "rotations", label: "Rotations" },
  { key: "lastRotation", label: "Last rotation" }, { key: "lastError", label: "Last error" },
];

class TablePage {
  constructor(r, main) {
    this.r = r;
    this.main = main;
    document.title = `Data planes of ${r.mesh} · meshca`;
    this.built = false;
  }

  get p() {
    const g = (k, d) => this.r.params.get(k) || d;
    return { q: g("q", ""), state: g("state", ""), sort: g("sort", "name"), dir: g("dir", "asc"), page: Math.max(1, parseInt(g("page", "1"), 10) || 1), size: parseInt(g("size", "50"), 10) || 50 };
  }

  build() {
    const p = this.p;
    this.h1 = h("h1", { text: `Data planes of ${this.r.mesh}` });
    this.filter = h("input", { type: "search", id: "filter", value: p.q, placeholder: "name, service, serial, error…", "aria-describedby": "count" });
    let debounce = 0;
    this.filter.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { setParams(this.r, { q: this.filter.value.trim(), page: "" }); this.refresh().catch((e) => showAlert(e.message)); }, 200);
    });
    this.stateSel = h("select", { id: "state-filter" }, h("option", { value: "", text: "all states" }), STATES.map((st) => h("option", { value: st, selected: st === p.state, text: STATE_HELP[st] })));
    this.stateSel.addEventListener("change", () => { setParams(this.r, { state: this.stateSel.value, page: "" }); this.refresh().catch((e) => showAlert(e.message)); });
    this.sizeSel = h("select", { id: "page-size" }, [25, 50, 100, 200].map((n) => h("option", { value: n, selected: n === p.size, text: n })));
    this.sizeSel.addEventListener("change", () => { setParams(this.r, { size: this.sizeSel.value, page: "" }); this.refresh().catch((e) => showAlert(e.message)); });
    // Sorting from a control too: on a narrow window the table turns into
    // cards and its header buttons are hidden.
    this.sortSel = h("select", { id: "sort-by" }, COLUMNS.flatMap((c) => [
      h("option", { value: `${c.key}:asc`, text: `${c.label} ↑` }), h("option", { value: `${c.key}:desc`, text: `${c.label} ↓` })]));
    this.sortSel.value = `${p.sort}:${p.dir}`;
    this.sortSel.addEventListener("change", () => {
      const [sort, dir] = this.sortSel.value.split(":");
      setParams(this.r, { sort, dir, page: "" });
      this.refresh().catch((e) => showAlert(e.message));
    });
    const controls = h("div", { class: "controls", role: "search" },
      h("label", {}, "Filter", this.filter), h("label", {}, "State", this.stateSel), h("label", {}, "Sort by", this.sortSel), h("label", {}, "Rows per page", this.sizeSel));
    this.count = h("p", { id: "count", "aria-live": "polite" });
    this.headRow = h("tr");
    for (const c of COLUMNS) {
      const btn = h("button", { type: "button", "data-sort": c.key, text: c.label });
      btn.addEventListener("click", () => {
        const cur = this.p;
        const dir = cur.sort === c.key && cur.dir === "asc" ? "desc" : "asc";
        setParams(this.r, { sort: c.key, dir, page: "" });
        this.refresh().catch((e) => showAlert(e.message));
      });
      this.headRow.append(h("th", { scope: "col", "data-col": c.key }, btn));
    }
    this.tbody = h("tbody");
    this.table = h("table", { id: "dp-table" }, h("caption", { class: "sr", text: `Data planes of mesh ${this.r.mesh}` }), h("thead", {}, this.headRow), this.tbody);
    this.prev = h("button", { type: "button", id: "prev", text: "← Previous" });
    this.next = h("button", { type: "button", id: "next", text: "Next →" });
    this.pageInfo = h("span", { id: "page-info" });
    this.prev.addEventListener("click", () => this.go(-1));
    this.next.addEventListener("click", () => this.go(1));
    this.main.replaceChildren(this.h1, controls, this.count, h("div", { class: "table-wrap" }, this.table), h("div", { class: "pager controls" }, this.prev, this.pageInfo, this.next));
    this.built = true;
  }

  go(delta) {
    const p = this.p;
    setParams(this.r, { page: String(Math.max(1, p.page + delta)) });
    this.refresh().catch((e) => showAlert(e.message));
  }

  async refresh() {
    if (!this.built) this.build();
    const p = this.p;
    const url = `/gui/api/meshes/${encodeURIComponent(this.r.mesh)}/dataplanes?` + new URLSearchParams({ q: p.q, state: p.state, sort: p.sort, dir: p.dir, offset: (p.page - 1) * p.size, limit: p.size });
    // A poll and a click may overlap: only the latest request is drawn.
    const seq = (this.seq = (this.seq || 0) + 1);
    const body = await getJSON(url);
    if (route().page !== "dataplanes" || seq !== this.seq) return;
    for (const th of this.headRow.children) {
      const key = th.dataset.col;
      th.setAttribute("aria-sort", key === body.sort ? (body.dir === "asc" ? "ascending" : "descending") : "none");
    }
    if (document.activeElement !== this.sortSel) this.sortSel.value = `${body.sort}:${body.dir}`;
    const rows = body.items.map((it) => this.row(it, body.now));
    this.tbody.replaceChildren(...rows);
    if (!rows.length) this.tbody.append(h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted", text: body.total ? "No data plane matches." : "No data plane in this mesh." })));
    const first = body.matched ? body.offset + 1 : 0, last = body.offset + body.items.length;
    this.count.textContent = `Showing ${num(first)}–${num(last)} of ${num(body.matched)} matching (${num(body.total)} in the mesh)`;
    const pages = Math.max(1, Math.ceil(body.matched / body.limit));
    this.pageInfo.textContent = `Page ${num(p.page)} of ${num(pages)}`;
    this.prev.disabled = p.page <= 1;
    this.next.disabled = p.page >= pages;
    // Marks for measurements (BENCHMARKS.md): the first render, then every one.
    if (!this.rendered) performance.mark("dataplanes-first-render");
    this.rendered = true;
    performance.mark("dataplanes-render");
  }

  row(it, now) {
    const link = h("a", { href: href("dataplane", this.r.mesh, null, it.name), text: it.name });
    const left = it.notAfter ? (it.timeLeftSeconds > 0 ? span(it.timeLeftSeconds) : "expired") : "—";
    const tr = h("tr", { "data-name": it.name, "data-state": it.state },
      h("th", { scope: "row", "data-col": "name" }, link),
      h("td", { "data-col": "state" }, badge(it.state)),
      h("td", { "data-col": "zone", text: it.zone || "—" }),
      h("td", { "data-col": "services", text: it.services.join(", ") || "—" }),
      h("td", { "data-col": "backend", text: it.backend ? `${it.backend} (${it.backendType})` : "—" }),
      h("td", { "data-col": "serial", class: "mono", text: it.serial || "—" }),
      h("td", { "data-col": "notAfter" }, it.notAfter ? h("time", { datetime: it.notAfter, text: absUTC(it.notAfter) }) : "—"),
      h("td", { "data-col": "timeLeft", text: left }),
      h("td", { "data-col": "rotations", text: num(it.rotations) }),
      h("td", { "data-col": "lastRotation" }, when(it.lastRotation, now)),
      h("td", { "data-col": "lastError", class: it.lastError ? "err" : "muted" }, it.lastError ? [it.lastError, h("span", { class: "abs", text: it.lastErrorTime ? `${rel(it.lastErrorTime, now)} · ${absUTC(it.lastErrorTime)}` : "" })] : "—"));
    // Labels for the card layout of narrow windows (CSS shows them there).
    [...tr.children].forEach((cell, i) => cell.setAttribute("data-label", COLUMNS[i].label));
    return tr;
  }
}

// ---- Data plane detail -----------------------------------------------------

class DetailPage {
  constructor(r, main) { this.r = r; this.main = main; document.title = `${r.name} · meshca`; }

  async refresh() {
    const d = await getJSON(`/gui/api/meshes/${encodeURIComponent(this.r.mesh)}/dataplanes/${encodeURIComponent(this.r.name)}`);
    const now = d.now, m = d.insight.mTLS || {};
    const out = [h("p", {}, h("a", { href: href("dataplanes", d.mesh), text: `← Data planes of ${d.mesh}` })),
      h("h1", {}, `${d.name} `, badge(d.state))];
    const kv = h("dl", { class: "kv", id: "dp-summary" });
    const add = (k, field, ...v) => kv.append(h("dt", { text: k }), h("dd", { "data-field": field }, ...v));
    const services = d.dataplane ? [...new Set((d.dataplane.networking.inbound || []).map((i) => i.tags["kuma.io/service"]).filter(Boolean))] : [];
    add("Mesh", "mesh", d.mesh);
    add("Services", "services", services.join(", ") || "—");
    add("Backend", "backend", m.issuedBackend ? `${m.issuedBackend} (${m.issuedBackendType})` : "—");
    add("Serial", "serial", h("span", { class: "mono", text: m.serial || "—" }));
    add("Next rotation", "nextRotation", when(m.nextRotation, now));
    add("Last rotation", "lastRotation", when(m.lastCertificateRegeneration, now));
    add("Rotations", "rotations", num(m.certificateRegenerations || 0));
    if (m.certificateRef) add("Certificate at the CA", "ref", h("span", { class: "mono", text: m.certificateRef }));
    if (m.lastError) add("Last error", "lastError", h("span", { class: "err", text: m.lastError }), ` (${num(m.failedAttempts || 0)} failed attempts, `, when(m.lastErrorTime, now), ")");
    out.push(kv);

    out.push(h("h2", { text: "Certificate chain" }));
    if (!d.chain.length) out.push(h("p", { class: "muted", text: "No certificate issued yet." }));
    d.chain.forEach((c, i) => {
      const role = i === 0 ? "Leaf" : c.selfSigned ? "Root (from the trust bundle)" : "Intermediate";
      const ckv = h("dl", { class: "kv" });
      const cadd = (k, ...v) => ckv.append(h("dt", { text: k }), h("dd", {}, ...v));
      cadd("Subject", c.subject || "(empty)");
      if (c.uriSANs || c.dnsSANs) cadd("SANs", h("span", { class: "mono", text: [...(c.uriSANs || []), ...(c.dnsSANs || [])].join(", ") }));
      cadd("Issuer", c.issuer);
      cadd("Serial", h("span", { class: "mono", text: c.serial }));
      cadd("Key", c.keyType);
      cadd("Signature", c.signatureAlgorithm);
      cadd("Not before", when(c.notBefore, now));
      cadd("Not after", when(c.notAfter, now));
      out.push(h("section", { class: "card", "data-chain": i }, h("h3", { text: `${i + 1}. ${role}` }), ckv));
    });

    out.push(h("h2", { text: "Rotation history" }), h("p", { class: "muted", text: "Since the control plane started; the last 8 entries, oldest first." }));
    if (!d.history.length) out.push(h("p", { class: "muted", text: "No issuance since the control plane started." }));
    else {
      const tb = h("tbody");
      for (const e of d.history) {
        tb.append(h("tr", {},
          h("td", {}, when(e.at, now)),
          h("td", {}, e.error ? h("span", { class: "badge st-failing", text: "failed" }) : h("span", { class: "badge st-valid", text: "issued" })),
          h("td", { text: e.backend || "—" }),
          h("td", { class: "mono", text: e.serial || "—" }),
          h("td", {}, e.notAfter ? h("time", { datetime: e.notAfter, text: absUTC(e.notAfter) }) : "—"),
          h("td", { class: e.error ? "err" : "" , text: e.error ? `${e.error}${e.attempts > 1 ? ` (×${e.attempts})` : ""}` : "" })));
      }
      out.push(h("div", { class: "table-wrap" }, h("table", { id: "history" },
        h("thead", {}, h("tr", {}, ["When", "Outcome", "Backend", "Serial", "Not after", "Error"].map((t) => h("th", { scope: "col", text: t })))), tb)));
    }
    keepFocus(this.main, () => this.main.replaceChildren(...out));
  }
}

// ---- Expiry timeline -----------------------------------------------------------

class TimelinePage {
  constructor(r, main) { this.r = r; this.main = main; document.title = `Expiry timeline of ${r.mesh} · meshca`; }

  async refresh() {
    const t = await getJSON(`/gui/api/meshes/${encodeURIComponent(this.r.mesh)}/timeline`);
    const n = t.expiries.length, W = 960, H = 300, L = 44, R = 12, T = 14, B = 44;
    const max = Math.max(1, ...t.expiries, ...t.rotations);
    const bw = (W - L - R) / n;
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const svg = s("svg", { class: "chart", id: "timeline-chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "tl-title tl-desc" },
      s("title", { id: "tl-title" }, `Expiries and rotations of ${this.r.mesh} over the next ${span(t.bucketSeconds * n)}`),
      s("desc", { id: "tl-desc" }, `${t.expiries.reduce((a, b) => a + b, 0)} certificates expire and ${t.rotations.reduce((a, b) => a + b, 0)} rotations are due in the window; the table below has every bucket.`),
      s("defs", {}, s("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
        s("rect", { width: 6, height: 6, fill: "#ddf4ff" }), s("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#0550ae", "stroke-width": 3 }))));
    // Axes and gridlines.
    svg.append(s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }), s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    for (const v of [0, Math.round(max / 2), max]) {
      svg.append(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, num(v)));
    }
    for (let i = 0; i < n; i++) {
      const x = L + i * bw;
      const from = new Date(new Date(t.from).getTime() + i * t.bucketSeconds * 1000).toISOString();
      const e = t.expiries[i], r = t.rotations[i];
      if (e) svg.append(s("rect", { class: "bar-exp", x: x + 1, y: y(e), width: Math.max(1, bw / 2 - 1), height: H - B - y(e) }, s("title", {}, `${e} expir${e === 1 ? "y" : "ies"} from ${absUTC(from)}`)));
      if (r) svg.append(s("rect", { class: "bar-rot", x: x + bw / 2, y: y(r), width: Math.max(1, bw / 2 - 1), height: H - B - y(r) }, s("title", {}, `${r} rotation${r === 1 ? "" : "s"} due from ${absUTC(from)}`)));
      if (i % Math.ceil(n / 8) === 0) svg.append(s("text", { x, y: H - B + 16 }, `+${span(i * t.bucketSeconds)}`));
    }
    svg.append(s("text", { x: L, y: H - 6 }, absUTC(t.from)), s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, absUTC(t.to)));

    const legend = h("ul", { class: "legend" },
      h("li", {}, this.swatch("bar-exp"), "Certificate expiries (solid, left bar)"),
      h("li", {}, this.swatch("bar-rot"), "Rotations due (hatched, right bar)"));
    const kv = h("dl", { class: "kv", id: "timeline-summary" });
    const add = (k, f, v) => kv.append(h("dt", { text: k }), h("dd", { "data-field": f, text: v }));
    add("Window", "window", `${absUTC(t.from)} to ${absUTC(t.to)} (${span(t.bucketSeconds * n)}, bars of ${span(t.bucketSeconds)})`);
    add("Data planes", "total", num(t.total));
    add("Already expired", "expired", num(t.expired));
    add("Rotations overdue", "overdue", num(t.overdue));
    add("No rotation queued (issuing now, or no certificate)", "unscheduled", num(t.unscheduled));
    add("Beyond the window", "later", `${num(t.laterExpiries)} expiries, ${num(t.laterRotations)} rotations`);

    const tb = h("tbody");
    for (let i = 0; i < n; i++) {
      if (!t.expiries[i] && !t.rotations[i]) continue;
      const from = new Date(new Date(t.from).getTime() + i * t.bucketSeconds * 1000).toISOString();
      tb.append(h("tr", {}, h("td", {}, when(from, t.now)), h("td", { text: num(t.expiries[i]) }), h("td", { text: num(t.rotations[i]) })));
    }
    const table = h("details", {}, h("summary", { id: "tl-table-toggle", text: "Show the buckets as a table" }), h("div", { class: "table-wrap" },
      h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "From" }), h("th", { scope: "col", text: "Expiries" }), h("th", { scope: "col", text: "Rotations due" }))), tb)));
    const open = this.main.querySelector("details")?.open;
    if (open) table.open = true;
    keepFocus(this.main, () => this.main.replaceChildren(h("h1", { text: `Expiry timeline of ${this.r.mesh}` }), legend, svg, kv, table));
  }

  swatch(cls) {
    return s("svg", { width: 18, height: 14, "aria-hidden": "true" },
      s("defs", {}, s("pattern", { id: `hatch-${cls}`, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
        s("rect", { width: 6, height: 6, fill: "#ddf4ff" }), s("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#0550ae", "stroke-width": 3 }))),
      s("rect", { width: 18, height: 14, fill: cls === "bar-exp" ? "#cf222e" : `url(#hatch-${cls})`, stroke: "#0550ae", "stroke-width": cls === "bar-exp" ? 0 : 1 }));
  }
}

// ---- External CA budget --------------------------------------------------------

class BudgetPage {
  constructor(r, main) {
    this.r = r; this.main = main; document.title = `CA budget of ${r.mesh} · meshca`;
    this.price = h("input", { type: "number", id: "price", min: "0", max: "1000", step: "0.001", inputmode: "decimal", value: r.params.get("price") || "" });
    this.price.addEventListener("change", () => {
      setParams(this.r, { price: this.price.value });
      this.refresh().catch((e) => showAlert(e.message));
    });
    this.box = h("div");
    main.replaceChildren(h("h1", { text: `External CA budget of ${r.mesh}` }), this.box);
  }

  async refresh() {
    const price = this.r.params.get("price") || "";
    const body = await getJSON(`/gui/api/meshes/${encodeURIComponent(this.r.mesh)}/budget` + (price ? `?pricePerCertificate=${encodeURIComponent(price)}` : ""));
    const b = body.budget;
    if (!b) {
      this.box.replaceChildren(h("p", { id: "no-budget", text: body.backendType ? `Mesh ${body.mesh} uses a ${body.backendType} CA: it has no per-certificate cost or request quota to show (this page is for acmpca meshes).` : `Mesh ${body.mesh} has mTLS off.` }));
      return;
    }
    if (!this.price.value) this.price.value = String(b.pricePerCertificate);
    const now = body.now;
    const meter = h("div", { class: "meter", role: "img", "aria-label": `${num(b.requestsPerSecond, 1)} of ${num(b.maxRequestsPerSecond, 1)} requests per second` });
    const fill = h("span"); fill.style.width = `${Math.min(100, (100 * b.requestsPerSecond) / Math.max(b.accountQuota, b.maxRequestsPerSecond))}%`;
    const mark = h("i", { title: "maxRequestsPerSecond" }); mark.style.left = `${Math.min(100, (100 * b.maxRequestsPerSecond) / Math.max(b.accountQuota, b.maxRequestsPerSecond))}%`;
    meter.append(fill, mark);
    const kv = h("dl", { class: "kv", id: "budget-usage" });
    const add = (k, f, ...v) => kv.append(h("dt", { text: k }), h("dd", { "data-field": f }, ...v));
    add("Backend", "backend", `${b.backend}`, b.arn ? h("span", { class: "abs mono", text: b.arn }) : null);
    add("IssueCertificate requests/s (last 10 s)", "rps", h("span", { class: "big", text: num(b.requestsPerSecond, 1) }),
      ` of ${num(b.maxRequestsPerSecond, 1)} (conf.maxRequestsPerSecond; allowed now: ${num(b.currentLimit, 1)}; account quota: ${num(b.accountQuota)} by default)`, meter);
    add("Throttled requests", "throttles", num(b.throttles), ` of ${num(b.requests)} ACM PCA requests`);
    add("Billable certificates today (UTC)", "today", h("span", { class: "big", text: num(b.issuedToday) }));
    add("Billable certificates this month (UTC)", "month", h("span", { class: "big", text: num(b.issuedThisMonth) }));
    add("Counted since", "since", b.counting ? when(b.since, now) : "no request since the control plane started");
    add("Still held, issued this month", "held", `${num(b.heldIssuedThisMonth)} (today: ${num(b.heldIssuedToday)}); the counts above never go under these, across restarts too`);

    const proj = h("dl", { class: "kv", id: "projection" });
    const padd = (k, f, value, text) => proj.append(h("dt", { text: k }), h("dd", { "data-field": f, "data-value": value }, text));
    padd("Data planes", "dataplanes", b.dataplanes, num(b.dataplanes));
    padd("Certificate lifetime", "lifetime", b.lifetimeSeconds, `${span(b.lifetimeSeconds)} (${num(b.lifetimeSeconds)} s)`);
    padd("Rotation at (mean share of lifetime)", "rotateFraction", b.rotateFraction, `${num(b.rotateFraction * 100)} %`);
    padd("Projected certificates a month", "certs", b.projectedCertificatesPerMonth, h("span", { class: "big", id: "projected-certs", text: num(b.projectedCertificatesPerMonth, 1) }));
    padd("Projected cost a month", "cost", b.projectedMonthlyCost, h("span", { class: "big", id: "projected-cost", text: usd(b.projectedMonthlyCost) }));

    const priceRow = h("div", { class: "price" }, h("label", { for: "price", text: "Price per certificate (USD)" }), this.price,
      h("span", { class: "muted", text: "Default: ACM Private CA short-lived certificate mode price (aws.amazon.com/private-ca/pricing); check your region's price. The CA's own monthly fee is not included." }));
    const formula = h("p", { class: "formula" }, h("strong", { text: "Formula: " }),
      "certificates a month = data planes × 30 days ÷ (0.80 × lifetime); cost = certificates × price.", h("br"),
      h("code", { id: "formula", text: b.formula }));
    keepFocus(this.box, () => this.box.replaceChildren(h("h2", { text: "Request budget" }), kv, h("h2", { text: "Projected monthly bill" }), priceRow, proj, formula));
  }
}

// ---- start-up -------------------------------------------------------------------

window.addEventListener("hashchange", start);
document.addEventListener("visibilitychange", () => { if (!document.hidden) start(); });
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("mesh-select").addEventListener("change", (ev) => {
    const r = route();
    const page = r.page === "dataplane" ? "dataplanes" : r.page;
    location.hash = page === "meshes" ? href("dataplanes", ev.target.value) : href(page, ev.target.value);
  });
  const pause = document.getElementById("pause");
  pause.addEventListener("click", () => {
    state.paused = !state.paused;
    pause.setAttribute("aria-pressed", String(state.paused));
    pause.textContent = state.paused ? "Resume updates" : "Pause updates";
  });
  start();
});
