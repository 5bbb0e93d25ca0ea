// The Traces view: the controller's recent traces (slow and failed first to the eye: red status,
// duration column), filtered by service, errors and a duration floor; clicking one draws it as a
// waterfall across agents and services: a bar per span placed by start and duration, indented by
// parent, its kind and node beside the name, error spans red, backoff events as ticks, and the
// span's attributes on hover (title) and click (the detail box).

import { esc, fmtMs } from "./format.js";

const KIND_LABEL = {
  server: "server",
  client: "client",
  internal: "internal",
  producer: "producer",
  consumer: "consumer",
  unspecified: "span",
};
/** Attributes worth a line in a bar's tooltip, in this order. */
const TOOLTIP_KEYS = [
  "http.request.method",
  "url.path",
  "http.response.status_code",
  "rpc.grpc.status_code",
  "nodemesh.destination.service",
  "nodemesh.destination.workload",
  "nodemesh.source.workload",
  "network.peer.address",
  "nodemesh.attempt",
  "nodemesh.retries",
  "nodemesh.mtls",
  "error.type",
];

const time = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms === 0) return "0 ms";
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  return fmtMs(ms);
}

function statusCell(t) {
  const label = t.httpStatus ?? (t.error ? "error" : "ok");
  const cls = t.error ? (t.httpStatus !== null && t.httpStatus < 500 ? "warn" : "bad") : "ok";
  return `<span class="chip ${cls}" data-testid="trace-status">${esc(label)}${t.errorCount ? ` · ${t.errorCount} failed span${t.errorCount > 1 ? "s" : ""}` : ""}</span>`;
}

function value(v) {
  return typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
}

export function spanTooltip(span) {
  const lines = [`${span.name} (${KIND_LABEL[span.kind] ?? span.kind}) on ${span.node || "?"}`];
  lines.push(`${fmtDuration(span.durationMs)} from +${fmtDuration(span.offsetMs)}`);
  for (const key of TOOLTIP_KEYS) if (key in span.attributes) lines.push(`${key} = ${value(span.attributes[key])}`);
  if (span.status === "error") lines.push(`status: error${span.statusMessage ? ` (${span.statusMessage})` : ""}`);
  for (const e of span.events) lines.push(`event ${e.name} at +${fmtDuration(e.offsetMs)}`);
  return lines.join("\n");
}

export class TracesView {
  constructor(root, { onFilter, onOpen }) {
    this.root = root;
    this.$ = (id) => root.querySelector(`#${id}`);
    this.items = [];
    this.trace = null;
    this.selectedSpan = null;
    this.$("trace-filters").addEventListener("change", () => onFilter(this.filterFromForm()));
    this.$("trace-filters").addEventListener("submit", (e) => e.preventDefault());
    this.$("trace-rows").addEventListener("click", (e) => {
      const row = e.target.closest("[data-trace-id]");
      if (row) onOpen(row.dataset.traceId);
    });
    this.$("waterfall").addEventListener("click", (e) => {
      const row = e.target.closest("[data-span-id]");
      if (row) this.selectSpan(row.dataset.spanId);
    });
  }

  filterFromForm() {
    const min = this.$("trace-min").value.trim();
    return {
      service: this.$("trace-service").value,
      errors: this.$("trace-errors").checked,
      minMs: min === "" ? "" : String(Math.max(0, Number(min) || 0)),
      slowest: this.$("trace-sort").value === "duration",
    };
  }

  /** Puts a filter (from the address) into the form; `services` fill the choice of service. */
  setFilter(filter, services) {
    const select = this.$("trace-service");
    const all = [...new Set([...services, ...(filter.service ? [filter.service] : [])])].sort();
    const options = [
      `<option value="">all services</option>`,
      ...all.map((s) => `<option value="${esc(s)}">${esc(s)}</option>`),
    ];
    const html = options.join("");
    if (select.dataset.options !== html) {
      select.innerHTML = html;
      select.dataset.options = html;
    }
    select.value = filter.service ?? "";
    this.$("trace-errors").checked = Boolean(filter.errors);
    this.$("trace-sort").value = filter.slowest ? "duration" : "recent";
    if (document.activeElement !== this.$("trace-min")) this.$("trace-min").value = filter.minMs ?? "";
  }

  renderList(items, selectedId) {
    this.items = items;
    this.$("traces-empty").hidden = items.length > 0;
    this.$("trace-rows").innerHTML = items
      .map(
        (
          t,
        ) => `<tr class="trace-row${t.traceId === selectedId ? " selected" : ""}${t.error ? " failed" : ""}" data-testid="trace-row" data-trace-id="${esc(t.traceId)}" data-error="${t.error}" data-duration="${t.durationMs}">
  <td class="mono">${esc(time.format(new Date(t.startTime)))}</td>
  <td><span class="trace-root">${esc(t.rootName || "(unnamed)")}</span>${t.partial ? ' <span class="chip" title="Some spans have not arrived (yet)">partial</span>' : ""}</td>
  <td class="num" data-testid="trace-duration">${fmtDuration(t.durationMs)}</td>
  <td>${statusCell(t)}</td>
  <td>${t.services.map((s) => `<span class="chip">${esc(s)}</span>`).join(" ") || '<span class="muted">–</span>'}</td>
  <td>${t.nodes.map((n) => `<span class="chip">${esc(n)}</span>`).join(" ")}</td>
  <td class="num">${t.spanCount}</td>
</tr>`,
      )
      .join("");
  }

  showListError(message) {
    this.$("traces-empty").hidden = false;
    this.$("traces-empty").textContent = message;
  }

  clearTrace() {
    this.trace = null;
    this.selectedSpan = null;
    this.$("waterfall-card").hidden = true;
    delete this.$("waterfall-card").dataset.traceId;
  }

  showTraceError(traceId, message) {
    this.trace = null;
    const card = this.$("waterfall-card");
    card.hidden = false;
    card.dataset.traceId = traceId;
    this.$("wf-id").textContent = traceId;
    this.$("wf-note").textContent = message;
    this.$("waterfall").innerHTML = "";
    this.$("span-detail").hidden = true;
  }

  renderTrace(trace) {
    const changed = this.trace?.traceId !== trace.traceId;
    this.trace = trace;
    if (changed) this.selectedSpan = null;
    const card = this.$("waterfall-card");
    card.hidden = false;
    card.dataset.traceId = trace.traceId;
    this.$("wf-id").textContent = trace.traceId;
    this.$("wf-note").textContent =
      `${fmtDuration(trace.durationMs)} · ${trace.spanCount} spans · ${trace.nodes.length} node${trace.nodes.length === 1 ? "" : "s"} · ${trace.services.join(", ") || "no service"}${trace.partial ? " · partial" : ""}`;
    const total = Math.max(trace.durationMs, 0.001);
    const pct = (ms) => `${Math.min(100, Math.max(0, (ms / total) * 100)).toFixed(3)}%`;
    const ticks = [0, 0.25, 0.5, 0.75, 1]
      .map((f) => `<span class="wf-tick" style="left:${f * 100}%">${fmtDuration(total * f)}</span>`)
      .join("");
    const rows = trace.spans.map((s) => {
      const width = Math.max((s.durationMs / total) * 100, 0.4);
      const events = s.events
        .map(
          (e) =>
            `<i class="wf-event" style="left:${pct(e.offsetMs)}" title="${esc(`${e.name} at +${fmtDuration(e.offsetMs)}`)}"></i>`,
        )
        .join("");
      return `<div class="wf-row${s.status === "error" ? " error" : ""}${s.spanId === this.selectedSpan ? " selected" : ""}" data-testid="wf-row" data-span-id="${esc(s.spanId)}" data-depth="${s.depth}" data-kind="${esc(s.kind)}" data-node="${esc(s.node)}" data-status="${esc(s.status)}" title="${esc(spanTooltip(s))}">
  <div class="wf-label" style="padding-left:${8 + s.depth * 16}px">
    <span class="wf-name">${esc(s.name)}</span>
    <span class="wf-kind ${esc(s.kind)}">${esc(KIND_LABEL[s.kind] ?? s.kind)}</span>
    <span class="chip wf-node">${esc(s.node || "?")}</span>
  </div>
  <div class="wf-track">
    <div class="wf-bar" data-testid="wf-bar" style="left:${pct(s.offsetMs)};width:${Math.min(width, 100).toFixed(3)}%"></div>${events}
    <span class="wf-duration" style="left:${pct(s.offsetMs + s.durationMs)}">${fmtDuration(s.durationMs)}</span>
  </div>
</div>`;
    });
    this.$("waterfall").innerHTML =
      `<div class="wf-axis"><div></div><div class="wf-ticks">${ticks}</div></div>${rows.join("")}`;
    if (this.selectedSpan) this.#renderDetail();
    else this.$("span-detail").hidden = true;
  }

  selectSpan(spanId) {
    this.selectedSpan = spanId;
    for (const row of this.$("waterfall").querySelectorAll(".wf-row")) {
      row.classList.toggle("selected", row.dataset.spanId === spanId);
    }
    this.#renderDetail();
  }

  #renderDetail() {
    const span = this.trace?.spans.find((s) => s.spanId === this.selectedSpan);
    const box = this.$("span-detail");
    if (!span) {
      box.hidden = true;
      return;
    }
    const table = (title, attrs) => {
      const entries = Object.entries(attrs);
      if (!entries.length) return "";
      return `<h3 class="section-title">${esc(title)}</h3><table class="grid compact attrs">${entries
        .map(
          ([k, v]) =>
            `<tr data-testid="span-attribute" data-key="${esc(k)}"><th>${esc(k)}</th><td class="mono">${esc(value(v))}</td></tr>`,
        )
        .join("")}</table>`;
    };
    box.hidden = false;
    box.dataset.spanId = span.spanId;
    box.innerHTML = `<div class="span-head"><span class="wf-name">${esc(span.name)}</span> <span class="wf-kind ${esc(span.kind)}">${esc(KIND_LABEL[span.kind] ?? span.kind)}</span> <span class="chip">${esc(span.node)}</span>
  <span class="chip ${span.status === "error" ? "bad" : "ok"}">${esc(span.status)}${span.statusMessage ? `: ${esc(span.statusMessage)}` : ""}</span>
  <span class="muted">${fmtDuration(span.durationMs)} at +${fmtDuration(span.offsetMs)} · span ${esc(span.spanId)}${span.parentSpanId ? ` · parent ${esc(span.parentSpanId)}` : ""}</span></div>
${table("Attributes", span.attributes)}
${span.events.length ? `<h3 class="section-title">Events</h3><ul class="events">${span.events.map((e) => `<li><span class="mono">+${fmtDuration(e.offsetMs)}</span> ${esc(e.name)} <span class="muted mono">${esc(JSON.stringify(e.attributes))}</span></li>`).join("")}</ul>` : ""}
${table("Resource", span.resource)}`;
  }
}
