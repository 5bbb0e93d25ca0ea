#!/usr/bin/env node
// The one command line of nodemesh: each subcommand starts one component.

import { enableCompileCache } from "node:module";
import { homedir } from "node:os";
import { join } from "node:path";
import packageJson from "../package.json" with { type: "json" };

const HELP = `Usage: nodemesh <command> [options]

Components:
  controller  run the controller (service registry, REST API, dashboard, agents' configuration stream)
  agent       run the node agent (one per node)
  init        install a pod's traffic redirection and enroll it with the node agent

Using the controller's API:
  apply       create or update objects from a YAML or JSON file (-f FILE)
  get         list or show objects (nodemesh get services)
  delete      delete an object (nodemesh delete service NAME)
  nodes       the agents' node facts and the node-to-node RTT matrix
  status      agents: connected, applied configuration version, last refusal
  top         live golden signals per service (success rate, RPS, p50, p99)
  edges       the service graph's edges: who calls whom, how much, how well
  ca          the workload CA's roots; 'ca rotate' replaces the root with an overlap
  check       check a pod, a namespace or the whole mesh: each finding a verdict and a fix
  explain     where a request from a pod would go, and why (explain --from POD GET URL)
  (they find the controller by --server, $NODEMESH_SERVER or ~/.config/nodemesh/config;
  check and explain also ask the agent of the pod's node: --agent, default http://127.0.0.1:15020)

  version     print nodemesh's version (also --version, -v)
  help        show this help

Run 'nodemesh <command> --help' for the options of a command.
`;

const [command, ...args] = process.argv.slice(2);

// V8's compiled code of nodemesh's modules, kept between runs (Node's module compile cache): a
// command answers sooner (a third less CPU to start from source, where the type stripping is kept
// too; 7 % built). Not for the agent unless $NODE_COMPILE_CACHE asks: Node keeps every module's
// entry in memory for the process's life, 4–5 MB of an idle agent's RSS (docs/benchmarks.md), for
// 50 ms of its start. Under the user's own home, not the shared /tmp Node defaults to: nodemesh
// often runs as root and executes what it reads there. NODE_DISABLE_COMPILE_CACHE=1 turns it off;
// a directory that cannot be written leaves it off, quietly.
const compileCacheDir = process.env.NODE_COMPILE_CACHE ?? join(homedir(), ".cache", "nodemesh", "compile-cache");
if (command !== "agent" || process.env.NODE_COMPILE_CACHE) {
  // Worker threads (the agent's data plane) take it from the environment: the directory given, not
  // the one enableCompileCache() answers, which has Node's version appended (a worker appends it again).
  if (enableCompileCache(compileCacheDir).directory) process.env.NODE_COMPILE_CACHE = compileCacheDir;
}

async function main(): Promise<number> {
  switch (command) {
    case "agent":
      return (await import("../agent/cli.ts")).runAgent(args);
    case "init":
      return (await import("../init-container/cli.ts")).runInit(args);
    case "controller":
      return (await import("../controller/cli.ts")).runController(args);
    case "apply":
    case "get":
    case "delete":
    case "nodes":
    case "status":
    case "top":
    case "edges":
    case "ca":
    case "check":
    case "explain":
      return (await import("../controller/client/cli.ts")).runClient(command, args);
    case "version":
    case "-v":
    case "--version":
      process.stdout.write(`nodemesh ${packageJson.version}\n`);
      return 0;
    case undefined:
    case "help":
    case "-h":
    case "--help":
      process.stdout.write(HELP);
      return 0;
    default:
      process.stderr.write(`nodemesh: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`nodemesh ${command}: ${err.message}\n`);
    process.exitCode = 1;
  },
);
