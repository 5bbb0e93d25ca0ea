import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { pipeBoth } from "./pipe.ts";

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A connected pair of loopback sockets that may half-close: [the client's end, the accepting end]. */
async function socketPair(): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true }).listen(0, "127.0.0.1");
  servers.push(server);
  await once(server, "listening");
  const accepted = once(server, "connection") as Promise<[Socket]>;
  const client = connect({ port: (server.address() as AddressInfo).port, host: "127.0.0.1", allowHalfOpen: true });
  await once(client, "connect");
  return [client, (await accepted)[0]];
}

/**
 * client ⇄ [agentDown | pipe | agentUp] ⇄ app: the pipe under test joins the agent's two ends.
 * The app never ends its side unless the test says so.
 */
async function pipedPair(idleMs: number, halfClosedMs: number) {
  const [client, agentDown] = await socketPair();
  const [agentUp, app] = await socketPair();
  for (const s of [client, app]) s.on("error", () => {});
  const piped = pipeBoth(agentDown, agentUp, idleMs, halfClosedMs);
  return { client, app, agentDown, agentUp, piped };
}

describe("pipeBoth", () => {
  it("closes a half-closed pipe whose other side stays quiet, after the half-closed idle time", async () => {
    const { client, app, agentDown, agentUp, piped } = await pipedPair(60_000, 200);
    app.resume(); // reads the client's end, never ends its own side
    const started = performance.now();
    client.end("last words");
    await piped;
    const ms = performance.now() - started;
    expect(agentDown.destroyed && agentUp.destroyed).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(190);
    expect(ms).toBeLessThan(2000); // far below the 60 s idle timeout
  });

  it("keeps a quiet pipe that neither side ended until the idle timeout", async () => {
    const { agentDown, agentUp } = await pipedPair(60_000, 100);
    await sleep(400);
    expect(agentDown.destroyed || agentUp.destroyed).toBe(false);
    agentDown.destroy();
  });

  it("keeps a half-closed pipe open while the other side still sends", async () => {
    const { client, app, agentDown, piped } = await pipedPair(60_000, 200);
    client.resume();
    client.end();
    for (let i = 0; i < 6; i++) {
      app.write("still answering");
      await sleep(100);
    }
    expect(agentDown.destroyed).toBe(false);
    app.end();
    const result = await piped;
    expect(result.bytesFromUpstream).toBe(6 * "still answering".length);
  });

  it("has no idle timeout for 0, but still the half-closed one", async () => {
    const { client, app, agentDown, piped } = await pipedPair(0, 150);
    await sleep(300);
    expect(agentDown.destroyed).toBe(false);
    app.resume();
    client.end();
    await piped;
  });
});
