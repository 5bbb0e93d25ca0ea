// jose (JWT and JWKS), loaded when first needed: a RequestAuthentication compiled by an agent's
// worker, or an inline JWKS checked by the schema. Imported at start, it was loaded in the control
// thread and in every worker of every agent, JWTs or not (the idle agent: 123 → 121 MB without it).
// Types come from `import type … from "jose"`.

import { createRequire } from "node:module";

type Jose = typeof import("jose");

let loaded: Jose | undefined;

export function jose(): Jose {
  loaded ??= createRequire(import.meta.url)("jose") as Jose;
  return loaded;
}
