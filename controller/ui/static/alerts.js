// The Alerts view: what Alertmanager holds, as the controller reads it (`--alertmanager-url`):
// firing alerts first, then suppressed ones (silenced or inhibited), with severity, the service
// they name, their summary and since when. The tab's badge counts the firing ones.

import { esc, fmtAgo } from "./format.js";

const SEVERITY = { critical: "bad", warning: "warn", info: "idle" };
/** Labels every row shows in its own column: not repeated among the chips. */
const SHOWN = new Set(["alertname", "severity", "destination_service"]);

export class AlertsView {
  constructor(root, badge) {
    this.root = root;
    this.badge = badge;
    this.$ = (id) => root.querySelector(`#${id}`);
  }

  render(answer) {
    const items = answer.items;
    const firing = items.filter((a) => a.state === "active").length;
    this.badge.hidden = firing === 0;
    this.badge.textContent = String(firing);
    this.$("alerts-source").textContent = `from ${answer.alertmanager}`;
    const note = this.$("alerts-note");
    note.hidden = items.length > 0;
    note.textContent = "No alert is firing.";
    note.dataset.reason = "none";
    this.$("alert-rows").innerHTML = items
      .map((a) => {
        const state = a.state === "active" ? "firing" : a.state;
        const service = a.labels.destination_service ?? "";
        const chips = Object.entries(a.labels)
          .filter(([k]) => !SHOWN.has(k))
          .map(([k, v]) => `<span class="chip">${esc(k)}=${esc(v)}</span>`)
          .join(" ");
        return `<tr data-testid="alert-row" data-name="${esc(a.name)}" data-state="${esc(a.state)}" data-service="${esc(service)}" title="${esc(a.annotations.description ?? "")}">
  <td><span class="chip ${a.state === "active" ? "bad" : ""}">${esc(state)}</span></td>
  <td class="alert-name">${esc(a.name)}</td>
  <td><span class="chip ${SEVERITY[a.severity] ?? ""}">${esc(a.severity || "–")}</span></td>
  <td>${service ? esc(service) : '<span class="muted">–</span>'}</td>
  <td class="alert-summary">${esc(a.annotations.summary ?? "")}</td>
  <td title="${esc(a.startsAt)}">${esc(fmtAgo(a.startsAt))}</td>
  <td>${chips}</td>
</tr>`;
      })
      .join("");
  }

  /** `notConfigured`: the controller has no --alertmanager-url (404). */
  showError(message, notConfigured) {
    this.badge.hidden = true;
    this.$("alert-rows").innerHTML = "";
    this.$("alerts-source").textContent = "";
    const note = this.$("alerts-note");
    note.hidden = false;
    note.dataset.reason = notConfigured ? "not-configured" : "error";
    note.textContent = notConfigured
      ? "No Alertmanager is configured: start the controller with --alertmanager-url URL to see its alerts here."
      : `Alertmanager could not be read: ${message}`;
  }
}
