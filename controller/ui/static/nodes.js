// The Nodes view: each node's agent and facts, and the node-to-node round-trip times its agent
// measures, as a matrix colored by how healthy the path is; a mesh too large for a matrix (the
// controller decides, api.js fetchAgents) gets each node's probes summed up instead.

import { esc, fmtAgo, fmtBytes, rttHealth } from "./format.js";

function configCell(a) {
  if (a.lastNack) {
    return `<span class="chip bad" title="${esc(a.lastNack.error)}">refused ${esc(short(a.lastNack.version))}</span>`;
  }
  if (!a.appliedVersion) return `<span class="chip warn">none applied</span>`;
  if (a.currentVersion && a.appliedVersion !== a.currentVersion) {
    return `<span class="chip warn" title="applied ${esc(a.appliedVersion)}, current ${esc(a.currentVersion)}">behind</span>`;
  }
  return `<span class="chip ok" title="${esc(a.appliedVersion)}">in sync</span>`;
}

function short(version) {
  const v = String(version ?? "");
  return v.length > 10 ? `${v.slice(0, 8)}…` : v;
}

export function renderNodes(agents, els, now = Date.now()) {
  els.empty.hidden = agents.length > 0;
  els.body.innerHTML = agents
    .map((a) => {
      const f = a.facts ?? {};
      const status = a.connected
        ? `<span class="chip ok">connected</span>`
        : `<span class="chip bad" title="since ${esc(a.disconnectedAt ?? "")}">disconnected</span>`;
      return `<tr data-testid="node-row" data-node="${esc(a.node)}" data-connected="${a.connected}">
  <td><span class="node-name"><span class="dot ${a.connected ? "ok" : "bad"}"></span>${esc(a.node)}</span><div class="muted mono">${esc(a.underlayIp ?? "")}</div></td>
  <td>${status}<div class="muted">${esc(a.agentVersion ?? "")}</div></td>
  <td>${configCell(a)}</td>
  <td>${esc(f.cpuModel ?? "–")}</td>
  <td class="num">${esc(f.cpuCores ?? "–")}</td>
  <td class="num">${fmtBytes(f.memoryBytes)}</td>
  <td>${esc(f.os ?? "–")}</td>
  <td class="mono">${esc(f.kernel ?? "–")}</td>
  <td class="num">${a.podCount}</td>
  <td class="muted">${fmtAgo(a.lastReport?.at, now)}</td>
</tr>`;
    })
    .join("");
  // The agents list came without the probes: too many nodes for a matrix.
  els.matrix.innerHTML = agents.some((a) => !a.peers) ? summaryTable(agents) : matrix(agents);
}

function matrix(agents) {
  const names = agents.map((a) => a.node);
  const head = `<thead><tr><th class="corner">from \\ to</th>${names.map((n) => `<th>${esc(n)}</th>`).join("")}</tr></thead>`;
  const rows = agents
    .map((from) => {
      const cells = names
        .map((to) => {
          if (to === from.node)
            return `<td class="self" data-testid="rtt-cell" data-from="${esc(from.node)}" data-to="${esc(to)}">—</td>`;
          const p = (from.peers ?? []).find((peer) => peer.nodeName === to);
          const state = rttHealth(p);
          let text = "?";
          let title = "no probe yet";
          let value = "";
          if (p?.error) {
            text = "error";
            title = p.error;
          } else if (p && p.lossRatio >= 1) {
            text = "lost";
            title = "every probe was lost";
          } else if (p) {
            value = String(p.rttMs);
            text = fmtRtt(p.rttMs);
            title = `${p.rttMs} ms`;
            if (p.lossRatio > 0) text += `<span class="loss">${Math.round(p.lossRatio * 100)}% loss</span>`;
          }
          return `<td class="${state}" title="${esc(title)}" data-testid="rtt-cell" data-from="${esc(from.node)}" data-to="${esc(to)}" data-value="${esc(value)}">${text}</td>`;
        })
        .join("");
      return `<tr><th>${esc(from.node)}</th>${cells}</tr>`;
    })
    .join("");
  return agents.length ? `${head}<tbody>${rows}</tbody>` : "";
}

/** An RTT in ms with three significant digits or so: 0.182, 4.60, 27.5. */
function fmtRtt(ms) {
  return ms < 1 ? ms.toFixed(3) : ms < 10 ? ms.toFixed(2) : ms.toFixed(1);
}

function summaryTable(agents) {
  const ms = (v) => (v === null || v === undefined ? "–" : fmtRtt(v));
  const rttCell = (v, title = "") =>
    `<td class="num ${v === null || v === undefined ? "unknown" : rttHealth({ rttMs: v, lossRatio: 0 })}" title="${esc(title)}">${ms(v)}</td>`;
  const count = (n, state) => `<td class="num ${n > 0 ? state : "ok"}">${esc(n ?? "–")}</td>`;
  const rows = agents
    .map((a) => {
      const s = a.peerSummary ?? {};
      return `<tr data-testid="rtt-summary-row" data-node="${esc(a.node)}"><th>${esc(a.node)}</th><td class="num">${esc(s.probed ?? "–")}</td>${count(s.unreachable, "bad")}${count(s.lossy, "warn")}${rttCell(s.rttMedianMs)}${rttCell(s.rttMaxMs, s.slowestPeer ? `to ${s.slowestPeer}` : "")}<td>${esc(s.slowestPeer ?? "")}</td></tr>`;
    })
    .join("");
  return `<caption data-testid="rtt-summary-note">${agents.length} nodes: too many to draw the matrix. Each node's latest probes, summed up; <code>nodemesh nodes -o json</code> lists every one.</caption>
<thead><tr><th class="corner">from</th><th class="num">peers probed</th><th class="num">unreachable</th><th class="num">with loss</th><th class="num">median ms</th><th class="num">slowest ms</th><th>slowest peer</th></tr></thead><tbody>${rows}</tbody>`;
}
