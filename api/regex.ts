// Route regular expressions, in linear time. Matches in routes, gRPC methods and fault filters are
// RE2 syntax, compiled by re2js (a pure-JavaScript port of RE2/Go regexp: no native addon) and run
// as a full match, as they were with `^(?:…)$` on V8's engine. One module for the controller's
// validation and the agent's compilation, so whatever the controller accepts the agent compiles.
//
// Cost: RE2 never backtracks; a match walks the input once, carrying at most one thread per
// program instruction (a lazily built DFA, falling back to the NFA when its cache overflows). So a
// match costs at most (input length) × (program size); the program size is capped here, which
// bounds the worst case (docs/security.md gives the measured figures).

import { createRequire } from "node:module";
import type { RE2JS as RE2JSClass } from "re2js";

// Loaded on the first regex, not at import: a process or worker whose routes have no regex does not
// pay for the engine (measured +0.7 MB of heap and 3–10 MB of RSS per isolate when loaded).
let engine: typeof RE2JSClass | undefined;
function re2js(): typeof RE2JSClass {
  engine ??= (createRequire(import.meta.url)("re2js") as { RE2JS: typeof RE2JSClass }).RE2JS;
  return engine;
}

/** Longest pattern source accepted, in characters. */
export const MAX_REGEX_LENGTH = 256;
/** Largest compiled program accepted, in RE2 instructions (a typical route regex has 10–150). */
export const MAX_REGEX_PROGRAM = 1000;

export type RegexCompilation =
  | { ok: true; test: (value: string) => boolean; size: number }
  | { ok: false; message: string };

/** Why RE2 refused a pattern that V8 would run, in words a route author can act on. */
function explain(source: string, error: string): string {
  const detail = error.replace(/^error parsing regexp: /, "");
  if (/\(\?<?[=!]/.test(source)) {
    return `lookahead and lookbehind are not supported (patterns are RE2 syntax, matched in linear time): ${detail}`;
  }
  if (/\\[1-9]|\\k</.test(source)) {
    return `backreferences are not supported (patterns are RE2 syntax, matched in linear time): ${detail}`;
  }
  return `invalid regular expression (RE2 syntax): ${detail}`;
}

/** The number of instructions of a compiled pattern (re2js keeps its program on the RE2 object). */
function programSize(re: RE2JSClass): number {
  const prog = (re.re2() as unknown as { prog?: { numInst?: () => number } }).prog;
  return prog?.numInst?.() ?? 0;
}

/**
 * Compiles a pattern that must match a whole value (anchored at both ends, like `^(?:…)$`).
 * Refuses what RE2 does not accept (backreferences, lookaround, JavaScript-only escapes such as
 * `\u0041`: write `\x{41}`) and programs larger than MAX_REGEX_PROGRAM instructions.
 */
export function compileFullMatch(source: string): RegexCompilation {
  if (source.length > MAX_REGEX_LENGTH) {
    return { ok: false, message: `a regular expression may be at most ${MAX_REGEX_LENGTH} characters` };
  }
  let re: RE2JSClass;
  try {
    re = re2js().compile(source);
  } catch (err) {
    return { ok: false, message: explain(source, (err as Error).message) };
  }
  const size = programSize(re);
  if (size > MAX_REGEX_PROGRAM) {
    return {
      ok: false,
      message: `too complex: compiles to ${size} instructions, more than ${MAX_REGEX_PROGRAM} (use smaller repetition counts)`,
    };
  }
  return { ok: true, test: (value) => re.testExact(value), size };
}

/** compileFullMatch for a pattern already validated: throws on one that is not. */
export function fullMatch(source: string): (value: string) => boolean {
  const compiled = compileFullMatch(source);
  if (!compiled.ok) throw new Error(`regular expression ${JSON.stringify(source)}: ${compiled.message}`);
  return compiled.test;
}
