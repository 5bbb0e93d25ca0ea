// The dashboard's files: GET / (the page) and /ui/** (its scripts and styles, and the browser
// builds of cytoscape, its dagre layout and uPlot, read from node_modules). Everything served is
// looked up by exact path in a table built once, so no request path ever reaches the file system:
// `..`, encoded or not, simply matches nothing. The page's API calls go to the REST server, which
// authorizes them; the files themselves are public.
//
// Wiring (controller/rest/server.ts takes the handler as its `ui` option):
//   startRestServer({ ..., ui: uiHandler() })

import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createRequire } from "node:module";
import { dirname, extname, join, relative, sep } from "node:path";

const STATIC_DIR = new URL("./static/", import.meta.url).pathname;

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".map": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

/**
 * The page may load scripts and styles from the controller only, and talk to the controller only.
 * Inline styles are allowed: cytoscape and uPlot size their elements with style attributes.
 */
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join("; ");

/** Browser builds served under /ui/vendor/: URL file name → module specifier to resolve. */
const VENDOR: Record<string, { pkg: string; file: string }> = {
  "cytoscape.min.js": { pkg: "cytoscape", file: "dist/cytoscape.min.js" },
  "cytoscape-dagre.min.js": { pkg: "cytoscape-dagre", file: "dist/cytoscape-dagre.min.js" },
  "uPlot.iife.min.js": { pkg: "uplot", file: "dist/uPlot.iife.min.js" },
  "uPlot.min.css": { pkg: "uplot", file: "dist/uPlot.min.css" },
};

interface Asset {
  path: string;
  type: string;
  cacheControl: string;
  /** Read on first request, then kept. */
  body?: Buffer;
  etag?: string;
}

/** A package's root directory, found through its entry point (its package.json may not be exported). */
function packageDir(require: NodeJS.Require, pkg: string): string {
  let dir = dirname(require.resolve(pkg));
  while (!dir.endsWith(`${sep}node_modules${sep}${pkg}`) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

function buildTable(staticDir: string): Map<string, Asset> {
  const table = new Map<string, Asset>();
  // Our own files change with the controller: the browser revalidates them (ETag) every load.
  for (const file of listFiles(staticDir)) {
    const url = `/ui/${relative(staticDir, file).split(sep).join("/")}`;
    table.set(url, {
      path: file,
      type: CONTENT_TYPES[extname(file)] ?? "application/octet-stream",
      cacheControl: "no-cache",
    });
  }
  const index = table.get("/ui/index.html");
  if (index) table.set("/", index);
  const require = createRequire(import.meta.url);
  for (const [name, { pkg, file }] of Object.entries(VENDOR)) {
    table.set(`/ui/vendor/${name}`, {
      path: join(packageDir(require, pkg), file),
      type: CONTENT_TYPES[extname(name)]!,
      // Pinned versions: they change only when the controller is upgraded.
      cacheControl: "public, max-age=86400",
    });
  }
  return table;
}

function load(asset: Asset): { body: Buffer; etag: string } {
  if (!asset.body || !asset.etag) {
    asset.body = readFileSync(asset.path);
    asset.etag = `"${createHash("sha256").update(asset.body).digest("base64url").slice(0, 27)}"`;
  }
  return { body: asset.body, etag: asset.etag };
}

function send(res: ServerResponse, status: number, headers: Record<string, string>, body?: Buffer | string): void {
  res.writeHead(status, { "x-content-type-options": "nosniff", "referrer-policy": "no-referrer", ...headers });
  res.end(body);
}

/**
 * The dashboard's request handler: answers GET and HEAD of `/` and `/ui/**` and returns true, or
 * returns false without touching the response for any other request.
 */
export function uiHandler(opts: { staticDir?: string } = {}): (req: IncomingMessage, res: ServerResponse) => boolean {
  const table = buildTable(opts.staticDir ?? STATIC_DIR);
  return (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const raw = req.url ?? "/";
    const q = raw.search(/[?#]/);
    const path = q < 0 ? raw : raw.slice(0, q);
    if (path !== "/" && path !== "/ui" && !path.startsWith("/ui/")) return false;
    const asset = table.get(path === "/ui" || path === "/ui/" ? "/" : path);
    if (!asset) {
      send(res, 404, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" }, "not found\n");
      return true;
    }
    let file: { body: Buffer; etag: string };
    try {
      file = load(asset);
    } catch {
      send(res, 404, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" }, "not found\n");
      return true;
    }
    const headers: Record<string, string> = {
      "content-type": asset.type,
      "cache-control": asset.cacheControl,
      etag: file.etag,
    };
    if (asset.type.startsWith("text/html")) headers["content-security-policy"] = CSP;
    if (req.headers["if-none-match"] === file.etag) {
      send(res, 304, headers);
      return true;
    }
    headers["content-length"] = String(file.body.length);
    send(res, 200, headers, req.method === "HEAD" ? undefined : file.body);
    return true;
  };
}
