// What the agent's threads load when they start: modules that cost every thread memory for the
// agent's whole life, for work it does rarely or never, are kept out (docs/benchmarks.md).
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const REPO = fileURLToPath(new URL("..", import.meta.url));
/** Node's bundled undici (fetch, WebSocket): what an ES import of node:http loads (api/node-http.ts). */
const NODE_UNDICI = "NativeModule internal/deps/undici/undici";

/** Node's internal modules and the files a fresh process loaded after importing `specifiers`. */
function loadedBy(specifiers: string[]): { internal: string[]; files: string[] } {
  const script = [
    `import { registerHooks } from "node:module";`,
    "const files = [];",
    "registerHooks({ load(url, context, next) { files.push(url); return next(url, context); } });",
    ...specifiers.map((s) => `await import(${JSON.stringify(s)});`),
    "console.log(JSON.stringify({ internal: process.moduleLoadList, files }));",
  ].join("\n");
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
    cwd: REPO,
    encoding: "utf8",
    timeout: 60_000,
  });
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

const packageLoaded = (files: string[], name: string) => files.some((f) => f.includes(`/node_modules/${name}/`));

describe("modules loaded at start", () => {
  it("the check sees each kind: Node's undici behind an ES import of node:http, an ES package, a CommonJS one", () => {
    const { internal, files } = loadedBy(["node:http", "jose", "systeminformation"]);
    expect(internal).toContain(NODE_UNDICI);
    expect(packageLoaded(files, "jose")).toBe(true);
    expect(packageLoaded(files, "systeminformation")).toBe(true);
  });

  it("the agent's control thread and its data-plane workers load neither Node's undici, systeminformation nor jose", () => {
    const { internal, files } = loadedBy([
      "./agent/cli.ts", // the control thread
      "./agent/dataplane/dataplane.ts", // a data-plane worker (worker.ts runs only as a worker)
      "./agent/dataplane/mtls.ts",
    ]);
    expect(internal).toContain("NativeModule http"); // api/node-http.ts did load node:http itself
    expect(internal).not.toContain(NODE_UNDICI);
    // Node facts come from a process of their own (agent/control/node-facts-gather.ts).
    expect(packageLoaded(files, "systeminformation")).toBe(false);
    // Loaded by the first RequestAuthentication (api/jose.ts).
    expect(packageLoaded(files, "jose")).toBe(false);
  });

  it("nor do the controller and the init container load Node's undici", () => {
    const { internal } = loadedBy(["./controller/cli.ts", "./init-container/cli.ts"]);
    expect(internal).not.toContain(NODE_UNDICI);
  });
});
