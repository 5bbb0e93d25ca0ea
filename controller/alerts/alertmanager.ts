// The alerts Alertmanager holds, read from its API v2 (`GET /api/v2/alerts`) for the dashboard
// (`--alertmanager-url`). The controller asks, not the browser: the page talks to the controller
// only (its CSP allows no other origin), the request carries the controller's view of the network,
// and one answer serves every open dashboard for a second (many pages polling every 2 s cost
// Alertmanager one request a second, not one per page).

import type { Alert } from "../../api/alerts.ts";

const CACHE_MS = 1000;
const TIMEOUT_MS = 5000;
const MAX_BODY_BYTES = 4 * 1024 * 1024;
/** More would not fit on a page anyway; the rest are counted in `truncated`. */
const MAX_ALERTS = 1000;

export class AlertmanagerError extends Error {}

export interface AlertsAnswer {
  /** The Alertmanager asked, without credentials. */
  alertmanager: string;
  items: Alert[];
  truncated: number;
}

/** `--alertmanager-url`: an http(s) URL, with a path prefix if Alertmanager has one (`--web.route-prefix`). */
export function parseAlertmanagerUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`--alertmanager-url must be an http or https URL, got "${value}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new Error(`--alertmanager-url must be an http or https URL, got "${value}"`);
  if (url.search || url.hash) throw new Error(`--alertmanager-url takes no query or fragment, got "${value}"`);
  return url;
}

export class AlertmanagerClient {
  readonly #endpoint: URL;
  readonly #authorization: string | undefined;
  readonly #shown: string;
  #cached: { at: number; answer: AlertsAnswer } | undefined;
  #inFlight: Promise<AlertsAnswer> | undefined;

  constructor(url: URL) {
    const base = new URL(url);
    // Basic auth in the URL becomes a header: fetch refuses URLs with credentials.
    this.#authorization =
      base.username || base.password
        ? `Basic ${Buffer.from(`${decodeURIComponent(base.username)}:${decodeURIComponent(base.password)}`).toString("base64")}`
        : undefined;
    base.username = "";
    base.password = "";
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    this.#shown = base.href;
    // Active (firing) and suppressed (silenced, inhibited) alerts: the page says which is which.
    this.#endpoint = new URL("api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true", base);
  }

  get url(): string {
    return this.#shown;
  }

  alerts(): Promise<AlertsAnswer> {
    if (this.#cached && performance.now() - this.#cached.at < CACHE_MS) return Promise.resolve(this.#cached.answer);
    this.#inFlight ??= this.#fetch().finally(() => {
      this.#inFlight = undefined;
    });
    return this.#inFlight;
  }

  async #fetch(): Promise<AlertsAnswer> {
    let res: Response;
    try {
      res = await fetch(this.#endpoint, {
        headers: { accept: "application/json", ...(this.#authorization ? { authorization: this.#authorization } : {}) },
        signal: AbortSignal.timeout(TIMEOUT_MS),
        redirect: "error",
      });
    } catch (err) {
      const why = (err as Error).name === "TimeoutError" ? `no answer in ${TIMEOUT_MS / 1000} s` : causeOf(err);
      throw new AlertmanagerError(`Alertmanager at ${this.#shown} cannot be reached: ${why}`);
    }
    const text = await readCapped(res);
    if (!res.ok)
      throw new AlertmanagerError(`Alertmanager at ${this.#shown} answered ${res.status}: ${text.slice(0, 200)}`);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new AlertmanagerError(`Alertmanager at ${this.#shown} answered with something other than JSON`);
    }
    if (!Array.isArray(body)) throw new AlertmanagerError(`Alertmanager at ${this.#shown} answered with no alert list`);
    const items = body.slice(0, MAX_ALERTS).map(toAlert);
    items.sort(
      (a, b) => (a.state === b.state ? 0 : a.state === "active" ? -1 : 1) || b.startsAt.localeCompare(a.startsAt),
    );
    const answer = { alertmanager: this.#shown, items, truncated: Math.max(0, body.length - MAX_ALERTS) };
    this.#cached = { at: performance.now(), answer };
    return answer;
  }
}

function causeOf(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message;
}

async function readCapped(res: Response): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body ?? []) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      await res.body?.cancel();
      throw new AlertmanagerError(`Alertmanager's answer exceeds ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks).toString("utf8");
}

const strings = (v: unknown): Record<string, string> =>
  typeof v === "object" && v !== null
    ? Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === "string"))
    : {};
const str = (v: unknown): string => (typeof v === "string" ? v : "");
const strList = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x) => typeof x === "string") : []);

/** One gettableAlert of Alertmanager's OpenAPI. */
function toAlert(raw: unknown): Alert {
  const a = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
  const labels = strings(a.labels);
  const status = (typeof a.status === "object" && a.status !== null ? a.status : {}) as Record<string, unknown>;
  return {
    name: labels.alertname ?? "",
    state: str(status.state) || "unprocessed",
    severity: labels.severity ?? "",
    labels,
    annotations: strings(a.annotations),
    startsAt: str(a.startsAt),
    updatedAt: str(a.updatedAt),
    generatorURL: str(a.generatorURL),
    fingerprint: str(a.fingerprint),
    silencedBy: strList(status.silencedBy),
    inhibitedBy: strList(status.inhibitedBy),
  };
}
