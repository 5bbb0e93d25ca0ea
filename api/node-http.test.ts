import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const NODE_UNDICI = "NativeModule internal/deps/undici/undici";

/** The internal modules Node loaded in a fresh process after importing `specifiers`. */
function internalModulesAfter(specifiers: string[]): string[] {
  const imports = specifiers.map((s) => `await import(${JSON.stringify(s)});`).join(" ");
  const out = execFileSync(
    process.execPath,
    ["--input-type=module", "-e", `${imports} console.log(JSON.stringify(process.moduleLoadList));`],
    { cwd: REPO, encoding: "utf8", timeout: 60_000 },
  );
  return JSON.parse(out.trim().split("\n").at(-1)!) as string[];
}

describe("node:http without Node's bundled undici", () => {
  it("an ES import of node:http loads Node's undici (the reason for api/node-http.ts)", () => {
    expect(internalModulesAfter(["node:http"])).toContain(NODE_UNDICI);
  });

  it("the helper, the agent's threads, the controller and the init container do not", () => {
    const modules = internalModulesAfter([
      "./api/node-http.ts",
      "./agent/cli.ts", // the control thread's modules
      "./agent/dataplane/dataplane.ts", // a data-plane worker's
      "./agent/dataplane/otlp-exporter.ts",
      "./controller/cli.ts",
      "./init-container/cli.ts",
    ]);
    expect(modules).toContain("NativeModule http"); // the helper did load the module itself
    expect(modules).not.toContain(NODE_UNDICI);
  });
});
