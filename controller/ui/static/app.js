// The dashboard: polls the controller every 2 s (service graph, agents, the selected service) and
// updates the views in place. The route lives in the address's hash: #/topology,
// #/topology/service/{namespace}/{name} or #/nodes. Tests read window.__nodemesh.

import { ApiError, fetchAgents, fetchGraph, fetchService, initToken, setToken } from "./api.js";
import { esc, fmtMs, fmtPercent, fmtRate, health } from "./format.js";
import { TopologyGraph } from "./graph.js";
import { renderNodes } from "./nodes.js";
import { ServicePanel } from "./panel.js";

const POLL_MS = 2000;
const WINDOW_KEY = "nodemesh.window";

const $ = (id) => document.getElementById(id);

const state = {
  tab: "topology",
  windowSeconds: 300,
  graph: null,
  agents: [],
  /** { namespace, name } of the service in the panel. */
  selected: null,
  /** A node id highlighted in the graph (a workload, or the selected service). */
  highlighted: null,
  detail: null,
  updates: 0,
  lastOk: 0,
  lastError: null,
  askedForToken: false,
};

initToken();
try {
  const saved = Number(localStorage.getItem(WINDOW_KEY));
  if ([60, 300, 900].includes(saved)) state.windowSeconds = saved;
} catch {
  // no storage: keep the default
}
$("window").value = String(state.windowSeconds);

const graph = new TopologyGraph($("graph"), {
  onSelect: (id, kind) => {
    if (!id) return navigate("#/topology");
    const node = state.graph?.nodes.find((n) => n.id === id);
    if (kind === "service" && node) return navigate(`#/topology/service/${enc(node.namespace)}/${enc(node.name)}`);
    state.highlighted = id;
    graph.select(id);
    if (state.selected) navigate("#/topology");
  },
});
const panel = new ServicePanel($("panel"), { onClose: () => navigate("#/topology") });

function enc(s) {
  return encodeURIComponent(s);
}

function navigate(hash) {
  if (location.hash === hash) applyRoute();
  else location.hash = hash;
}

function applyRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const tab = parts[0] === "nodes" ? "nodes" : "topology";
  state.tab = tab;
  for (const a of document.querySelectorAll(".tab")) a.classList.toggle("active", a.dataset.tab === tab);
  $("view-topology").hidden = tab !== "topology";
  $("view-nodes").hidden = tab !== "nodes";
  const selected =
    tab === "topology" && parts[1] === "service" && parts[3] ? { namespace: parts[2], name: parts[3] } : null;
  const changed = selected?.namespace !== state.selected?.namespace || selected?.name !== state.selected?.name;
  state.selected = selected;
  if (selected) {
    state.highlighted = `svc:${selected.name}.${selected.namespace}`;
    panel.show(selected.namespace, selected.name);
    $("workspace").classList.add("with-panel");
  } else {
    if (state.highlighted?.startsWith("svc:")) state.highlighted = null;
    panel.hide();
    $("workspace").classList.remove("with-panel");
  }
  graph.select(state.highlighted);
  renderServiceList();
  if (changed) {
    state.detail = null;
    void poll();
  }
}

// ---- rendering ----

function renderKpis() {
  const services = state.graph?.services ?? [];
  const rps = services.reduce((s, x) => s + x.requestsPerSecond, 0);
  const errors = services.reduce((s, x) => s + x.requestsPerSecond * x.errorRate, 0);
  const errorRate = rps > 0 ? errors / rps : 0;
  const p99s = services.map((s) => s.p99Ms).filter((v) => v !== null && v !== undefined);
  const workloads = (state.graph?.nodes ?? []).filter((n) => n.kind === "workload").length;
  const connected = state.agents.filter((a) => a.connected).length;
  $("kpi-rps").textContent = fmtRate(rps);
  $("kpi-rps").dataset.value = String(rps);
  $("kpi-errors").textContent = fmtPercent(errorRate);
  $("kpi-errors").className = `kpi-value ${health(errorRate, rps)}-text`;
  $("kpi-p99").textContent = p99s.length ? fmtMs(Math.max(...p99s)) : "–";
  $("kpi-services").textContent = String(services.length);
  $("kpi-workloads").textContent = String(workloads);
  $("kpi-nodes").textContent = state.agents.length ? `${connected}/${state.agents.length}` : "–";
  $("kpi-nodes").className = `kpi-value ${state.agents.length && connected < state.agents.length ? "warn-text" : ""}`;
}

function renderServiceList() {
  const services = [...(state.graph?.services ?? [])].sort(
    (a, b) => b.requestsPerSecond - a.requestsPerSecond || a.name.localeCompare(b.name),
  );
  $("services-count").textContent = services.length ? String(services.length) : "";
  $("service-list-empty").hidden = services.length > 0;
  const selected = state.selected ? `${state.selected.namespace}/${state.selected.name}` : "";
  $("service-list").innerHTML = services
    .map((s) => {
      const key = `${s.namespace}/${s.name}`;
      const h = health(s.errorRate, s.requestsPerSecond);
      return `<li class="service-row${key === selected ? " selected" : ""}" data-testid="service-row" data-namespace="${esc(s.namespace)}" data-name="${esc(s.name)}" title="${esc(key)}">
  <span class="dot ${h}"></span>
  <div>
    <div class="service-line"><span class="service-name">${esc(s.name)}</span><span class="service-rps">${fmtRate(s.requestsPerSecond)}<span class="muted"> rps</span></span></div>
    <div class="service-line"><span class="service-ns" title="${esc(s.protocol)}">${esc(s.namespace || "–")}</span><span class="service-meta"><span class="${h}-text">${fmtPercent(s.errorRate)}</span> · p99 ${fmtMs(s.p99Ms)}</span></div>
  </div>
</li>`;
    })
    .join("");
}

$("service-list").addEventListener("click", (e) => {
  const row = e.target.closest(".service-row");
  if (row) navigate(`#/topology/service/${enc(row.dataset.namespace)}/${enc(row.dataset.name)}`);
});

function setLive(kind, text, title) {
  const live = $("live");
  live.dataset.state = kind;
  live.querySelector(".live-text").textContent = text;
  live.title = title ?? "";
}

function setBanner(message, bad = false) {
  const b = $("banner");
  b.hidden = !message;
  b.textContent = message ?? "";
  b.classList.toggle("bad", bad);
}

function describe(err) {
  if (err instanceof ApiError) {
    if (err.status === 0) return err.message;
    return `${err.status}: ${err.message}`;
  }
  return String(err?.message ?? err);
}

// ---- polling ----

let timer;
let seq = 0;

async function poll() {
  clearTimeout(timer);
  const mine = ++seq;
  const w = state.windowSeconds;
  const sel = state.selected;
  const [g, a, d] = await Promise.allSettled([
    fetchGraph(w),
    fetchAgents(),
    sel ? fetchService(sel.namespace, sel.name, w) : Promise.resolve(null),
  ]);
  if (mine !== seq) return; // a newer poll (selection or window changed) took over
  const errors = [g, a, d].filter((r) => r.status === "rejected").map((r) => r.reason);
  const unauthorized = errors.find((e) => e instanceof ApiError && (e.status === 401 || e.status === 403));

  if (g.status === "fulfilled") {
    state.graph = g.value;
    graph.update(g.value);
    $("graph-empty").hidden = g.value.nodes.length > 0;
  }
  if (a.status === "fulfilled") {
    state.agents = a.value;
    renderNodes(a.value, { body: $("nodes-body"), matrix: $("rtt-matrix"), empty: $("nodes-empty") });
  }
  if (sel && state.selected === sel) {
    if (d.status === "fulfilled" && d.value) {
      state.detail = d.value;
      panel.render(d.value, w);
    } else if (d.status === "rejected") {
      state.detail = null;
      panel.showError(d.reason instanceof ApiError && d.reason.status === 404 ? "not found" : describe(d.reason));
    }
  }
  renderKpis();
  renderServiceList();

  if (unauthorized) {
    state.lastError = describe(unauthorized);
    setLive("unauthorized", "Sign in", "The controller wants a bearer token");
    setBanner("This controller requires a token: click “Sign in”, or open the page with ?token=…", true);
    if (!state.askedForToken) {
      state.askedForToken = true;
      openTokenDialog();
    }
  } else if (g.status === "rejected" && g.reason instanceof ApiError && g.reason.status === 404) {
    state.lastError = describe(g.reason);
    setLive("error", "No graph", state.lastError);
    setBanner("This controller does not serve the service graph (404): the topology cannot be drawn.");
  } else if (errors.length && errors.length === (sel ? 3 : 2)) {
    state.lastError = describe(errors[0]);
    setLive("error", "Reconnecting…", state.lastError);
    setBanner(`Cannot reach the controller (${state.lastError}); retrying every 2 s.`);
  } else {
    const failed = [g, a].filter((r) => r.status === "rejected").map((r) => describe(r.reason));
    state.lastError = failed[0] ?? null;
    state.lastOk = Date.now();
    setLive("live", "Live", `Updated ${new Date(state.lastOk).toLocaleTimeString()} · every 2 s`);
    setBanner(failed.length ? `Partly updated: ${failed.join("; ")}` : null);
  }
  state.updates++;
  document.body.dataset.updates = String(state.updates);
  timer = setTimeout(poll, POLL_MS);
}

// ---- controls ----

$("window").addEventListener("change", (e) => {
  state.windowSeconds = Number(e.target.value);
  try {
    localStorage.setItem(WINDOW_KEY, String(state.windowSeconds));
  } catch {
    // not kept
  }
  void poll();
});
$("fit").addEventListener("click", () => graph.fit());
$("relayout").addEventListener("click", () => graph.layout());
$("live").addEventListener("click", () => {
  if ($("live").dataset.state === "unauthorized") openTokenDialog();
});

function openTokenDialog() {
  const dialog = $("token-dialog");
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setToken($("token-input").value.trim());
  $("token-input").value = "";
  $("token-dialog").close();
  void poll();
});

window.addEventListener("hashchange", applyRoute);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) void poll();
});

// What tests (and curious people in the console) can read.
window.__nodemesh = {
  get nodes() {
    return state.graph?.nodes ?? [];
  },
  get edges() {
    return state.graph?.edges ?? [];
  },
  get services() {
    return state.graph?.services ?? [];
  },
  get agents() {
    return state.agents;
  },
  get selected() {
    return state.selected;
  },
  get detail() {
    return state.detail;
  },
  get updates() {
    return state.updates;
  },
  get layouts() {
    return graph.layouts;
  },
  get windowSeconds() {
    return state.windowSeconds;
  },
  get lastError() {
    return state.lastError;
  },
  positions: () => graph.positions(),
  clientPosition: (id) => graph.clientPosition(id),
  /** The label drawn on an edge ("source>target"). */
  edgeLabel: (id) => graph.cy.getElementById(id).data("label") ?? null,
};

applyRoute();
void poll();
