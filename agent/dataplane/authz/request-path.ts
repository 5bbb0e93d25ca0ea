// The request target an authorization policy is matched against, normalised the way the
// workload will read it (RFC 3986 §6.2.2, as Envoy's normalize_path and merge_slashes), and then
// forwarded in that form, so the path the policy saw is the path the app gets. What cannot be
// normalised without guessing how the app reads it is refused instead: an encoded '/' or '\',
// a ';' path parameter, a double-encoded '%', control or non-ASCII bytes.

export type NormalisedTarget =
  | {
      readonly ok: true;
      /** Origin-form path: one '/' between segments, no '.' or '..' segments. */
      readonly path: string;
      /** The query as sent (without '?'); "" when none. */
      readonly query: string;
      /** An absolute-form target's authority, which replaces the Host header (RFC 9112 §3.2.2). */
      readonly authority?: string;
    }
  | { readonly ok: false; readonly reason: string };

const ABSOLUTE_FORM = /^https?:\/\/([^/?#]*)(.*)$/i;
/** What may stand unencoded in a path: unreserved, sub-delims but ';', ':', '@', '/', and '%'. */
const PATH_CHAR = /^[A-Za-z0-9\-._~!$&'()*+,=:@/%]$/;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
/** Encoded bytes an app may decode into a delimiter or worse: refused rather than guessed at. */
const REFUSED_ENCODED: Readonly<Record<string, string>> = {
  "2F": "an encoded '/'",
  "5C": "an encoded '\\'",
  "3B": "an encoded ';'",
  "25": "a double-encoded '%'",
  "00": "an encoded NUL",
};

function refuse(reason: string): NormalisedTarget {
  return { ok: false, reason };
}

export function normaliseRequestTarget(target: string): NormalisedTarget {
  let rest = target;
  let authority: string | undefined;
  if (!rest.startsWith("/")) {
    const absolute = ABSOLUTE_FORM.exec(rest);
    if (!absolute) return refuse("the request target is neither a path nor an absolute URL");
    authority = absolute[1]!;
    if (!authority || authority.includes("@")) return refuse("the absolute URL has no host, or carries user info");
    rest = absolute[2]!.startsWith("/") ? absolute[2]! : `/${absolute[2]}`;
  }
  const q = rest.indexOf("?");
  const rawPath = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? "" : rest.slice(q + 1);
  if (/[^\x21-\x7e]|#/.test(query)) return refuse("the query has a byte that is not printable ASCII, or a '#'");

  let decoded = "";
  for (let i = 0; i < rawPath.length; i++) {
    const c = rawPath[i]!;
    if (!PATH_CHAR.test(c)) {
      return refuse(c === ";" ? "a ';' path parameter" : `the path has the byte 0x${hex(c)}`);
    }
    if (c !== "%") {
      decoded += c;
      continue;
    }
    const code = rawPath.slice(i + 1, i + 3).toUpperCase();
    if (!/^[0-9A-F]{2}$/.test(code)) return refuse("a '%' not followed by two hex digits");
    const refused = REFUSED_ENCODED[code];
    const byte = Number.parseInt(code, 16);
    if (refused) return refuse(`the path has ${refused}`);
    if (byte < 0x20 || byte === 0x7f) return refuse("the path has an encoded control character");
    const char = String.fromCharCode(byte);
    decoded += UNRESERVED.test(char) ? char : `%${code}`;
    i += 2;
  }
  if (!validUtf8(decoded)) return refuse("the path's encoded bytes are not UTF-8 (an overlong '/' is one trick)");
  return { ok: true, path: withoutDotSegments(decoded.replace(/\/{2,}/g, "/")), query, authority };
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** The percent-encoded bytes left in a path spell valid UTF-8 (no overlong forms, RFC 3629). */
function validUtf8(path: string): boolean {
  const bytes = path.match(/(?:%[89A-F][0-9A-F])+/g);
  if (!bytes) return true;
  try {
    for (const run of bytes) strictUtf8.decode(Buffer.from(run.replace(/%/g, ""), "hex"));
    return true;
  } catch {
    return false;
  }
}

function hex(c: string): string {
  return (c.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(2, "0");
}

/** RFC 3986 §5.2.4 on a path that starts with '/' and has no empty segment but the last. */
function withoutDotSegments(path: string): string {
  const segments = path.split("/");
  const out: string[] = [];
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!;
    const last = i === segments.length - 1;
    if (s === "." || s === "..") {
      if (s === "..") out.pop(); // above the root stays at the root, as Envoy and browsers do
      if (last) out.push("");
    } else out.push(s);
  }
  return `/${out.join("/")}`;
}

/** The request back in origin-form, as forwarded to the workload. */
export function originForm(t: { path: string; query: string }): string {
  return t.query ? `${t.path}?${t.query}` : t.path;
}
