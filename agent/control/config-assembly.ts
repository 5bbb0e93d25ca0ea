// The pure step of applying a Config: the agent's current configuration plus a full or incremental
// update → the next configuration and the table it puts in force. One object the agent cannot use
// (a spec it cannot parse or compile, a VIP:port another Service holds) is left out of the table
// and reported in the ACK; the rest applies. Only an update that cannot be placed at all (the
// wrong base) is refused whole (NACK), and then the agent keeps what it has.

import {
  type Config,
  fromWireService,
  fromWireTraffic,
  type Peer,
  type ReceivedTraffic,
  type RejectedObject,
  serviceKey,
} from "../../api/agent-service.ts";
import { byCodeUnits } from "../../api/order.ts";
import { type Service, type ServiceTable, validateServiceTable } from "../../api/services.ts";
import { parseTrafficObject, type TrafficObject, trafficKey } from "../../api/traffic.ts";

/** What the agent holds from the controller. */
export interface ControllerConfig {
  version: string;
  /** Every Service received, keyed by serviceKey ("namespace/name"); rejected ones included. */
  services: ReadonlyMap<string, Service>;
  /** Every traffic object received, keyed by trafficKey ("kind/namespace/name"); rejected ones included. */
  traffic: ReadonlyMap<string, ReceivedTraffic>;
  /** Every node the controller knows, this one included. */
  peers: readonly Peer[];
}

/**
 * A check the data plane adds to the schema's: whether a valid object also compiles (returns the
 * reason when it does not). Run once per received object.
 */
export type TrafficCheck = (object: TrafficObject) => string | undefined;

export interface AssemblyOptions {
  checkTraffic?: TrafficCheck;
}

export type Assembly =
  | { ok: true; config: ControllerConfig; table: ServiceTable; rejected: RejectedObject[] }
  | { ok: false; error: string };

/** Each received object's own verdict, kept while the object is the same one (they are immutable). */
const verdicts = new WeakMap<object, { value: TrafficObject } | { reason: string }>();

function trafficVerdict(received: ReceivedTraffic, check: TrafficCheck | undefined) {
  let verdict = verdicts.get(received);
  if (!verdict) {
    verdict = judgeTraffic(received, check);
    verdicts.set(received, verdict);
  }
  return verdict;
}

function judgeTraffic(
  received: ReceivedTraffic,
  check: TrafficCheck | undefined,
): { value: TrafficObject } | { reason: string } {
  if (received.specError) return { reason: `spec_json is not JSON: ${received.specError}` };
  const parsed = parseTrafficObject(received);
  if (!parsed.ok) return { reason: parsed.errors.map((e) => `${e.field}: ${e.message}`).join("; ") };
  const problem = check?.(parsed.value);
  return problem ? { reason: problem } : { value: parsed.value };
}

/** The table of a configuration: its objects that the agent can use, and the others with the reason. */
export function usableTable(
  config: ControllerConfig,
  options: AssemblyOptions = {},
): { table: ServiceTable; rejected: RejectedObject[] } {
  const rejected: RejectedObject[] = [];
  const reject = (o: { kind: string; namespace: string; name: string }, reason: string) =>
    rejected.push({ kind: o.kind, namespace: o.namespace, name: o.name, reason });

  // Sorted by key: the same set gives the same table (and the same rejections), whatever updates built it.
  const traffic: TrafficObject[] = [];
  for (const [, received] of sortedByKey(config.traffic)) {
    const verdict = trafficVerdict(received, options.checkTraffic);
    if ("reason" in verdict) reject(received, verdict.reason);
    else traffic.push(verdict.value);
  }

  const services: Service[] = [];
  const vipPortOwner = new Map<string, string>();
  for (const [key, service] of sortedByKey(config.services)) {
    const problem = serviceProblem(service);
    if (problem) {
      reject({ kind: "Service", ...service }, problem);
      continue;
    }
    // Two Services on one VIP:port cannot both be routed: the first by key keeps it.
    const taken = service.ports.find((p) => vipPortOwner.has(`${service.vip}:${p.port}`));
    if (taken) {
      const at = `${service.vip}:${taken.port}`;
      reject({ kind: "Service", ...service }, `VIP:port ${at} is Service ${vipPortOwner.get(at)}'s`);
      continue;
    }
    for (const p of service.ports) vipPortOwner.set(`${service.vip}:${p.port}`, key);
    services.push(service);
  }
  return { table: { services, traffic }, rejected };
}

/** Each received Service's own verdict, kept while it is the same object (an update replaces it). */
const serviceProblems = new WeakMap<Service, string | null>();

function serviceProblem(service: Service): string | null {
  let problem = serviceProblems.get(service);
  if (problem === undefined) {
    const errors = validateServiceTable({ services: [service] });
    problem =
      errors.length > 0
        ? errors.map((e) => `${e.field.replace(/^services\[0\]\.?/, "")}: ${e.message}`).join("; ")
        : null;
    serviceProblems.set(service, problem);
  }
  return problem;
}

function sortedByKey<T>(map: ReadonlyMap<string, T>): [string, T][] {
  return [...map].sort(([a], [b]) => byCodeUnits(a, b));
}

/** A configuration read back from the agent's cache (it held only what it had accepted). */
export function fromServiceTable(version: string, table: ServiceTable, peers: readonly Peer[]): ControllerConfig {
  return {
    version,
    services: new Map(table.services.map((s) => [serviceKey(s), s])),
    traffic: new Map((table.traffic ?? []).map((o) => [trafficKey(o), o])),
    peers,
  };
}

/** `current` with the update's removals and upserts applied (never mutated). */
function merged<T>(
  current: ReadonlyMap<string, T> | undefined,
  removed: readonly string[],
  upserts: readonly T[],
  key: (item: T) => string,
): Map<string, T> {
  const next = new Map(current ?? []);
  for (const k of removed) next.delete(k);
  for (const item of upserts) next.set(key(item), item);
  return next;
}

export function assembleConfig(
  current: ControllerConfig | undefined,
  update: Config,
  options: AssemblyOptions = {},
): Assembly {
  if (!update.full && current?.version !== update.baseVersion) {
    return {
      ok: false,
      error: `incremental update ${update.version} applies to ${update.baseVersion}, but this agent holds ${current?.version ?? "nothing"}`,
    };
  }
  const base = update.full ? undefined : current;
  const config: ControllerConfig = {
    version: update.version,
    services: merged(base?.services, update.removed, update.services.map(fromWireService), serviceKey),
    traffic: merged(base?.traffic, update.removedTraffic, update.traffic.map(fromWireTraffic), trafficKey),
    peers: update.peers ? update.peers.nodes : (current?.peers ?? []),
  };
  // Every object checked alone (once), and the one rule between them (a VIP:port, one Service).
  const { table, rejected } = usableTable(config, options);
  return { ok: true, config, table, rejected };
}
