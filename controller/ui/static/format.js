// Numbers and health for people: one place decides how a rate, a percentage or a latency reads,
// and which color an error rate is.

export const COLORS = {
  ok: "#2fbf71",
  warn: "#f2a93b",
  bad: "#ef5350",
  idle: "#5b6579",
  accent: "#7c9cff",
  text: "#e7ecf4",
  text2: "#b4bfd0",
  muted: "#7d899d",
  surface: "#10151f",
  surface2: "#151c29",
  surface3: "#1b2333",
  border: "#2e3a4f",
  bg: "#0a0e15",
};

/** Green below 1 % errors, amber below 5 %, red above; grey without traffic. */
export function health(errorRate, rps) {
  if (!(rps > 0)) return "idle";
  if (errorRate < 0.01) return "ok";
  if (errorRate < 0.05) return "warn";
  return "bad";
}

/** Round-trip time between nodes: green below 2 ms, amber below 20 ms or with some loss, red above. */
export function rttHealth(peer) {
  if (!peer) return "unknown";
  if (peer.error || peer.lossRatio >= 1) return "bad";
  if (peer.rttMs >= 20) return "bad";
  if (peer.rttMs >= 2 || peer.lossRatio > 0) return "warn";
  return "ok";
}

const group = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function fmtRate(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v === 0) return "0";
  if (v < 0.01) return "<0.01";
  if (v < 10) return v.toFixed(2);
  if (v < 100) return v.toFixed(1);
  return group.format(v);
}

/** An error ratio (0..1) as a percentage. */
export function fmtPercent(ratio) {
  if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return "–";
  const p = ratio * 100;
  if (p === 0) return "0%";
  if (p < 0.01) return "<0.01%";
  if (p < 10) return `${p.toFixed(2)}%`;
  return `${p.toFixed(1)}%`;
}

/** Milliseconds, without the unit. */
export function fmtMsValue(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v === 0) return "0";
  if (v < 1) return v.toFixed(2);
  if (v < 10) return v.toFixed(1);
  return group.format(v);
}

/** Milliseconds with the unit, seconds past 1000 ms. */
export function fmtMs(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)} s`;
  return `${fmtMsValue(v)} ms`;
}

export function fmtCount(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return group.format(Math.round(v));
}

export function fmtBytes(n) {
  if (!n) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

export function fmtWindow(seconds) {
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

/** "3 s ago", "5 min ago", "2 h ago". */
export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return "–";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** Escapes text for innerHTML. */
export function esc(value) {
  return String(value ?? "").replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}
