// The Nodes view: each node's agent and facts, and the node-to-node round-trip times its agent
// measures, as a matrix colored by how healthy the path is.

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
  <td class="num">${(a.pods ?? []).length}</td>
  <td class="muted">${fmtAgo(a.lastReport?.at, now)}</td>
</tr>`;
    })
    .join("");

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
            text = p.rttMs < 1 ? p.rttMs.toFixed(3) : p.rttMs < 10 ? p.rttMs.toFixed(2) : p.rttMs.toFixed(1);
            title = `${p.rttMs} ms`;
            if (p.lossRatio > 0) text += `<span class="loss">${Math.round(p.lossRatio * 100)}% loss</span>`;
          }
          return `<td class="${state}" title="${esc(title)}" data-testid="rtt-cell" data-from="${esc(from.node)}" data-to="${esc(to)}" data-value="${esc(value)}">${text}</td>`;
        })
        .join("");
      return `<tr><th>${esc(from.node)}</th>${cells}</tr>`;
    })
    .join("");
  els.matrix.innerHTML = agents.length ? `${head}<tbody>${rows}</tbody>` : "";
}
