// What a route regex match costs: V8's backtracking RegExp (the engine before issue 21 item 4) and
// the linear-time RE2 port the agent uses now (api/regex.ts), on typical route patterns and on
// the reproduction of the issue. Pure CPU, no network: runs anywhere.
//
//   node test/bench/regex-cost.ts [--ms 300]

import { parseArgs } from "node:util";
import { fullMatch } from "../../api/regex.ts";

const { values } = parseArgs({ options: { ms: { type: "string", default: "300" } } });
const budgetMs = Number(values.ms);

/** Nanoseconds per call of fn over inputs, run for about budgetMs after a warm-up. */
function nsPerMatch(fn: (v: string) => boolean, inputs: string[], maxCalls = Number.POSITIVE_INFINITY): number {
  for (let i = 0; i < Math.min(2000, maxCalls - 1); i++) fn(inputs[i % inputs.length]!);
  let calls = 0;
  let sink = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(budgetMs) * 1_000_000n;
  while (calls < maxCalls) {
    for (let i = 0; i < 100 && calls < maxCalls; i++, calls++) sink += fn(inputs[calls % inputs.length]!) ? 1 : 0;
    if (process.hrtime.bigint() > deadline) break;
  }
  const ns = Number(process.hrtime.bigint() - start) / calls;
  if (sink < 0) console.log(sink);
  return ns;
}

const CASES: { name: string; pattern: string; inputs: string[]; v8MaxCalls?: number }[] = [
  {
    name: "typical path",
    pattern: "/api/v[0-9]+/users/[a-z0-9-]{1,64}",
    inputs: ["/api/v1/users/alice-42", "/api/v2/users/", "/api/v1/orders/7", "/static/app.js"],
  },
  { name: "prefix and any", pattern: "/reviews/.*", inputs: ["/reviews/1", "/ratings/2", "/reviews/a/b/c?x"] },
  { name: "header value", pattern: "tester-[0-9]+", inputs: ["tester-17", "tester-", "admin-3"] },
  { name: "gRPC service", pattern: "echo\\..*", inputs: ["echo.Echo", "grpc.health.v1.Health"] },
  {
    name: "reproduction, 550-char path",
    pattern: "/api/.*.*.*.*x",
    inputs: [`/api/${"a".repeat(545)}`],
    v8MaxCalls: 1,
  },
];

const rows: string[] = [];
for (const c of CASES) {
  const v8 = new RegExp(`^(?:${c.pattern})$`);
  const v8Ns = nsPerMatch((v) => v8.test(v), c.inputs, c.v8MaxCalls);
  const re2Ns = nsPerMatch(fullMatch(c.pattern), c.inputs);
  rows.push(`| ${c.name} | \`${c.pattern}\` | ${fmt(v8Ns)} | ${fmt(re2Ns)} |`);
}
console.log("| case | pattern | V8 RegExp | RE2 (re2js) |\n|---|---|---|---|");
console.log(rows.join("\n"));

function fmt(ns: number): string {
  return ns >= 1e6 ? `${(ns / 1e6).toFixed(0)} ms` : `${ns.toFixed(0)} ns`;
}
