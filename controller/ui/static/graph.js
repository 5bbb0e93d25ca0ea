// The topology: services and workloads as cards, laid out left to right by dagre, edges labelled
// with their rate, errors, p99 and whether the hop is mutual TLS. Updates change data in place;
// the layout runs again only when the set of nodes changes, so positions and the viewport hold
// still while the numbers move.

import { COLORS, fmtMs, fmtPercent, fmtRate, health } from "./format.js";

// Unquoted: cytoscape refuses quoted family names (the SVG cards take it as it is).
const FONT = "Inter, Segoe UI, system-ui, -apple-system, Roboto, Helvetica Neue, DejaVu Sans, Arial, sans-serif";
const CARD_HEIGHT = 48;
const MIN_CARD_WIDTH = 124;

let registered = false;
const measureCtx = document.createElement("canvas").getContext("2d");

function textWidth(text, font) {
  measureCtx.font = font;
  return measureCtx.measureText(text).width;
}

function svgEscape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const ICONS = {
  // A hexagon: a Service (a stable name in front of endpoints).
  service: (c) =>
    `<path d="M12 3.5l7.4 4.25v8.5L12 20.5l-7.4-4.25v-8.5z" fill="none" stroke="${c}" stroke-width="1.8" stroke-linejoin="round"/><circle cx="12" cy="12" r="2.6" fill="${c}"/>`,
  // Stacked boxes: a workload (its pods).
  workload: (c) =>
    `<rect x="4.5" y="4.5" width="9" height="9" rx="2" fill="none" stroke="${c}" stroke-width="1.8"/><rect x="10.5" y="10.5" width="9" height="9" rx="2" fill="${c}" fill-opacity="0.35" stroke="${c}" stroke-width="1.8"/>`,
};

/** The card a node is drawn as: an SVG image, so the name and its caption get real typography. */
function card(node, state) {
  const isService = node.kind === "service";
  const color = state === "idle" ? (isService ? COLORS.accent : COLORS.muted) : COLORS[state];
  const stroke = isService || state === "warn" || state === "bad" ? color : COLORS.border;
  const caption = `${isService ? "service" : "workload"} · ${node.namespace || "–"}`;
  const nameFont = `600 13.5px ${FONT}`;
  const captionFont = `400 11px ${FONT}`;
  const width = Math.ceil(
    Math.max(MIN_CARD_WIDTH, 46 + Math.max(textWidth(node.name, nameFont), textWidth(caption, captionFont)) + 14),
  );
  const h = CARD_HEIGHT;
  const fill = isService ? COLORS.surface3 : COLORS.surface2;
  const bar = isService ? `<rect x="0" y="0" width="4" height="${h}" rx="2" fill="${color}"/>` : "";
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${h}" viewBox="0 0 ${width} ${h}">
<rect x="0.75" y="0.75" width="${width - 1.5}" height="${h - 1.5}" rx="10" fill="${fill}" stroke="${stroke}" stroke-width="1.5"/>
${bar}
<rect x="10" y="10" width="28" height="28" rx="7" fill="${color}" fill-opacity="0.14"/>
<g transform="translate(12 12)">${ICONS[isService ? "service" : "workload"](color)}</g>
<text x="46" y="22" font-family="${FONT}" font-size="13.5" font-weight="600" fill="${COLORS.text}">${svgEscape(node.name)}</text>
<text x="46" y="37" font-family="${FONT}" font-size="11" fill="${COLORS.muted}">${svgEscape(caption)}</text>
</svg>`;
  return { img: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`, w: width, h };
}

function edgeLabel(e) {
  const unit = e.protocol === "tcp" ? "conn/s" : "req/s";
  const first = `${fmtRate(e.requestsPerSecond)} ${unit} · ${fmtPercent(e.errorRate)}`;
  const p99 = e.p99Ms === null || e.p99Ms === undefined ? null : `p99 ${fmtMs(e.p99Ms)}`;
  const tls = e.mtls ? "\u25C6 mTLS" : "plain";
  return `${first}\n${p99 ? `${p99} · ` : ""}${tls}`;
}

function edgeWidth(rps) {
  return 1.6 + Math.min(4.4, Math.log10(1 + (rps || 0)) * 1.8);
}

const STYLE = [
  {
    selector: "node",
    style: {
      shape: "round-rectangle",
      width: "data(w)",
      height: "data(h)",
      "background-opacity": 0,
      "background-image": "data(img)",
      "background-width": "100%",
      "background-height": "100%",
      "background-clip": "none",
      "border-width": 0,
      label: "",
      "underlay-shape": "round-rectangle",
      "underlay-padding": 5,
      "underlay-opacity": 0,
      "underlay-color": COLORS.accent,
      "transition-property": "opacity",
      "transition-duration": 150,
    },
  },
  { selector: "node.selected", style: { "underlay-opacity": 0.32, "underlay-padding": 6 } },
  { selector: "node.hover", style: { "underlay-opacity": 0.16 } },
  {
    selector: "edge",
    style: {
      "curve-style": "bezier",
      "control-point-step-size": 60,
      width: "data(width)",
      "line-color": "data(color)",
      "line-opacity": 0.85,
      "target-arrow-shape": "triangle",
      "target-arrow-color": "data(color)",
      "arrow-scale": 0.95,
      "source-distance-from-node": 2,
      "target-distance-from-node": 3,
      label: "data(label)",
      "text-wrap": "wrap",
      "font-family": FONT,
      "font-size": 10.5,
      "font-weight": 500,
      "line-height": 1.35,
      color: COLORS.text2,
      "text-background-color": COLORS.bg,
      "text-background-opacity": 0.94,
      "text-background-padding": 4,
      "text-background-shape": "round-rectangle",
      "text-border-width": 1,
      "text-border-color": COLORS.border,
      "text-border-opacity": 1,
      "text-events": "no",
    },
  },
  { selector: "edge.flowing", style: { "line-style": "dashed", "line-dash-pattern": [9, 5] } },
  { selector: "edge.idle", style: { "line-style": "dashed", "line-dash-pattern": [3, 5], "line-opacity": 0.6 } },
  { selector: "edge.hover", style: { "line-opacity": 1, color: COLORS.text, "z-index": 10 } },
  { selector: ".faded", style: { opacity: 0.22 } },
];

export class TopologyGraph {
  /** @param {HTMLElement} container */
  constructor(container, { onSelect }) {
    if (!registered) {
      if (typeof window.cytoscapeDagre === "function") window.cytoscape.use(window.cytoscapeDagre);
      registered = true;
    }
    this.container = container;
    this.layouts = 0;
    this.selectedId = null;
    this.userMovedViewport = false;
    this.cy = window.cytoscape({
      container,
      elements: [],
      style: STYLE,
      minZoom: 0.2,
      maxZoom: 3,
      boxSelectionEnabled: false,
      autounselectify: true,
      pixelRatio: "auto",
    });
    const cy = this.cy;
    cy.on("tap", "node", (e) => onSelect(e.target.id(), e.target.data("kind")));
    cy.on("tap", (e) => {
      if (e.target === cy) onSelect(null);
    });
    cy.on("mouseover", "node", (e) => this.#highlight(e.target));
    cy.on("mouseout", "node", () => this.#highlight(null));
    container.addEventListener("mouseleave", () => this.#highlight(null));
    cy.on("mouseover", "edge", (e) => e.target.addClass("hover"));
    cy.on("mouseout", "edge", (e) => e.target.removeClass("hover"));
    cy.on("scrollzoom pinchzoom dragpan", () => {
      this.userMovedViewport = true;
    });
    new ResizeObserver(() => {
      cy.resize();
      if (!this.userMovedViewport && cy.nodes().length > 0) this.fit();
    }).observe(container);
    this.#startFlow();
  }

  #highlight(node) {
    this.cy.batch(() => {
      this.cy.elements().removeClass("faded hover");
      if (!node) return;
      node.addClass("hover");
      this.cy.elements().not(node.closedNeighborhood()).addClass("faded");
    });
  }

  /** Dashes that move along edges carrying traffic: the direction of flow at a glance. */
  #startFlow() {
    if (window.matchMedia?.("(prefers-reduced-motion: reduce)").matches) return;
    let offset = 0;
    let last = 0;
    const tick = (now) => {
      if (now - last > 50 && !document.hidden) {
        last = now;
        offset = (offset + 1) % 1400;
        const flowing = this.cy.edges(".flowing");
        if (flowing.length > 0) flowing.style("line-dash-offset", -offset);
      }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  /**
   * Applies a ServiceGraph. Returns true when the node set changed (and the graph was laid out
   * again).
   */
  update(graph) {
    const cy = this.cy;
    const services = new Map((graph.services ?? []).map((s) => [s.id, s]));
    // Workloads are colored by what they serve: the edges into them.
    const inbound = new Map();
    for (const e of graph.edges) {
      const agg = inbound.get(e.target) ?? { rps: 0, errors: 0 };
      agg.rps += e.requestsPerSecond;
      agg.errors += e.requestsPerSecond * e.errorRate;
      inbound.set(e.target, agg);
    }
    const nodeIds = new Set(graph.nodes.map((n) => n.id));
    const before = new Set(cy.nodes().map((n) => n.id()));
    const changed = nodeIds.size !== before.size || [...nodeIds].some((id) => !before.has(id));

    cy.batch(() => {
      for (const n of cy.nodes()) if (!nodeIds.has(n.id())) n.remove();
      for (const n of graph.nodes) {
        let state;
        let stats;
        if (n.kind === "service") {
          stats = services.get(n.id);
          state = health(stats?.errorRate ?? 0, stats?.requestsPerSecond ?? 0);
        } else {
          const agg = inbound.get(n.id);
          state = agg ? health(agg.rps > 0 ? agg.errors / agg.rps : 0, agg.rps) : "idle";
        }
        const key = `${n.kind}|${n.name}|${n.namespace}|${state}`;
        const existing = cy.getElementById(n.id);
        const data = { id: n.id, kind: n.kind, name: n.name, namespace: n.namespace, health: state, key };
        if (existing.nonempty()) {
          if (existing.data("key") !== key) Object.assign(data, card(n, state));
          existing.data(data);
        } else {
          cy.add({ group: "nodes", data: { ...data, ...card(n, state) } });
        }
      }
      const edgeIds = new Set();
      for (const e of graph.edges) {
        const id = `${e.source}>${e.target}`;
        edgeIds.add(id);
        const state = health(e.errorRate, e.requestsPerSecond);
        const data = {
          id,
          source: e.source,
          target: e.target,
          protocol: e.protocol,
          mtls: e.mtls,
          requestsPerSecond: e.requestsPerSecond,
          errorRate: e.errorRate,
          p50Ms: e.p50Ms,
          p99Ms: e.p99Ms,
          health: state,
          color: COLORS[state],
          width: edgeWidth(e.requestsPerSecond),
          label: edgeLabel(e),
        };
        let edge = cy.getElementById(id);
        if (edge.nonempty()) edge.data(data);
        else edge = cy.add({ group: "edges", data });
        edge.toggleClass("flowing", state !== "idle");
        edge.toggleClass("idle", state === "idle");
      }
      for (const e of cy.edges()) if (!edgeIds.has(e.id())) e.remove();
    });
    if (changed) this.layout();
    this.select(this.selectedId);
    return changed;
  }

  layout() {
    if (this.cy.nodes().length === 0) return;
    this.layouts++;
    this.cy
      .layout({
        name: typeof window.cytoscapeDagre === "function" ? "dagre" : "breadthfirst",
        rankDir: "LR",
        nodeSep: 30,
        rankSep: 140,
        edgeSep: 24,
        ranker: "network-simplex",
        directed: true,
        fit: false,
        animate: false,
      })
      .run();
    this.userMovedViewport = false;
    this.fit();
  }

  fit() {
    const cy = this.cy;
    cy.fit(undefined, 56);
    if (cy.zoom() > 1.2) {
      cy.zoom(1.2);
      cy.center();
    }
  }

  select(id) {
    if (id !== this.selectedId) this.#highlight(null);
    this.selectedId = id;
    this.cy.nodes().removeClass("selected");
    if (id) this.cy.getElementById(id).addClass("selected");
  }

  /** Positions of the nodes in graph coordinates (what stays put across updates). */
  positions() {
    return Object.fromEntries(this.cy.nodes().map((n) => [n.id(), { ...n.position() }]));
  }

  /** Where a node is on the page, for tests that click it like a person would. */
  clientPosition(id) {
    const n = this.cy.getElementById(id);
    if (n.empty()) return null;
    const p = n.renderedPosition();
    const r = this.container.getBoundingClientRect();
    return { x: r.left + p.x, y: r.top + p.y };
  }
}
