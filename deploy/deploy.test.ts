// Checks the monitoring files in deploy/ (Prometheus scrape configuration, alert rules and their
// unit tests, Grafana dashboards) with promtool, and holds them to the metric contract of
// docs/metrics.md: every metric they use is documented, with documented labels. Needs promtool
// (Debian: apt-get install prometheus); without it these tests fail, they do not skip.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { readContract, TARGET_LABELS } from "../test/metrics-contract.ts";

const REPO = new URL("..", import.meta.url).pathname;
const PROMETHEUS = join(REPO, "deploy/prometheus");
const GRAFANA = join(REPO, "deploy/grafana");
const DASHBOARDS = ["mesh-overview.json", "service.json", "node.json"];

const tmp = mkdtempSync(join(tmpdir(), "nodemesh-deploy-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// ---- promtool ----------------------------------------------------------------------------------

interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

function promtool(...args: string[]): Run {
  const r = spawnSync("promtool", args, { encoding: "utf8", timeout: 60_000 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === "ENOENT") {
    throw new Error(
      "promtool is not installed (or not on PATH): the deploy/ checks need it. " +
        "Install Prometheus' tools, e.g. `apt-get install prometheus` on Debian; CI installs it.",
    );
  }
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function expectSuccess(r: Run): void {
  expect(r.status, `promtool failed:\n${r.stdout}\n${r.stderr}`).toBe(0);
}

// ---- the metric contract (docs/metrics.md, test/metrics-contract.ts) ------------------------------

const contract = readContract();

/** Not in docs/metrics.md on purpose: Prometheus' own `up`, and the metric of the mTLS work to come. */
const EXTRA_METRICS = new Map<string, Set<string> | "any">([
  ["up", new Set(TARGET_LABELS)],
  ["nodemesh_workload_cert_expiry_timestamp_seconds", "any"],
]);

/** The labels a metric may have, "any" when the contract does not list them, undefined if unknown. */
function labelsOf(metric: string, allowFuture: boolean): Set<string> | "any" | undefined {
  const documented = contract.metrics.get(metric);
  if (documented) return documented;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    const base = metric.slice(0, -suffix.length);
    if (metric.endsWith(suffix) && contract.histograms.has(base)) {
      const labels = new Set(contract.metrics.get(base));
      if (suffix !== "_bucket") labels.delete("le");
      return labels;
    }
  }
  if (contract.prefixes.some((p) => metric.startsWith(p))) return "any";
  if (metric === "up" || allowFuture) return EXTRA_METRICS.get(metric);
  return undefined;
}

// ---- a small PromQL reader: metric names and label names (promtool checks the syntax) ----------

const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"]);
const KEYWORDS_WITH_LIST = new Set([...KEYWORDS, "group_left", "group_right"]);

interface Selector {
  metric: string;
  labels: string[];
}

interface Usage {
  selectors: Selector[];
  /** Labels named in by/without/on/ignoring/group_* lists and created by label_replace. */
  grouping: string[];
  created: string[];
}

function readPromql(expr: string): Usage {
  const created = [...expr.matchAll(/label_replace\([^"]*"([a-zA-Z_][a-zA-Z0-9_]*)"/g)].map((m) => m[1]!);
  let s = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  const grouping: string[] = [];
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_all, _kw, list: string) => {
    grouping.push(
      ...list
        .split(",")
        .map((l) => l.trim())
        .filter(Boolean),
    );
    return " ";
  });
  s = s.replace(/\[[^\]]*\]/g, " ").replace(/\boffset\s+-?\w+/g, " ");
  const selectors: Selector[] = [];
  const re = /([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{[^}]*\})?/g;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    if (m[0] === "") {
      re.lastIndex++;
      continue;
    }
    const [, name, matchers] = m;
    const before = s[m.index - 1];
    if (name === undefined) continue; // a bare {…} selector: not used here
    if (before !== undefined && /[0-9.]/.test(before)) continue; // the exponent of a number (1e3)
    if (!matchers && /^\s*\(/.test(s.slice(m.index + m[0].length))) continue; // a function or aggregation
    if (KEYWORDS_WITH_LIST.has(name.toLowerCase()) || /^(inf|nan)$/i.test(name)) continue;
    const labels = matchers
      ? [...matchers.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)].map((l) => l[1]!)
      : [];
    selectors.push({ metric: name, labels });
  }
  return { selectors, grouping, created };
}

/** Problems of one expression against the contract, as readable strings. */
function contractProblems(where: string, expr: string, allowFuture: boolean, legend?: string): string[] {
  const problems: string[] = [];
  const usage = readPromql(expr);
  const known = new Set([...TARGET_LABELS, "le", ...usage.created]);
  let anyLabels = false;
  for (const { metric, labels } of usage.selectors) {
    const allowed = labelsOf(metric, allowFuture);
    if (allowed === undefined) {
      problems.push(`${where}: metric ${metric} is not in docs/metrics.md`);
      continue;
    }
    if (allowed === "any") {
      anyLabels = true;
      continue;
    }
    for (const l of allowed) known.add(l);
    for (const l of labels) {
      if (!allowed.has(l)) problems.push(`${where}: ${metric} has no label ${l}`);
    }
  }
  if (!anyLabels) {
    const legendLabels = [...(legend ?? "").matchAll(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g)].map((m) => m[1]!);
    for (const l of [...usage.grouping, ...legendLabels]) {
      if (!known.has(l)) problems.push(`${where}: label ${l} belongs to none of the metrics used`);
    }
  }
  return problems;
}

// ---- alert rules -----------------------------------------------------------------------------

interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function alertRules(): AlertRule[] {
  const doc = parse(readFileSync(join(PROMETHEUS, "alerts.yaml"), "utf8")) as {
    groups: { name: string; rules: AlertRule[] }[];
  };
  return doc.groups.flatMap((g) => g.rules);
}

describe("Prometheus alert rules", () => {
  it("pass promtool check rules", () => {
    expectSuccess(promtool("check", "rules", join(PROMETHEUS, "alerts.yaml")));
  });

  it("pass their unit tests (promtool test rules)", () => {
    expectSuccess(promtool("test", "rules", join(PROMETHEUS, "alerts.test.yaml")));
  });

  it("are in the group nodemesh, each with a severity and templated summary and description", () => {
    const doc = parse(readFileSync(join(PROMETHEUS, "alerts.yaml"), "utf8")) as { groups: { name: string }[] };
    expect(doc.groups.map((g) => g.name)).toEqual(["nodemesh"]);
    const rules = alertRules();
    expect(rules.map((r) => r.alert)).toEqual(
      expect.arrayContaining([
        "NodemeshHighErrorRate",
        "NodemeshHighLatency",
        "NodemeshAgentDisconnected",
        "NodemeshAgentDown",
        "NodemeshEndpointsEjected",
        "NodemeshWorkloadCertExpiring",
      ]),
    );
    for (const r of rules) {
      expect(["critical", "warning", "info"], r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toMatch(/\{\{ \$labels\.\w+ \}\}/);
      expect(r.annotations?.description, r.alert).toMatch(/\{\{ \$labels\.\w+ \}\}/);
    }
  });

  it("each have unit tests where they fire and where they do not", () => {
    const tests = parse(readFileSync(join(PROMETHEUS, "alerts.test.yaml"), "utf8")) as {
      tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[];
    };
    const cases = tests.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const { alert } of alertRules()) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${alert}: no test where it fires`,
      ).toBe(true);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${alert}: no test where it stays quiet`,
      ).toBe(true);
    }
  });

  it("use only the metrics and labels of docs/metrics.md (and up, and the future cert-expiry metric)", () => {
    const problems = alertRules().flatMap((r) => contractProblems(`alert ${r.alert}`, r.expr, true));
    expect(problems).toEqual([]);
  });
});

// ---- scrape configuration ------------------------------------------------------------------------

interface ScrapeConfig {
  job_name: string;
  kubernetes_sd_configs?: { role: string; namespaces?: { names: string[] } }[];
  static_configs?: { targets: string[]; labels: Record<string, string> }[];
  relabel_configs?: unknown[];
}

function scrapeConfigs(): ScrapeConfig[] {
  const doc = parse(readFileSync(join(PROMETHEUS, "scrape.yaml"), "utf8")) as { scrape_configs: ScrapeConfig[] };
  return doc.scrape_configs;
}

/** What Kubernetes service discovery would find: targets with the meta labels of each role. */
const AGENT_POD = {
  __meta_kubernetes_namespace: "nodemesh-system",
  __meta_kubernetes_pod_label_app_kubernetes_io_name: "nodemesh-agent",
  __meta_kubernetes_pod_name: "nodemesh-agent-aaaaa",
  __meta_kubernetes_pod_node_name: "node-a",
  __meta_kubernetes_pod_phase: "Running",
  __meta_kubernetes_pod_ip: "10.0.0.1",
  __meta_kubernetes_pod_annotation_prometheus_io_port: "15020",
};
const FAKE_TARGETS: Record<string, { address: string; labels: Record<string, string> }[]> = {
  // A pod without container ports: one target, its IP alone.
  "nodemesh-agent": [
    { address: "10.0.0.1", labels: AGENT_POD },
    // An agent pod of a node still starting.
    {
      address: "10.0.0.2",
      labels: {
        ...AGENT_POD,
        __meta_kubernetes_pod_name: "nodemesh-agent-bbbbb",
        __meta_kubernetes_pod_node_name: "node-b",
        __meta_kubernetes_pod_phase: "Pending",
        __meta_kubernetes_pod_ip: "10.0.0.2",
      },
    },
    // Another application in the namespace with the same annotation.
    {
      address: "10.0.0.9",
      labels: {
        ...AGENT_POD,
        __meta_kubernetes_pod_label_app_kubernetes_io_name: "something-else",
        __meta_kubernetes_pod_ip: "10.0.0.9",
      },
    },
    // An agent pod without the annotation (edited by hand): nothing to scrape.
    {
      address: "10.0.0.3",
      labels: {
        ...Object.fromEntries(
          Object.entries(AGENT_POD).filter(([k]) => k !== "__meta_kubernetes_pod_annotation_prometheus_io_port"),
        ),
        __meta_kubernetes_pod_ip: "10.0.0.3",
      },
    },
  ],
  "nodemesh-controller": [
    {
      address: "10.0.1.5:8080",
      labels: {
        __meta_kubernetes_namespace: "nodemesh-system",
        __meta_kubernetes_service_name: "nodemesh-controller",
        __meta_kubernetes_endpoint_port_name: "http",
        __meta_kubernetes_endpoint_ready: "true",
        __meta_kubernetes_pod_name: "nodemesh-controller-0",
        __meta_kubernetes_pod_node_name: "node-c",
      },
    },
    // The controller's other port (the agents' configuration stream).
    {
      address: "10.0.1.5:15010",
      labels: {
        __meta_kubernetes_namespace: "nodemesh-system",
        __meta_kubernetes_service_name: "nodemesh-controller",
        __meta_kubernetes_endpoint_port_name: "grpc",
        __meta_kubernetes_pod_name: "nodemesh-controller-0",
        __meta_kubernetes_pod_node_name: "node-c",
      },
    },
    // Another Service's endpoint on port 8080.
    {
      address: "10.0.1.7:8080",
      labels: {
        __meta_kubernetes_namespace: "nodemesh-system",
        __meta_kubernetes_service_name: "some-webhook",
        __meta_kubernetes_endpoint_port_name: "http",
        __meta_kubernetes_pod_name: "some-webhook-0",
        __meta_kubernetes_pod_node_name: "node-c",
      },
    },
  ],
};

describe("Prometheus scrape configuration", () => {
  it("discovers the agent pods and the controller's endpoints in nodemesh-system", () => {
    const byJob = new Map(scrapeConfigs().map((c) => [c.job_name, c]));
    expect([...byJob.keys()].sort()).toEqual(["nodemesh-agent", "nodemesh-controller"]);
    expect(byJob.get("nodemesh-agent")?.kubernetes_sd_configs).toEqual([
      { role: "pod", namespaces: { names: ["nodemesh-system"] } },
    ]);
    expect(byJob.get("nodemesh-controller")?.kubernetes_sd_configs).toEqual([
      { role: "endpoints", namespaces: { names: ["nodemesh-system"] } },
    ]);
  });

  it("passes promtool check config (where promtool is built with Kubernetes discovery)", () => {
    const file = join(tmp, "prometheus.yml");
    writeFileSync(file, stringify({ global: { scrape_interval: "15s" }, scrape_configs: scrapeConfigs() }));
    const r = promtool("check", "config", file);
    // Debian's Prometheus is built without Kubernetes discovery and rejects the field; upstream
    // builds check it. The relabelling is checked in any case below, with static targets.
    if (/field kubernetes_sd_configs not found/.test(r.stdout + r.stderr)) {
      console.warn(
        "this promtool has no Kubernetes discovery: scrape.yaml's relabelling checked with static targets only",
      );
      return;
    }
    expectSuccess(r);
  });

  it("keeps the right targets and labels them with node and pod (relabelling run by promtool)", () => {
    // Kubernetes discovery replaced by static targets carrying the meta labels it would set; the
    // relabel_configs are scrape.yaml's, run by Prometheus' own code (check service-discovery).
    const configs = scrapeConfigs().map(({ kubernetes_sd_configs: _, ...rest }) => ({
      ...rest,
      static_configs: FAKE_TARGETS[rest.job_name]!.map((t) => ({ targets: [t.address], labels: t.labels })),
    }));
    const file = join(tmp, "static.yml");
    writeFileSync(file, stringify({ scrape_configs: configs }));
    expectSuccess(promtool("check", "config", file));

    const kept = (job: string) => {
      const r = promtool("check", "service-discovery", "--timeout=1s", file, job);
      expectSuccess(r);
      const found = JSON.parse(r.stdout) as { labels: Record<string, string> }[];
      expect(found).toHaveLength(FAKE_TARGETS[job]!.length);
      return found
        .map((t) => t.labels)
        .filter((l) => Object.keys(l).length > 0)
        .map((l) => Object.fromEntries(Object.entries(l).filter(([k]) => !k.startsWith("__"))));
    };
    expect(kept("nodemesh-agent")).toEqual([
      { job: "nodemesh-agent", instance: "10.0.0.1:15020", node: "node-a", pod: "nodemesh-agent-aaaaa" },
    ]);
    expect(kept("nodemesh-controller")).toEqual([
      { job: "nodemesh-controller", instance: "10.0.1.5:8080", node: "node-c", pod: "nodemesh-controller-0" },
    ]);
  });
});

// ---- Grafana dashboards ------------------------------------------------------------------------

interface Target {
  expr?: string;
  refId: string;
  legendFormat?: string;
  datasource?: { type: string; uid: string };
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
  panels?: Panel[];
  fieldConfig?: { defaults?: { unit?: string } };
}

interface Variable {
  name: string;
  type: string;
  query: string | { query: string };
  definition?: string;
}

interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Variable[] };
}

function dashboard(file: string): Dashboard {
  return JSON.parse(readFileSync(join(GRAFANA, file), "utf8")) as Dashboard;
}

function allPanels(d: Dashboard): Panel[] {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

function variableQuery(v: Variable): string {
  return typeof v.query === "string" ? v.query : v.query.query;
}

/** Values for the template variables, to turn a panel's query into plain PromQL. */
const SAMPLE_VALUES: Record<string, string> = {
  __rate_interval: "1m",
  __interval: "1m",
  __range: "1h",
  datasource: "prometheus",
  namespace: "default",
  service: "reviews.default",
  node: "node-a",
  reporter: "source",
};

const VARIABLE_REF = /\$\{([a-zA-Z_]\w*)(?::[^}]*)?\}|\$([a-zA-Z_]\w*)|\[\[([a-zA-Z_]\w*)\]\]/g;

function substitute(expr: string): string {
  return expr.replace(VARIABLE_REF, (ref, a?: string, b?: string, c?: string) => {
    const value = SAMPLE_VALUES[(a ?? b ?? c)!];
    if (value === undefined) throw new Error(`no sample value for the template variable ${ref} in ${expr}`);
    return value;
  });
}

/** Every query of a dashboard: panel targets, and the selectors of label_values() variables. */
function queries(file: string, d: Dashboard): { where: string; expr: string; legend?: string }[] {
  const out: { where: string; expr: string; legend?: string }[] = [];
  for (const p of allPanels(d)) {
    for (const t of p.targets ?? []) {
      if (t.expr !== undefined)
        out.push({ where: `${file} panel ${p.id} ${t.refId}`, expr: t.expr, legend: t.legendFormat });
    }
  }
  for (const v of d.templating.list.filter((v) => v.type === "query")) {
    const m = variableQuery(v).match(/^label_values\((.+),\s*([a-zA-Z_]\w*)\)$/);
    if (!m) throw new Error(`${file}: variable ${v.name} is not a label_values() query`);
    out.push({ where: `${file} variable ${v.name}`, expr: m[1]!, legend: `{{${m[2]}}}` });
  }
  return out;
}

describe.each(DASHBOARDS)("Grafana dashboard %s", (file) => {
  const d = dashboard(file);

  it("is a schemaVersion 39 dashboard with a prometheus datasource variable", () => {
    expect(d.schemaVersion).toBe(39);
    expect(d.uid).toMatch(/^nodemesh-/);
    const ds = d.templating.list.find((v) => v.name === "datasource");
    expect(ds).toMatchObject({ type: "datasource", query: "prometheus" });
    for (const p of allPanels(d).filter((p) => p.type !== "row")) {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a template
      expect(p.datasource, `panel ${p.id}`).toEqual({ type: "prometheus", uid: "${datasource}" });
      for (const t of p.targets ?? []) expect(t.datasource, `panel ${p.id}`).toEqual(p.datasource);
    }
  });

  it("has unique panel ids, a unit on every panel, and no overlapping panels", () => {
    const panels = allPanels(d);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size, `duplicate ids in ${ids}`).toBe(ids.length);
    for (const p of panels.filter((p) => p.type !== "row")) {
      expect(p.fieldConfig?.defaults?.unit, `panel ${p.id} ${p.title}`).toBeTruthy();
      expect(p.targets?.length, `panel ${p.id} ${p.title}`).toBeGreaterThan(0);
    }
    const cells = new Map<string, number>();
    for (const p of panels) {
      const { x, y, w, h } = p.gridPos;
      expect(x + w, `panel ${p.id} is wider than the grid`).toBeLessThanOrEqual(24);
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          const other = cells.get(`${i},${j}`);
          expect(other, `panels ${other} and ${p.id} overlap`).toBeUndefined();
          cells.set(`${i},${j}`, p.id);
        }
      }
    }
  });

  it("uses only template variables it defines", () => {
    const defined = new Set(d.templating.list.map((v) => v.name));
    for (const { where, expr } of queries(file, d)) {
      for (const m of expr.matchAll(VARIABLE_REF)) {
        const name = (m[1] ?? m[2] ?? m[3])!;
        expect(name.startsWith("__") || defined.has(name), `${where}: ${m[0]}`).toBe(true);
      }
    }
  });

  it("uses only the metrics and labels of docs/metrics.md (and up)", () => {
    const problems = queries(file, d).flatMap(({ where, expr, legend }) =>
      contractProblems(where, substitute(expr), false, legend),
    );
    expect(problems).toEqual([]);
  });
});

describe("Grafana dashboards", () => {
  it("have queries that are valid PromQL (promtool check rules on them as recording rules)", () => {
    const rules = DASHBOARDS.flatMap((file) =>
      queries(file, dashboard(file)).map(({ where, expr }) => ({
        record: `dashboard:${where.replace(/[^a-zA-Z0-9]+/g, "_")}`,
        expr: substitute(expr),
      })),
    );
    expect(rules.length).toBeGreaterThan(50);
    const file = join(tmp, "dashboard-queries.yaml");
    writeFileSync(file, stringify({ groups: [{ name: "dashboards", rules }] }));
    expectSuccess(promtool("check", "rules", file));
  });

  it("have the variables the pages need: namespace and service, node", () => {
    const vars = (file: string) => new Map(dashboard(file).templating.list.map((v) => [v.name, variableQuery(v)]));
    const service = vars("service.json");
    expect(service.get("namespace")).toMatch(/^label_values\(nodemesh_requests_total\b/);
    expect(service.get("service")).toMatch(/^label_values\(nodemesh_requests_total\b.*destination_service\)$/);
    expect(vars("node.json").get("node")).toMatch(/, node\)$/);
  });

  it("are all checked here", () => {
    expect(
      readdirSync(GRAFANA)
        .filter((f) => f.endsWith(".json"))
        .sort(),
    ).toEqual([...DASHBOARDS].sort());
  });
});

describe("the PromQL reader of these tests", () => {
  it("finds metric names and labels, and skips functions, strings, keywords and numbers", () => {
    const u = readPromql(
      'sum by (destination_service) (rate(nodemesh_requests_total{reporter="source", response_code=~"5.."}[5m])) ' +
        '/ on (destination_service) group_left sum by (destination_service) (up offset 5m) > 1e3 and time() - label_replace(x, "ns", "$1", "a", "(.*)")',
    );
    expect(u.selectors).toEqual([
      { metric: "nodemesh_requests_total", labels: ["reporter", "response_code"] },
      { metric: "up", labels: [] },
      { metric: "x", labels: [] },
    ]);
    expect(u.grouping).toEqual(["destination_service", "destination_service", "destination_service"]);
    expect(u.created).toEqual(["ns"]);
  });

  it("reads the labels of docs/metrics.md per metric", () => {
    expect(contract.metrics.get("nodemesh_requests_total")).toContain("grpc_status");
    expect(contract.metrics.get("nodemesh_request_duration_seconds")).not.toContain("grpc_status");
    expect(contract.metrics.get("nodemesh_request_duration_seconds")).toContain("le");
    expect(contract.metrics.get("nodemesh_retries_total")).not.toContain("reporter");
    expect(contract.metrics.get("nodemesh_injected_faults_total")).toContain("type");
    expect(contract.metrics.get("nodemesh_tcp_connect_failures_total")).toContain("reason");
    expect(contract.prefixes).toContain("nodemesh_agent_process_");
    expect(contractProblems("t", 'nodemesh_retries_total{reporter="source"}', false)).toHaveLength(1);
    expect(contractProblems("t", "nodemesh_nonexistent_total", false)).toHaveLength(1);
    expect(contractProblems("t", "nodemesh_workload_cert_expiry_timestamp_seconds", false)).toHaveLength(1);
    expect(contractProblems("t", "nodemesh_workload_cert_expiry_timestamp_seconds", true)).toEqual([]);
  });
});
