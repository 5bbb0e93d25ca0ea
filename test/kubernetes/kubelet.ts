// Plays kubelet in a test world: runs a container of a rendered manifest (or of a pod the webhook
// mutated) with its command, args and env as Kubernetes would, in a namespace of the world.
//
// What differs from a real node, and only this:
// - the image: its `node` is the test's Node and its built CLI (/opt/nodemesh/dist/bin/nodemesh.js,
//   `make build`'s output) is the source CLI bin/nodemesh.ts;
// - volumes: a container of an injected pod gets its volumes mounted for real, in a private mount
//   namespace (unshare) over a private /run (the only place where those mounts live); the
//   agent's and the controller's long-running containers instead get the paths in their args
//   rewritten to the host directories that stand in for their volumes.

import type { Place, Proc, RunResult, World } from "../world/world.ts";

export const IMAGE_CLI = "/opt/nodemesh/dist/bin/nodemesh.js";
const SOURCE_CLI = new URL("../../bin/nodemesh.ts", import.meta.url).pathname;

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  volumeMounts?: { name: string; mountPath: string }[];
}

/** What the downward API knows of the pod. */
export interface PodFacts {
  name: string;
  namespace: string;
  ip?: string;
  nodeName?: string;
}

const FIELDS: Record<string, (p: PodFacts) => string | undefined> = {
  "metadata.name": (p) => p.name,
  "metadata.namespace": (p) => p.namespace,
  "status.podIP": (p) => p.ip,
  "spec.nodeName": (p) => p.nodeName,
};

export function containerEnv(container: Container, pod: PodFacts): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of container.env ?? []) {
    if (v.value !== undefined) env[v.name] = v.value;
    else if (v.valueFrom?.fieldRef) {
      const value = FIELDS[v.valueFrom.fieldRef.fieldPath]?.(pod);
      if (value === undefined) throw new Error(`kubelet stand-in: no value for ${v.valueFrom.fieldRef.fieldPath}`);
      env[v.name] = value;
    } else throw new Error(`kubelet stand-in: env ${v.name} has a source it does not know`);
  }
  return env;
}

/** `$(VAR)` as Kubernetes expands it in command and args. */
function expand(arg: string, env: Record<string, string>): string {
  return arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env[name] ?? whole);
}

/** The image's entry point → this machine's: `node` and the built CLI. */
function localCommand(command: string[]): string[] {
  const [first, ...rest] = command;
  if (first !== "node") throw new Error(`kubelet stand-in runs node images only, not ${first}`);
  return [process.execPath, ...rest.map((a) => (a === IMAGE_CLI ? SOURCE_CLI : a))];
}

export interface Launch {
  file: string;
  args: string[];
  env: Record<string, string>;
}

/** Rewrites volume mount paths in `--flag=PATH` args: mountPath prefix → the host directory standing in for it. */
export function mountPaths(paths: ReadonlyMap<string, string>): (arg: string) => string {
  return (arg) => {
    for (const [mountPath, dir] of paths) arg = arg.replace(new RegExp(`(^|=)${mountPath}(?=/|$)`), `$1${dir}`);
    return arg;
  };
}

/** The process of a container; `rewrite` changes its args after `$(VAR)` expansion (paths, names). */
export function containerLaunch(
  container: Container,
  pod: PodFacts,
  rewrite: (arg: string) => string = (a) => a,
): Launch {
  const env = containerEnv(container, pod);
  const [file, ...args] = localCommand(
    [...(container.command ?? []), ...(container.args ?? [])].map((a) => expand(a, env)),
  );
  return { file: file!, args: args.map(rewrite), env };
}

/**
 * Runs a container to completion the way kubelet runs an init container: in the pod's network
 * namespace, its volume mounts (`mounts`: mountPath → host directory, all under /run or /var/run)
 * bind-mounted in a private mount namespace.
 */
export function runToCompletion(
  world: World,
  place: Place,
  container: Container,
  pod: PodFacts,
  mounts: ReadonlyMap<string, string>,
): Promise<RunResult> {
  const launch = containerLaunch(container, pod);
  const steps = ["mount -t tmpfs nodemesh-kubelet /run"];
  for (const [mountPath, hostDir] of mounts) {
    const target = mountPath.replace(/^\/var\/run\//, "/run/");
    if (!target.startsWith("/run/")) throw new Error(`kubelet stand-in mounts only under /run, not ${mountPath}`);
    steps.push(`mkdir -p '${target}'`, `mount --bind '${hostDir}' '${target}'`);
  }
  const script = `set -e; ${steps.join("; ")}; exec "$@"`;
  return world.exec(
    place,
    "unshare",
    ["--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", launch.file, ...launch.args],
    { env: launch.env, timeoutMs: 60_000 },
  );
}

/** Starts a long-running container (agent, controller) with its args rewritten by `rewrite`. */
export function startContainer(
  world: World,
  place: Place,
  container: Container,
  pod: PodFacts,
  rewrite: (arg: string) => string,
  extraArgs: string[] = [],
): Proc {
  const launch = containerLaunch(container, pod, rewrite);
  return world.spawn(place, launch.file, [...launch.args, ...extraArgs], {
    env: launch.env,
    name: `${container.name} ${pod.name}`,
  });
}
