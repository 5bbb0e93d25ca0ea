import { describe, expect, it } from "vitest";
import { byCodeUnits } from "./order.ts";

describe("byCodeUnits", () => {
  it("orders Kubernetes names and namespace/name keys as localeCompare did (so no precedence moved)", () => {
    // Every pair of short strings over the characters of names and keys, and some longer ones.
    const alphabet = ["a", "b", "z", "0", "9", "-", ".", "/"];
    const words = [""];
    for (let length = 0; length < 2; length++)
      for (const w of [...words]) for (const c of alphabet) if (w.length === length) words.push(w + c);
    words.push("default/web", "default/web-v2", "default/web.v2", "default2/web", "prod/api-1", "prod/api-10");
    for (const a of words)
      for (const b of words) expect(Math.sign(byCodeUnits(a, b)), `${a} vs ${b}`).toBe(Math.sign(a.localeCompare(b)));
  });

  it("is code-unit order where a locale would differ, the same on every machine", () => {
    expect(["b", "B", "a", "A"].sort(byCodeUnits)).toEqual(["A", "B", "a", "b"]);
    expect(byCodeUnits("same", "same")).toBe(0);
  });
});
