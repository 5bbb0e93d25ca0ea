import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import type { EnrolledPod } from "../../api/enrollment.ts";
import { AgentError, AgentErrors } from "../errors.ts";
import {
  acceptTunnel,
  answerTunnel,
  MAX_HEAD_BYTES,
  openTunnel,
  tunnelAuthRefusal,
  tunnelTargetRefusal,
} from "./tunnel.ts";

/** A connected loopback socket pair: [client, server]. */
async function socketPair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((r) => server.once("connection", r));
  const client = net.connect(port, "127.0.0.1");
  const serverSide = await accepted;
  server.close();
  open.push(client, serverSide);
  return [client, serverSide];
}

const open: net.Socket[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.destroy();
});

function readAll(s: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    s.setEncoding("latin1");
    s.on("data", (c: string) => {
      text += c;
    });
    s.on("end", () => resolve(text));
    s.resume(); // the handshake leaves the socket paused for whoever takes it over
  });
}

describe("tunnel handshake", () => {
  it("connects and keeps bytes that follow the head on both sides", async () => {
    const [client, server] = await socketPair();
    const accepted = acceptTunnel(server, 1000);
    const opened = openTunnel(client, { ip: "10.244.2.11", port: 8080, source: "default/client" }, 1000);
    client.write("early payload");
    const req = await accepted;
    expect(req).toEqual({ ip: "10.244.2.11", port: 8080, source: "default/client" });
    answerTunnel(server, undefined);
    server.write("reply bytes");
    await opened;
    server.end();
    expect(await readAll(client)).toBe("reply bytes");
    const rest = readAll(server);
    client.end();
    expect(await rest).toBe("early payload");
  });

  it("turns a refusal into an error naming the destination agent's reason", async () => {
    const [client, server] = await socketPair();
    const accepted = acceptTunnel(server, 1000);
    const opened = openTunnel(client, { ip: "10.244.2.11", port: 8080, source: "" }, 1000);
    await accepted;
    answerTunnel(server, new AgentError(AgentErrors.CONNECT_FAILED));
    await expect(opened).rejects.toThrow(/NM_TUNNEL_REFUSED|could not reach.*NM_CONNECT_FAILED/);
  });

  it.each([
    ["a request line that is not CONNECT", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
    ["a host name instead of an address", "CONNECT example:80 HTTP/1.1\r\n\r\n"],
    ["a port out of range", "CONNECT 10.0.0.1:70000 HTTP/1.1\r\n\r\n"],
    ["HTTP/1.0", "CONNECT 10.0.0.1:80 HTTP/1.0\r\n\r\n"],
  ])("refuses %s", async (_, head) => {
    const [client, server] = await socketPair();
    const accepted = acceptTunnel(server, 1000);
    client.write(head);
    await expect(accepted).rejects.toThrow(/expected CONNECT/);
  });

  it("refuses a head larger than the bound without waiting for its end", async () => {
    const [client, server] = await socketPair();
    const accepted = acceptTunnel(server, 5000);
    client.write(`CONNECT 10.0.0.1:80 HTTP/1.1\r\nX-Big: ${"a".repeat(MAX_HEAD_BYTES)}`);
    await expect(accepted).rejects.toThrow(/head too large/);
  });

  it("gives up on a client that never finishes its head", async () => {
    const [client, server] = await socketPair();
    const t0 = performance.now();
    const accepted = acceptTunnel(server, 150);
    client.write("CONNECT 10.0.0.1:80 HTTP/1.1\r\n");
    await expect(accepted).rejects.toThrow(/no handshake within 150 ms/);
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});

describe("tunnel target", () => {
  const pod = (ip: string, excludeInboundPorts?: EnrolledPod["excludeInboundPorts"]): EnrolledPod => ({
    name: "web",
    namespace: "default",
    ip,
    netnsPath: "/run/netns/web",
    labels: {},
    serviceAccount: "default",
    enrolledAt: "2026-12-03T08:00:00Z",
    ...(excludeInboundPorts ? { excludeInboundPorts } : {}),
  });
  const refusal = (ip: string, port: number, to: EnrolledPod) =>
    tunnelTargetRefusal({ ip, port, source: "default/client" }, to)?.code;

  it("allows only the pod's own address, on a port it did not exclude", () => {
    const web = pod("10.244.1.12", [{ first: 9000, last: 9100 }]);
    expect(refusal("10.244.1.12", 8080, web)).toBeUndefined();
    expect(refusal("10.244.1.13", 8080, web)).toBe("NM_TUNNEL_FORBIDDEN");
    expect(refusal("10.244.1.12", 9000, web)).toBe("NM_TUNNEL_FORBIDDEN");
    expect(refusal("10.244.1.12", 9100, web)).toBe("NM_TUNNEL_FORBIDDEN");
    expect(refusal("10.244.1.12", 9101, web)).toBeUndefined();
    expect(refusal("10.244.1.12", 15008, web)).toBe("NM_LOOP");
  });

  it("never connects to loopback or link-local, even for a pod enrolled with such an address", () => {
    // An enrollment the agent would now refuse, as a state file written before could still hold.
    expect(refusal("127.0.0.1", 9999, pod("127.0.0.1"))).toBe("NM_TUNNEL_FORBIDDEN");
    expect(refusal("169.254.169.254", 80, pod("169.254.169.254"))).toBe("NM_TUNNEL_FORBIDDEN");
  });
});

describe("tunnel handshake signature", () => {
  const KEY = "ab".repeat(32);
  const req = { ip: "10.244.2.11", port: 8080, source: "default/client-0", workload: "default/client" };

  it("accepts what openTunnel signed with the same key, and only that", async () => {
    const [client, server] = await socketPair();
    const accepted = acceptTunnel(server, 1000);
    void openTunnel(client, req, 1000, KEY).catch(() => {});
    const got = await accepted;
    expect(tunnelAuthRefusal(got, KEY, Date.now())).toBeUndefined();
    expect(tunnelAuthRefusal(got, "cd".repeat(32), Date.now())?.message).toMatch(/bad signature/);
    expect(tunnelAuthRefusal({ ...got, port: 9090 }, KEY, Date.now())?.message).toMatch(/bad signature/);
    expect(tunnelAuthRefusal(got, KEY, Date.now() + 31_000)?.message).toMatch(/expired/);
    expect(tunnelAuthRefusal({ ...got, auth: undefined }, KEY, Date.now())?.code).toBe("NM_TUNNEL_UNAUTHENTICATED");
    expect(tunnelAuthRefusal({ ...got, auth: "1.zz" }, KEY, Date.now())?.message).toMatch(/malformed/);
    // Without a key nothing is checked (standalone files without --tunnel-key-file).
    expect(tunnelAuthRefusal({ ...got, auth: undefined }, undefined, Date.now())).toBeUndefined();
    client.destroy();
    server.destroy();
  });
});
