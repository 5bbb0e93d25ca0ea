// `make demo`: the whole mesh on this machine. Two nodes in network namespaces, the controller
// (file store) in its own namespace, an agent on each node, a client pod and three replicas spread
// over both nodes, all enrolled by `nodemesh init`. Applies the reviews Service from YAML, waits
// until both agents applied it, sends traffic to its address and shows which replica served what,
// then keeps running until Ctrl-C, which removes everything. While it runs, the controller's
// dashboard is served on this machine's loopback (http://127.0.0.1:8080/, forwarded into the
// controller's namespace) and a light load (4 requests/s from the client) keeps it alive.
//
// Whatever ends it, it cleans up: Ctrl-C, SIGTERM or SIGHUP (a closed terminal), one of its own
// processes dying (the controller, an agent, a workload: said, then everything removed, exit 1),
// or an error of its own. What a `kill -9` of the demo itself leaves, the next demo removes.
//
//   node test/demo.ts [--requests N] [--once] [--dashboard-port PORT]

import type { Server } from "node:net";
import { parseArgs } from "node:util";
import { Mesh } from "./e2e/mesh.ts";
import { forwardIntoNetns, httpFrom, metricSum } from "./e2e/netns-client.ts";
import { reapOrphans } from "./world/reaper.ts";
import { type Pod, type Proc, World } from "./world/world.ts";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "12" },
    once: { type: "boolean", default: false },
    "dashboard-port": { type: "string", default: "8080" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "Usage: node test/demo.ts [--requests N] [--once] [--dashboard-port PORT]\n" +
      "  --once                 exit after the traffic instead of waiting for Ctrl-C\n" +
      "  --dashboard-port PORT  serve the dashboard on 127.0.0.1:PORT (default 8080; a free port if taken)",
  );
  process.exit(0);
}

const dashboardPort = Number(values["dashboard-port"]);
if (!Number.isInteger(dashboardPort) || dashboardPort < 0 || dashboardPort > 65535) {
  console.error(`--dashboard-port: "${values["dashboard-port"]}" is not a port (0 to 65535)`);
  process.exit(2);
}

const VIP = "10.96.0.10";
/** The controller's REST port (and dashboard) on its namespace's loopback. */
const CONTROLLER_REST_PORT = 8080;
/** The background load while the demo waits: one request every 250 ms. */
const BACKGROUND_INTERVAL_MS = 250;
const REVIEWS_YAML = `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata:
  name: reviews
  namespace: default
spec:
  vip: ${VIP}
  ports:
    - name: http
      port: 80
      targetPort: 8080
      protocol: http
  selector:
    app: reviews
`;
const say = (text: string) => console.log(text);

const reaped = await reapOrphans();
if (reaped.length > 0) say(`removed ${reaped.length} namespaces an earlier, killed run left behind`);
const world = await World.create({ nodes: 2 });
/** The controller's port for the agents' spans (OTLP/HTTP): the dashboard's Traces view shows them. */
const OTLP_PORT = 4318;
const controllerPlace = await world.addController();
// Every request traced (the demo's load is light): the Traces view fills within seconds.
const mesh = new Mesh(world, {
  tunnelKey: true,
  agentArgs: ["--otlp-endpoint", `http://${controllerPlace.ip}:${OTLP_PORT}`, "--trace-sampling", "100"],
});

let cleaning: Promise<void> | undefined;
let dashboard: Server | undefined;
/** Removes every namespace and process of this run, once, however many reasons ask for it. */
function cleanUp(): Promise<void> {
  dashboard?.close();
  cleaning ??= mesh.destroy().then(() => say("cleaned up"));
  return cleaning;
}
/** Set once the demo waits for Ctrl-C; before that a signal stops the set-up itself. */
let waiting = false;
let stopWith: (reason: { code: number; why: string }) => void = () => {};
/** Why the demo stops: a signal, or one of its own processes gone. */
const stop = new Promise<{ code: number; why: string }>((resolve) => {
  stopWith = resolve;
});
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    if (waiting) stopWith({ code: 0, why: signal });
    else void cleanUp().finally(() => process.exit(1));
  });
}
/** One of the demo's own processes ending on its own ends the demo. */
function watchProcess(proc: Proc, what: string): void {
  void proc.exited.then((exit) => {
    if (!cleaning) stopWith({ code: 1, why: `${what} exited (${exit.signal ?? `code ${exit.code}`})` });
  });
}
for (const event of ["uncaughtException", "unhandledRejection"] as const) {
  process.on(event, (err) => {
    console.error(`demo failed: ${(err as Error)?.stack ?? err}`);
    void cleanUp().finally(() => process.exit(1));
  });
}

/** Polls the Service's status until both agents applied it (bounded: 20 s). */
async function waitUntilApplied(): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const r = await mesh.cli(["get", "services", "reviews", "-o", "json"]);
    const status = r.code === 0 ? JSON.parse(r.stdout).status : undefined;
    if (status?.agentsTotal === 2 && status.agentsApplied === 2) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error("the agents did not apply the reviews Service within 20 s");
}
/** The dashboard on this machine's loopback: the port asked for, else (taken) any free one. */
async function serveDashboard(port: number): Promise<Server> {
  const controllerNetns = mesh.controller!.place.netnsPath;
  try {
    return await forwardIntoNetns(port, controllerNetns, "127.0.0.1", CONTROLLER_REST_PORT);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
    say(`127.0.0.1:${port} is taken on this machine; the dashboard takes a free port`);
    return forwardIntoNetns(0, controllerNetns, "127.0.0.1", CONTROLLER_REST_PORT);
  }
}

/** Keeps the topology, golden signals and traces alive until the demo stops. */
async function backgroundLoad(client: Pod): Promise<void> {
  while (!cleaning) {
    await httpFrom(client.netnsPath, `http://${VIP}/`).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, BACKGROUND_INTERVAL_MS));
  }
}

try {
  const [n1, n2] = world.nodes;
  say(`nodes: ${n1.name} (pods ${n1.podCidr}), ${n2.name} (pods ${n2.podCidr}), underlay 10.250.0.0/24`);
  const client = await world.addPod(n1, "client");
  const replicas: Pod[] = [
    await world.addPod(n1, "reviews-1"),
    await world.addPod(n2, "reviews-2"),
    await world.addPod(n2, "reviews-3"),
  ];
  await mesh.startController(["--otlp-address", `0.0.0.0:${OTLP_PORT}`]);
  watchProcess(mesh.controller!.proc, "the controller");
  say(
    `controller ready in its namespace (${mesh.controller!.place.ip}): REST on its loopback :8080, gRPC :15012 (TLS from its CA, bootstrap token), the agents' spans on :${OTLP_PORT}`,
  );
  for (const agent of await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)])) {
    watchProcess(agent.proc, `the ${agent.node.name} agent`);
  }
  say("agents connected to the controller (admin :15020 in each node namespace)");

  for (const [i, pod] of replicas.entries()) {
    const workload = await mesh.startWorkload(pod, [
      "--version",
      `v${i + 1}`,
      "--http-port",
      "8080",
      "--grpc-port",
      "0",
    ]);
    watchProcess(workload, `the ${pod.name} workload`);
  }
  for (const pod of [client, ...replicas]) {
    await mesh.enroll(pod, ["--label", `app=${pod.name.replace(/-\d+$/, "")}`]);
    say(`enrolled ${pod.name.padEnd(10)} ${pod.ip.padEnd(12)} on ${pod.node.name}`);
  }

  say(`\n$ nodemesh apply -f reviews.yaml`);
  const applied = await mesh.cli(["apply", "-f", "-"], REVIEWS_YAML);
  if (applied.code !== 0) throw new Error(`apply failed: ${applied.stderr}`);
  process.stdout.write(applied.stdout);
  await waitUntilApplied();
  say("$ nodemesh get services");
  process.stdout.write((await mesh.cli(["get", "services"])).stdout);

  say(`\nclient → reviews (${VIP}:80), one connection per request:`);
  const served = new Map<string, number>();
  for (let i = 1; i <= Number(values.requests); i++) {
    const t0 = performance.now();
    const reply = await httpFrom(client.netnsPath, `http://${VIP}/`);
    const body = JSON.parse(reply.body);
    const node = replicas.find((p) => p.name === body.pod)?.node.name;
    served.set(body.pod, (served.get(body.pod) ?? 0) + 1);
    say(
      `  #${String(i).padStart(2)}  ${reply.status}  ${body.pod} (${body.version}) on ${node}  ${(performance.now() - t0).toFixed(1)} ms`,
    );
  }
  say(`\nserved: ${[...served].map(([pod, n]) => `${pod} ${n}`).join(", ")}`);
  for (const node of world.nodes) {
    const m = await mesh.metrics(node);
    const out = metricSum(m, "nodemesh_requests_total", { reporter: "source" });
    const inb = metricSum(m, "nodemesh_requests_total", { reporter: "destination" });
    say(`${node.name} agent: ${out} outbound, ${inb} inbound requests`);
  }

  if (!values.once) {
    dashboard = await serveDashboard(dashboardPort);
    const { port } = dashboard.address() as { port: number };
    say(`\ndashboard: http://127.0.0.1:${port}/  (the controller's, forwarded into its namespace)`);
    void backgroundLoad(client);
    say(`The mesh keeps running, with a light load (${1000 / BACKGROUND_INTERVAL_MS} requests/s from the client).`);
    say("Try it from the client pod:");
    say(`  nsenter --net=${client.netnsPath} curl -s http://${VIP}/`);
    say(`  nsenter --net=${n1.netnsPath} curl -s localhost:15020/metrics | grep nodemesh_`);
    say(`  nsenter --net=${mesh.controller!.place.netnsPath} node bin/nodemesh.ts status`);
    say("Ctrl-C stops it and removes every namespace.");
    waiting = true;
    const stopped = await stop;
    if (stopped.code !== 0) say(`\n${stopped.why}: stopping the demo`);
    process.exitCode = stopped.code;
  }
} catch (err) {
  console.error(`demo failed: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
} finally {
  await cleanUp();
}
