// Fuzzing config decoding on the agent: the controller's Config messages, from the gRPC bytes
// (the proto loader's deserializer) through fromWireService/fromWireTraffic and assembleConfig to
// validateServiceTable. Whatever arrives, the agent gets a table or a reason to NACK, never a throw.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  agentServiceDefinition,
  type Config,
  type ControllerMessage,
  fromWireService,
  fromWireTraffic,
  serviceKey,
  toWireService,
  toWireTraffic,
  type WireService,
  type WireTrafficObject,
} from "../../api/agent-service.ts";
import { type Service, validateServiceTable } from "../../api/services.ts";
import { parseTrafficObject, type TrafficObject, trafficKey } from "../../api/traffic.ts";
import { fuzzParams, mutated, nestedJson } from "../../test/fuzz/fuzz.ts";
import { TRAFFIC_SEEDS } from "../../test/fuzz/seeds.ts";
import { assembleConfig, type ControllerConfig } from "./config-assembly.ts";

const connect = agentServiceDefinition.Connect!;
const encode = (m: ControllerMessage) => connect.responseSerialize(m) as Buffer;
const decode = (b: Buffer) => connect.responseDeserialize(b) as ControllerMessage;

const label = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?$/);
const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join("."));
const portNumber = fc.integer({ min: 1, max: 65535 });
const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });

/** A valid service (the vip is set by `services` so that VIP:port stays unique). */
const validService = fc.record({
  name: label,
  namespace: label,
  vip: fc.constant(""),
  ports: fc.uniqueArray(
    fc.record({
      name: opt(label),
      port: portNumber,
      targetPort: opt(portNumber),
      protocol: opt(fc.constantFrom("tcp" as const, "http" as const, "http2" as const, "grpc" as const)),
    }),
    { selector: (p) => p.port, minLength: 1, maxLength: 3 },
  ),
  endpoints: fc.array(
    fc.record({
      ip: ipv4,
      port: opt(portNumber),
      node: opt(label),
      pod: opt(label),
      meshed: fc.boolean(),
      workload: opt(label),
      serviceAccount: opt(label),
    }),
    { maxLength: 3 },
  ),
});
const validServices: fc.Arbitrary<Service[]> = fc
  .uniqueArray(validService, { selector: serviceKey, maxLength: 5 })
  .map((list) => list.map((s, i) => strip({ ...s, vip: `10.96.${i >> 8}.${i & 255}` })));

/** Valid traffic objects, with their defaults filled in (as the controller sends them). */
const validTraffic: fc.Arbitrary<TrafficObject[]> = fc
  .uniqueArray(fc.tuple(fc.constantFrom(...TRAFFIC_SEEDS), label), {
    selector: ([seed, name]) => `${seed.kind}/${name}`,
    maxLength: 4,
  })
  .map((list) =>
    list.map(([seed, name]) => {
      const r = parseTrafficObject({ ...seed, name });
      if (!r.ok) throw new Error(`seed ${seed.kind} is not valid`);
      return r.value;
    }),
  );

/** Wire services as a hostile or buggy controller could send them: any field any value its type allows. */
const wireService: fc.Arbitrary<WireService> = fc.record({
  name: fc.oneof(label, fc.string({ maxLength: 10 })),
  namespace: fc.oneof(label, fc.string({ maxLength: 10 })),
  vip: fc.oneof(ipv4, fc.string({ maxLength: 16 })),
  ports: fc.array(
    fc.record({
      name: fc.string({ maxLength: 6 }),
      port: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      targetPort: opt(fc.integer({ min: 0, max: 2 ** 32 - 1 })),
      protocol: fc.oneof(fc.constantFrom("", "tcp", "http", "http2", "grpc"), fc.string({ maxLength: 6 })),
    }),
    { maxLength: 3 },
  ),
  endpoints: fc.array(
    fc.record({
      ip: fc.oneof(ipv4, fc.string({ maxLength: 16 })),
      port: opt(fc.integer({ min: 0, max: 2 ** 32 - 1 })),
      node: fc.string({ maxLength: 6 }),
      pod: fc.string({ maxLength: 6 }),
      meshed: fc.boolean(),
      workload: fc.string({ maxLength: 6 }),
      serviceAccount: fc.string({ maxLength: 6 }),
    }),
    { maxLength: 3 },
  ),
});

/** Traffic objects on the wire: mutated valid ones, any kind, garbage or deep JSON. */
const wireTraffic: fc.Arbitrary<WireTrafficObject> = fc.oneof(
  fc
    .constantFrom(...TRAFFIC_SEEDS)
    .chain((seed) => mutated(seed))
    .map((o) => {
      const r = (typeof o === "object" && o !== null ? o : {}) as Record<string, unknown>;
      return {
        kind: text(r.kind),
        namespace: text(r.namespace),
        name: text(r.name),
        specJson: JSON.stringify(r.spec) ?? "",
      };
    }),
  fc.record({
    kind: fc.oneof(fc.constantFrom(...TRAFFIC_SEEDS.map((s) => s.kind)), fc.string({ maxLength: 8 })),
    namespace: fc.oneof(label, fc.string({ maxLength: 6 })),
    name: fc.oneof(label, fc.string({ maxLength: 6 })),
    specJson: fc.oneof(
      fc.string({ maxLength: 30 }),
      fc.jsonValue().map((v) => JSON.stringify(v)),
      fc.integer({ min: 1, max: 5000 }).map((d) => `{"rules":${nestedJson(d)}}`),
      fc.integer({ min: 1, max: 5000 }).map((d) => nestedJson(d, true)),
    ),
  }),
);

const wireConfig: fc.Arbitrary<Config> = fc.record({
  version: fc.string({ maxLength: 6 }),
  full: fc.boolean(),
  baseVersion: fc.oneof(fc.constant("v1"), fc.string({ maxLength: 4 })),
  services: fc.array(wireService, { maxLength: 4 }),
  removed: fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
  peers: fc.option(fc.record({ nodes: fc.array(fc.record({ name: fc.string(), underlayIp: fc.string() })) }), {
    nil: null,
  }),
  traffic: fc.array(wireTraffic, { maxLength: 3 }),
  removedTraffic: fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
});

/** What an agent may hold before the update. */
const holding: fc.Arbitrary<ControllerConfig | undefined> = fc.option(
  fc.tuple(validServices, validTraffic).map(([services, traffic]) => {
    const r = assembleConfig(undefined, fullConfig("v1", services, traffic));
    if (!r.ok) throw new Error(r.error);
    return r.config;
  }),
  { nil: undefined },
);

function fullConfig(version: string, services: Service[], traffic: TrafficObject[]): Config {
  return {
    version,
    full: true,
    baseVersion: "",
    services: services.map(toWireService),
    removed: [],
    peers: null,
    traffic: traffic.map(toWireTraffic),
    removedTraffic: [],
  };
}

/** A string field of a mutated object (a mutation may have put anything there). */
function text(value: unknown): string {
  return typeof value === "string" ? value : (JSON.stringify(value) ?? "");
}

/** Drops the undefined fields (the wire has no way to say "undefined"). */
function strip<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function checkAssembly(current: ControllerConfig | undefined, update: Config): void {
  const r = assembleConfig(current, update);
  if (!r.ok) {
    expect(typeof r.error).toBe("string");
    return;
  }
  expect(validateServiceTable(r.table)).toEqual([]);
  expect(r.config.version).toBe(update.version);
  for (const [k, s] of r.config.services) expect(k).toBe(serviceKey(s));
  for (const [k, o] of r.config.traffic) expect(k).toBe(trafficKey(o));
}

describe("config decoding on the agent (fuzz)", () => {
  it("assembleConfig: any Config gives a valid table or a reason, never a throw", () => {
    fc.assert(fc.property(holding, wireConfig, checkAssembly), fuzzParams(300, 0.2));
  });

  it("from the gRPC bytes: any Config encoded, then cut or flipped, decodes to an error or a clean answer", () => {
    fc.assert(
      fc.property(
        holding,
        wireConfig,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.option(fc.nat(), { nil: undefined }),
        (current, config, flips, cut) => {
          const bytes = Buffer.from(encode({ kind: "config", config }));
          for (const [at, value] of flips) if (bytes.length > 0) bytes[at % bytes.length] = value;
          const damaged = cut === undefined ? bytes : bytes.subarray(0, cut % (bytes.length + 1));
          let message: ControllerMessage;
          try {
            message = decode(damaged);
          } catch {
            return; // grpc-js ends the call on a message it cannot decode: the agent reconnects
          }
          if (message.kind === "config") checkAssembly(current, message.config);
        },
      ),
      fuzzParams(300, 0.2),
    );
  });

  it("random bytes as a ControllerMessage: a decode error or a clean answer", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (raw) => {
        let message: ControllerMessage;
        try {
          message = decode(Buffer.from(raw));
        } catch {
          return;
        }
        if (message.kind === "config") checkAssembly(undefined, message.config);
      }),
      fuzzParams(1000),
    );
  });

  it("round trip: valid services and traffic, through the gRPC encoding, come back identical", () => {
    fc.assert(
      fc.property(validServices, validTraffic, (services, traffic) => {
        const message = decode(encode({ kind: "config", config: fullConfig("v7", services, traffic) }));
        expect(message.kind).toBe("config");
        const config = (message as { config: Config }).config;
        expect(config.services.map(fromWireService)).toEqual(services);
        expect(config.traffic.map(fromWireTraffic)).toEqual(strip(traffic));
        const r = assembleConfig(undefined, config);
        if (!r.ok) throw new Error(r.error);
        expect([...r.config.services.values()]).toEqual(services);
      }),
      fuzzParams(300, 0.2),
    );
  });

  it("an incremental update gives the table a full one would", () => {
    fc.assert(
      fc.property(validServices, validTraffic, validServices, validTraffic, (s1, t1, s2, t2) => {
        const first = assembleConfig(undefined, fullConfig("v1", s1, t1));
        if (!first.ok) throw new Error(first.error);
        const keys2 = new Set(s2.map(serviceKey));
        const traffic2 = new Set(t2.map(trafficKey));
        const incremental = assembleConfig(first.config, {
          ...fullConfig("v2", s2, t2),
          full: false,
          baseVersion: "v1",
          removed: s1.map(serviceKey).filter((k) => !keys2.has(k)),
          removedTraffic: t1.map(trafficKey).filter((k) => !traffic2.has(k)),
        });
        const full = assembleConfig(undefined, fullConfig("v2", s2, t2));
        expect(incremental.ok).toBe(full.ok);
        if (!incremental.ok || !full.ok) return;
        const byKey = (list: Service[]) => [...list].sort((a, b) => serviceKey(a).localeCompare(serviceKey(b)));
        expect(byKey(incremental.table.services)).toEqual(byKey(full.table.services));
        expect(incremental.table.traffic).toEqual(full.table.traffic);
      }),
      fuzzParams(200, 0.1),
    );
  });
});
