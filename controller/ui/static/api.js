// The controller's REST API as the page uses it: JSON GETs with an optional bearer token, taken
// from `?token=` (then kept in local storage and removed from the address bar) or local storage.

const TOKEN_KEY = "nodemesh.token";
export const API = "/apis/nodemesh.io/v1alpha1";

let memoryToken = null;

export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
}

export function initToken() {
  const params = new URLSearchParams(location.search);
  if (!params.has("token")) return;
  setToken(params.get("token"));
  params.delete("token");
  const query = params.toString();
  history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
}

export function token() {
  if (memoryToken !== null) return memoryToken;
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(value) {
  memoryToken = value || null;
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage may be off (private windows): the token lives in memory for this page.
  }
}

export async function getJson(path, timeoutMs = 8000) {
  const headers = { accept: "application/json" };
  const t = token();
  if (t) headers.authorization = `Bearer ${t}`;
  let res;
  try {
    res = await fetch(path, { headers, cache: "no-store", signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new ApiError(
      0,
      err?.name === "TimeoutError" ? "the controller did not answer in time" : "controller unreachable",
      path,
    );
  }
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      if (body?.message) message = body.message;
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(res.status, message, path);
  }
  return res.json();
}

export const fetchGraph = (windowSeconds) => getJson(`${API}/servicegraph?window=${windowSeconds}`);

export const fetchService = (namespace, name, windowSeconds) =>
  getJson(
    `${API}/servicegraph/services/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}?window=${windowSeconds}`,
  );

/**
 * The agents list, with every probe when the mesh is small enough to draw them as a matrix (the
 * controller decides: `?peers=matrix`), else each node's `peerSummary` only. The dashboard shows
 * each node's number of pods only, so it asks for `podCount` instead of the pods. The REST server
 * wraps the list as `{ items }`; older builds may send the array.
 */
export async function fetchAgents() {
  const body = await getJson(`${API}/agents?peers=matrix&pods=count`);
  return Array.isArray(body) ? body : (body.items ?? []);
}

/** Recent traces; `filter`: { service: "ns/name", errors: bool, minMs: "100", slowest: bool }. */
export function fetchTraces(filter, limit = 100) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (filter.service) q.set("service", filter.service);
  if (filter.errors) q.set("errors", "true");
  if (filter.minMs) q.set("minDurationMs", filter.minMs);
  if (filter.slowest) q.set("sort", "duration");
  return getJson(`${API}/traces?${q}`);
}

export const fetchTrace = (traceId) => getJson(`${API}/traces/${encodeURIComponent(traceId)}`);

export const fetchAlerts = () => getJson(`${API}/alerts`);
