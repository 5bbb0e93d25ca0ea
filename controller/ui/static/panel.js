// The service panel: golden signals now and over the window (uPlot), who calls the service, where
// its endpoints run, and which routes and policies name it with how many agents applied them.

import { COLORS, esc, fmtCount, fmtMs, fmtMsValue, fmtPercent, fmtRate, fmtWindow, health } from "./format.js";

const FONT = "11px Inter, 'Segoe UI', system-ui, -apple-system, Roboto, 'DejaVu Sans', Arial, sans-serif";

function rgba(hex, alpha) {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function gradient(color) {
  return (u) => {
    const { top, height } = u.bbox;
    if (!Number.isFinite(top) || !Number.isFinite(height) || height <= 0) return rgba(color, 0.12);
    const g = u.ctx.createLinearGradient(0, top, 0, top + height);
    g.addColorStop(0, rgba(color, 0.32));
    g.addColorStop(1, rgba(color, 0.02));
    return g;
  };
}

const axis = (extra = {}) => ({
  stroke: COLORS.muted,
  font: FONT,
  grid: { stroke: "rgba(125, 137, 157, 0.13)", width: 1 },
  ticks: { stroke: "rgba(125, 137, 157, 0.25)", width: 1, size: 4 },
  ...extra,
});

/** A small time-series chart; `series` are [label, color, fill?]. */
const CHART_HEIGHT = 124;
const minutes = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const seconds = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});

/** Tick labels on one line: seconds only when ticks are less than a minute apart. */
function timeTicks(_u, ticks) {
  const fine = ticks.length > 1 && ticks[1] - ticks[0] < 60;
  return ticks.map((t) => (fine ? seconds : minutes).format(t * 1000));
}

/** Each point is one step of the series, drawn as a level that lasts its step. */
const stepped = () => window.uPlot.paths.stepped?.({ align: 1 });

function makeChart(el, series, { format, minTop, xRange }) {
  const opts = {
    width: Math.max(200, el.clientWidth),
    height: CHART_HEIGHT,
    padding: [6, 16, 0, 0],
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { size: 6 } },
    scales: {
      // The whole window, so that a service that just started getting traffic shows it at the right edge.
      x: { time: true, range: () => xRange() },
      y: { range: (_u, _min, max) => [0, Math.max(minTop, (max ?? 0) * 1.2)] },
    },
    axes: [
      axis({ space: 50, size: 26, values: timeTicks }),
      axis({ size: 46, space: 22, values: (_u, ticks) => ticks.map(format) }),
    ],
    series: [
      {},
      ...series.map(([label, color, fill]) => ({
        label,
        stroke: color,
        width: 1.8,
        fill: fill ? gradient(color) : undefined,
        paths: stepped(),
        points: { show: (u) => u.data[0].length < 2, size: 5 },
        spanGaps: false,
      })),
    ],
  };
  return new window.uPlot(opts, [[], ...series.map(() => [])], el);
}

function tableRows(tbody, rows, empty, cols) {
  tbody.innerHTML = rows.length ? rows.join("") : `<tr class="empty-row"><td colspan="${cols}">${esc(empty)}</td></tr>`;
}

/** Endpoints name pods "namespace/name": the service's own namespace goes without saying. */
function podName(pod, namespace) {
  return pod.startsWith(`${namespace}/`) ? pod.slice(namespace.length + 1) : pod;
}

export class ServicePanel {
  constructor(root, { onClose }) {
    this.root = root;
    this.key = null;
    this.charts = null;
    this.$ = (id) => root.querySelector(`#${id}`);
    this.$("panel-close").addEventListener("click", () => onClose());
    new ResizeObserver(() => this.#resizeCharts()).observe(this.$("chart-rate"));
  }

  get open() {
    return !this.root.hidden;
  }

  /** Opens (or switches) the panel to a service; its numbers arrive with render(). */
  show(namespace, name) {
    const key = `${namespace}/${name}`;
    this.root.hidden = false;
    this.root.dataset.service = key;
    if (this.key === key) return;
    this.key = key;
    this.$("panel-title").textContent = name;
    this.$("panel-sub").textContent = namespace;
    for (const id of ["signal-rps", "signal-errors", "signal-p50", "signal-p99", "signal-requests"]) {
      const el = this.$(id);
      el.textContent = "–";
      el.className = el.className.replace(/\b(ok|warn|bad|idle)-text\b/g, "").trim();
      delete el.dataset.value;
    }
    this.root.removeAttribute("data-loaded");
    this.#destroyCharts();
  }

  hide() {
    this.root.hidden = true;
    this.key = null;
    delete this.root.dataset.service;
    this.#destroyCharts();
  }

  showError(message) {
    this.$("panel-sub").textContent = message;
  }

  render(detail, windowSeconds) {
    const { service, totals, series, callers, endpoints, policies } = detail;
    const ports = service.ports.map((p) => `${p.port}${p.protocol ? `/${p.protocol}` : ""}`).join(", ");
    this.$("panel-sub").textContent = `${service.namespace} · ${service.vip}${ports ? ` · ${ports}` : ""}`;

    const state = health(totals.errorRate, totals.requestsPerSecond);
    this.#signal("signal-rps", fmtRate(totals.requestsPerSecond), totals.requestsPerSecond);
    this.#signal("signal-errors", fmtPercent(totals.errorRate), totals.errorRate, `${state}-text`);
    this.#signal("signal-p50", fmtMsValue(totals.p50Ms), totals.p50Ms);
    this.#signal("signal-p99", fmtMsValue(totals.p99Ms), totals.p99Ms);
    // Each point's rate covers one step: rate × step summed over the series is the window's count.
    const step = series.length > 1 ? series[1].t - series[0].t : Math.max(1, Math.round(windowSeconds / 60));
    const requests = series.reduce((sum, p) => sum + p.requestsPerSecond * step, 0);
    this.#signal("signal-requests", fmtCount(requests), Math.round(requests));
    this.$("signal-window").textContent = fmtWindow(windowSeconds);
    const errorsNote = this.$("signal-errors-note");
    errorsNote.textContent =
      state === "idle" ? "no traffic" : { ok: "healthy", warn: "degraded", bad: "failing" }[state];
    errorsNote.className = `signal-unit ${state}-text`;

    this.#renderCharts(series, step, windowSeconds);

    tableRows(
      this.$("callers"),
      callers.map((c) => {
        const s = health(c.errorRate, c.requestsPerSecond);
        return `<tr data-testid="caller-row" data-source="${esc(c.source)}"><td><span class="dot ${s}"></span> ${esc(c.source)}</td><td class="num">${fmtRate(c.requestsPerSecond)}</td><td class="num ${s}-text">${fmtPercent(c.errorRate)}</td><td class="num">${fmtMs(c.p99Ms)}</td></tr>`;
      }),
      "No callers in this window",
      4,
    );
    tableRows(
      this.$("endpoints"),
      endpoints.map(
        (e) =>
          `<tr data-testid="endpoint-row" data-pod="${esc(e.pod)}" data-node="${esc(e.node)}"><td title="${esc(e.pod)}">${esc(podName(e.pod, service.namespace))}</td><td class="mono">${esc(e.ip)}</td><td><span class="chip">${esc(e.node)}</span></td></tr>`,
      ),
      "No endpoints: no enrolled pod matches the selector",
      3,
    );
    const list = this.$("policies");
    list.innerHTML = policies.length
      ? policies
          .map((p) => {
            const done = p.agentsTotal > 0 && p.agentsApplied === p.agentsTotal;
            return `<li class="policy-row" data-testid="policy-row" data-name="${esc(p.name)}" data-applied="${p.agentsApplied}" data-total="${p.agentsTotal}">
  <span class="policy-kind">${esc(p.kind)}</span>
  <span class="policy-name">${esc(p.namespace)}/${esc(p.name)}</span>
  <span class="chip ${done ? "ok" : "warn"}" data-testid="policy-applied">applied ${p.agentsApplied}/${p.agentsTotal} agents</span>
</li>`;
          })
          .join("")
      : `<li class="none">No HTTPRoute, GRPCRoute or TrafficPolicy names this service.</li>`;
    this.root.dataset.loaded = "true";
  }

  #signal(id, text, value, cls) {
    const el = this.$(id);
    el.textContent = text;
    el.dataset.value = value === null || value === undefined ? "" : String(value);
    el.className = `${id === "signal-requests" ? "" : "signal-value"}${cls ? ` ${cls}` : ""}`.trim();
  }

  #renderCharts(series, step, windowSeconds) {
    if (!window.uPlot) return;
    const last = series.length ? series[series.length - 1].t + step : 0;
    const end = Math.max(Date.now() / 1000, last);
    this.xRange = [end - windowSeconds, end];
    if (!this.charts) {
      const xRange = () => this.xRange;
      this.charts = {
        rate: makeChart(this.$("chart-rate"), [["req/s", COLORS.accent, true]], { format: fmtRate, minTop: 1, xRange }),
        errors: makeChart(this.$("chart-errors"), [["errors", COLORS.bad, true]], {
          format: (v) => `${v}%`,
          minTop: 1,
          xRange,
        }),
        latency: makeChart(
          this.$("chart-latency"),
          [
            ["p50", "#5fd3a4", false],
            ["p99", COLORS.warn, true],
          ],
          { format: (v) => fmtMsValue(v), minTop: 1, xRange },
        ),
      };
    }
    // The last step is drawn to its end: one more x, repeating the last values.
    const t = series.map((p) => p.t);
    if (series.length) t.push(last);
    const column = (f) => {
      const values = series.map(f);
      if (values.length) values.push(values[values.length - 1]);
      return values;
    };
    this.charts.rate.setData([t, column((p) => p.requestsPerSecond)]);
    this.charts.errors.setData([t, column((p) => (p.requestsPerSecond > 0 ? p.errorRate * 100 : null))]);
    this.charts.latency.setData([t, column((p) => p.p50Ms), column((p) => p.p99Ms)]);
  }

  #resizeCharts() {
    if (!this.charts) return;
    const width = Math.max(200, this.$("chart-rate").clientWidth);
    for (const c of Object.values(this.charts)) c.setSize({ width, height: CHART_HEIGHT });
  }

  #destroyCharts() {
    if (!this.charts) return;
    for (const c of Object.values(this.charts)) c.destroy();
    this.charts = null;
  }
}
