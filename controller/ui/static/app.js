// The dashboard: polls the controller every 2 s (service graph, agents, the selected service; the
// traces or alerts when their view is open) and updates the views in place. The route lives in the
// address's hash: #/topology, #/topology/service/{namespace}/{name}, #/traces[/{traceId}][?service=
// ns/name&errors=1&min=100&sort=duration], #/alerts or #/nodes. Tests read window.__nodemesh.

import { AlertsView } from "./alerts.js";
import {
  ApiError,
  fetchAgents,
  fetchAlerts,
  fetchGraph,
  fetchService,
  fetchTrace,
  fetchTraces,
  initToken,
  setToken,
} from "./api.js";
import { esc, fmtMs, fmtPercent, fmtRate, health } from "./format.js";
import { TopologyGraph } from "./graph.js";
import { renderNodes } from "./nodes.js";
import { ServicePanel } from "./panel.js";
import { TracesView } from "./traces.js";

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
  /** The Traces view: its filter and open trace (from the address), what the controller answered. */
  traceFilter: { service: "", errors: false, minMs: "", slowest: false },
  traceId: null,
  traces: [],
  trace: null,
  /** The Alerts view: the controller's answer, or why there is none. */
  alerts: null,
  alertsError: null,
  /** False once the controller said it has no Alertmanager: then asked only while the view is open. */
  alertsConfigured: true,
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
const tracesView = new TracesView($("view-traces"), {
  onFilter: (filter) => navigate(tracesHash(null, filter)),
  onOpen: (traceId) => navigate(tracesHash(traceId, state.traceFilter)),
});
const alertsView = new AlertsView($("view-alerts"), $("alerts-badge"));

function tracesHash(traceId, filter) {
  const q = new URLSearchParams();
  if (filter.service) q.set("service", filter.service);
  if (filter.errors) q.set("errors", "1");
  if (filter.minMs) q.set("min", filter.minMs);
  if (filter.slowest) q.set("sort", "duration");
  const query = q.toString();
  return `#/traces${traceId ? `/${enc(traceId)}` : ""}${query ? `?${query}` : ""}`;
}

function enc(s) {
  return encodeURIComponent(s);
}

function navigate(hash) {
  if (location.hash === hash) applyRoute();
  else location.hash = hash;
}

const TABS = ["topology", "traces", "alerts", "nodes"];

function applyRoute() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const tab = TABS.includes(parts[0]) ? parts[0] : "topology";
  state.tab = tab;
  for (const a of document.querySelectorAll(".tab")) a.classList.toggle("active", a.dataset.tab === tab);
  for (const t of TABS) $(`view-${t}`).hidden = tab !== t;
  if (tab === "traces") {
    const q = new URLSearchParams(query);
    state.traceFilter = {
      service: q.get("service") ?? "",
      errors: q.get("errors") === "1",
      minMs: q.get("min") ?? "",
      slowest: q.get("sort") === "duration",
    };
    state.traceId = parts[1] || null;
    if (state.trace?.traceId !== state.traceId) state.trace = null;
    if (!state.traceId) tracesView.clearTrace();
    tracesView.setFilter(state.traceFilter, serviceKeys());
  }
  const selected =
    tab === "topology" && parts[1] === "service" && parts[3] ? { namespace: parts[2], name: parts[3] } : null;
  const changed = selected?.namespace !== state.selected?.namespace || selected?.name !== state.selected?.name;
  state.selected = selected;
  if (selected) {
    state.highlighted = `svc:${selected.name}.${selected.namespace}`;
    panel.show(selected.namespace, selected.name);
    $("panel-traces").href = tracesHash(null, { service: `${selected.namespace}/${selected.name}` });
    $("workspace").classList.add("with-panel");
  } else {
    if (state.highlighted?.startsWith("svc:")) state.highlighted = null;
    panel.hide();
    $("workspace").classList.remove("with-panel");
  }
  graph.select(state.highlighted);
  renderServiceList();
  if (changed || tab === "traces" || tab === "alerts") {
    state.detail = null;
    void poll();
  }
}

/** "namespace/name" of the services in the graph: the Traces view's choice of service. */
function serviceKeys() {
  return (state.graph?.services ?? []).map((s) => `${s.namespace}/${s.name}`);
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
  await refreshObservability(mine);
  if (mine !== seq) return; // a newer poll took over while the traces or alerts loaded
  state.updates++;
  document.body.dataset.updates = String(state.updates);
  timer = setTimeout(poll, POLL_MS);
}

/** The Traces view's list and open trace, and the alerts (always, for the tab's badge, if configured). */
async function refreshObservability(mine) {
  const onTraces = state.tab === "traces";
  const traceId = state.traceId;
  const wantAlerts = state.alertsConfigured || state.tab === "alerts";
  const [list, one, alerts] = await Promise.allSettled([
    onTraces ? fetchTraces(state.traceFilter) : Promise.resolve(null),
    onTraces && traceId ? fetchTrace(traceId) : Promise.resolve(null),
    wantAlerts ? fetchAlerts() : Promise.resolve(null),
  ]);
  if (mine !== seq) return;
  if (onTraces) {
    tracesView.setFilter(state.traceFilter, [...serviceKeys(), ...state.traces.flatMap((t) => t.services)]);
    if (list.status === "fulfilled") {
      state.traces = list.value.items;
      tracesView.renderList(state.traces, traceId);
    } else {
      tracesView.showListError(`Traces could not be read: ${describe(list.reason)}`);
    }
    if (traceId && one.status === "fulfilled") {
      state.trace = one.value;
      tracesView.renderTrace(one.value);
    } else if (traceId && one.status === "rejected") {
      state.trace = null;
      const gone = one.reason instanceof ApiError && one.reason.status === 404;
      tracesView.showTraceError(
        traceId,
        gone ? "not in the controller's window (forgotten, or never received)" : describe(one.reason),
      );
    }
  }
  if (wantAlerts) {
    if (alerts.status === "fulfilled") {
      state.alerts = alerts.value;
      state.alertsError = null;
      state.alertsConfigured = true;
      alertsView.render(alerts.value);
    } else {
      const notConfigured = alerts.reason instanceof ApiError && alerts.reason.status === 404;
      state.alerts = null;
      state.alertsError = describe(alerts.reason);
      state.alertsConfigured = !notConfigured;
      alertsView.showError(state.alertsError, notConfigured);
    }
  }
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
  get traces() {
    return state.traces;
  },
  get trace() {
    return state.trace;
  },
  get alerts() {
    return state.alerts;
  },
  get alertsError() {
    return state.alertsError;
  },
  positions: () => graph.positions(),
  clientPosition: (id) => graph.clientPosition(id),
  /** The label drawn on an edge ("source>target"). */
  edgeLabel: (id) => graph.cy.getElementById(id).data("label") ?? null,
};

applyRoute();
void poll();
