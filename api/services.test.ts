import { describe, expect, it } from "vitest";
import { validateServiceTable } from "./services.ts";

const good = {
  services: [
    {
      name: "reviews",
      namespace: "default",
      vip: "10.96.0.10",
      ports: [{ port: 80, targetPort: 8080, protocol: "http" }],
      endpoints: [{ ip: "10.244.1.11", meshed: true }],
    },
  ],
};

function withService(patch: Record<string, unknown>) {
  return { services: [{ ...good.services[0], ...patch }] };
}

describe("service table validation", () => {
  it("accepts a good table", () => {
    expect(validateServiceTable(good)).toEqual([]);
  });

  it.each([
    ["not an object", 42, "services"],
    ["an unknown top-level field", { ...good, extra: 1 }, "extra"],
    ["a bad name", withService({ name: "Reviews" }), "services[0].name"],
    ["a bad VIP", withService({ vip: "10.96.0.300" }), "services[0].vip"],
    ["no ports", withService({ ports: [] }), "services[0].ports"],
    ["a port out of range", withService({ ports: [{ port: 0 }] }), "services[0].ports[0].port"],
    ["a bad protocol", withService({ ports: [{ port: 80, protocol: "udp" }] }), "services[0].ports[0].protocol"],
    ["a duplicate VIP:port", withService({ ports: [{ port: 80 }, { port: 80 }] }), "services[0].ports[1].port"],
    ["a bad endpoint IP", withService({ endpoints: [{ ip: "x" }] }), "services[0].endpoints[0].ip"],
    [
      "an unknown endpoint field",
      withService({ endpoints: [{ ip: "10.0.0.1", weight: 2 }] }),
      "services[0].endpoints[0].weight",
    ],
  ])("names the field for %s", (_, table, field) => {
    const errors = validateServiceTable(table);
    expect(errors.map((e) => e.field)).toContain(field);
  });
});
