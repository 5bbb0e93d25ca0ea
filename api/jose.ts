// jose (JWT and JWKS), loaded when first needed: a RequestAuthentication compiled by an agent's
// worker, or an inline JWKS checked by the schema. Imported at start, its modules cost each thread
// about 4 MB (8 MB of the idle agent's RSS: control thread and worker) that a mesh without JWTs
// never uses. Types come from `import type … from "jose"`.

import { createRequire } from "node:module";

type Jose = typeof import("jose");

let loaded: Jose | undefined;

export function jose(): Jose {
  loaded ??= createRequire(import.meta.url)("jose") as Jose;
  return loaded;
}
