import { describe, expect, it } from "vitest";
import { BYPASS_ATTEMPTS, readsAsAdmin } from "../../../test/e2e/fixtures/authz-bypass.ts";
import { normaliseRequestTarget, originForm } from "./request-path.ts";

const normal = (target: string) => {
  const n = normaliseRequestTarget(target);
  return n.ok ? originForm(n) : `refused: ${n.reason}`;
};

describe("normaliseRequestTarget", () => {
  it.each([
    ["/", "/"],
    ["/a/b?x=1&y=%2F", "/a/b?x=1&y=%2F"],
    ["//a///b/", "/a/b/"],
    ["/a/./b/../c", "/a/c"],
    ["/a/..", "/"],
    ["/a/.", "/a/"],
    ["/../../a", "/a"],
    ["/%7euser/%41", "/~user/A"],
    ["/%2e%2E/a", "/a"],
    ["/caf%c3%a9", "/caf%C3%A9"],
    ["/a%20b", "/a%20b"],
    ["/x:y@z!$&'()*+,=", "/x:y@z!$&'()*+,="],
    ["http://Web:80/a/../b?q", "/b?q"],
  ])("%s → %s", (target, expected) => {
    expect(normal(target)).toBe(expected);
  });

  it("gives an absolute-form target's authority, which replaces the Host header", () => {
    expect(normaliseRequestTarget("http://web.default:8080//x")).toEqual({
      ok: true,
      path: "/x",
      query: "",
      authority: "web.default:8080",
    });
  });

  it.each([
    ["/a%2fb", /encoded '\/'/],
    ["/a%5Cb", /encoded '\\'/],
    ["/a;b", /';' path parameter/],
    ["/a%3Bb", /encoded ';'/],
    ["/a%252e", /double-encoded/],
    ["/a%00", /NUL/],
    ["/a%0d%0a", /control/],
    ["/a%zz", /two hex digits/],
    ["/a%2", /two hex digits/],
    ["/a b", /0x20/],
    ["/a\\b", /0x5C/],
    ["/é", /0xE9/],
    ["/a#b", /0x23/],
    ["/a?b#c", /query/],
    ["/..%c0%af", /not UTF-8/],
    ["*", /neither a path nor an absolute URL/],
    ["example.com:443", /neither a path nor an absolute URL/],
    ["http://user@web/a", /user info/],
    ["http:///a", /no host/],
  ])("refuses %s", (target, reason) => {
    const n = normaliseRequestTarget(target);
    expect(n.ok).toBe(false);
    if (!n.ok) expect(n.reason).toMatch(reason);
  });

  it("leaves no path attempt of the bypass corpus reading as /admin other than as /admin itself", () => {
    // Every path attempt is one a lenient app reads as /admin (the corpus is meaningful) …
    const pathAttempts = BYPASS_ATTEMPTS.filter((a) => !a.headers && !a.method);
    expect(pathAttempts.length).toBeGreaterThanOrEqual(45);
    for (const a of pathAttempts) expect(readsAsAdmin(a.target), a.name).toBe(true);
    // … and after normalisation it is refused, or spelled so that the loose reading of a DENY
    // rule (case folded, trailing dots dropped) sees /admin: nothing else remains to be fooled.
    for (const a of pathAttempts) {
      const n = normaliseRequestTarget(a.target);
      if (!n.ok) continue;
      const loose = n.path.toLowerCase().replace(/\.+(?=\/|$)/g, "");
      expect(loose === "/admin" || loose.startsWith("/admin/"), `${a.name}: ${n.path}`).toBe(true);
    }
  });
});
