// The alerts the controller serves from Alertmanager (controller/alerts/, `--alertmanager-url`):
//
//   GET /apis/nodemesh.io/v1alpha1/alerts → { kind: "AlertList", alertmanager, items: Alert[], truncated }
//
// 404 when the controller has no --alertmanager-url; 503 when Alertmanager does not answer.

/** An alert Alertmanager holds (its /api/v2/alerts), as GET /apis/nodemesh.io/v1alpha1/alerts serves it. */
export interface Alert {
  name: string;
  /** Alertmanager's state: active (firing), suppressed (silenced or inhibited), unprocessed. */
  state: string;
  severity: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  updatedAt: string;
  generatorURL: string;
  fingerprint: string;
  silencedBy: string[];
  inhibitedBy: string[];
}
