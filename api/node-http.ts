// Node's HTTP module, taken as its CommonJS exports. An ES `import` of "node:http" builds the whole
// module namespace, which reads the module's lazy WebSocket, CloseEvent and MessageEvent exports
// and so loads Node's bundled undici (fetch, WebSocket), in every thread that imports it: a bare
// process 47 → 61 MB, the idle agent 126 → 130 MB, for code it never calls (docs/benchmarks.md).
// Types still come from `import type … from "node:http"`; agent/startup-modules.test.ts keeps the
// agent's, the controller's and the init container's modules from loading Node's undici again.
export const http = process.getBuiltinModule("node:http");
