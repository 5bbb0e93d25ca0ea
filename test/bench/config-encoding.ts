// The Config encoding on its own (controller/config/config-encoding.ts): a table of 2000 Services
// with 10,000 endpoints encoded cold (every entry encoded, as after a rebuild) and warm (entries
// cached, only the message assembled, as for each further agent). Milliseconds per message.
//
//   node test/bench/config-encoding.ts [--rounds 30]

import { parseArgs } from "node:util";
import { tableDiff } from "../../controller/config/config-diff.ts";
import { encodeConfigMessage } from "../../controller/config/config-encoding.ts";
import { buildServiceTable, type ConfigTable } from "../../controller/config/service-table.ts";
import { pod, serviceResource } from "../../controller/config/testing/fixtures.ts";

const SERVICES = 2000;
const PODS_PER_SERVICE = 5;

function table(version: string): ConfigTable {
  const services = [];
  const pods = [];
  for (let s = 0; s < SERVICES; s++) {
    const app = `app-${s}`;
    services.push(serviceResource(app, { vip: `10.96.${s >> 8}.${s & 255}`, targetPort: 8080, selector: { app } }));
    for (let p = 0; p < PODS_PER_SERVICE; p++) {
      const n = s * PODS_PER_SERVICE + p;
      pods.push(pod(`${app}-${p}`, `10.${1 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`, { app }, `node-${n % 50}`));
    }
  }
  return buildServiceTable({ version, services, pods, nodes: [] });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const { values } = parseArgs({ options: { rounds: { type: "string", default: "30" } } });
const rounds = Number(values.rounds);
const cold: number[] = [];
const warm: number[] = [];
let bytes = 0;
for (let i = 0; i < rounds; i++) {
  const t = table(`v${i}`); // fresh entries: nothing cached
  const diff = tableDiff(undefined, t);
  let t0 = performance.now();
  bytes = encodeConfigMessage(diff).length;
  cold.push(performance.now() - t0);
  t0 = performance.now();
  encodeConfigMessage(diff);
  warm.push(performance.now() - t0);
}
console.log(
  `Config of ${SERVICES} services × ${PODS_PER_SERVICE} endpoints (${(bytes / 1e6).toFixed(2)} MB): ` +
    `cold ${median(cold).toFixed(2)} ms, warm ${median(warm).toFixed(2)} ms (medians of ${rounds})`,
);
