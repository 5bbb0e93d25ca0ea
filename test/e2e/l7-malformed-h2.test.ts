// Malformed HTTP/2 never takes the agent down (issue 20, part 1). Raw h2c connections whose
// request body contradicts its content-length — shorter, longer, never ended, a content-length
// that is negative, no number, or sent twice — outbound from a meshed pod to Service ports declared
// http, http2 and grpc, and inbound from an unmeshed caller to a meshed pod. Each malformed stream
// must end in a stream or connection error (RFC 9113 §8.1.1: RST_STREAM or GOAWAY with
// PROTOCOL_ERROR), never in an answer from the app; and after each one both agents still run under
// the same pid, answer /healthz, and keep serving an HTTP/2 connection a well-behaved client opened
// before the sweep began.

import type http2 from "node:http2";
import type net from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ADMIN_PORT } from "../../api/dataplane.ts";
import { type Pod, World } from "../world/world.ts";
import {
  errorCodeOf,
  FLAG,
  FRAME,
  frame,
  H2_ERROR,
  type H2Frame,
  PREFACE,
  postHeaderBlock,
  readFrames,
} from "./clients/raw-h2.ts";
import { type AgentHandle, Mesh } from "./mesh.ts";
import { describeModes } from "./modes.ts";
import { connectFrom, http2Get, http2SessionFrom, httpFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";
const HTTP_PORT = 80; // declared http
const H2_PORT = 81; // declared http2
const GRPC_PORT = 9090; // declared grpc
const GRPC_PATH = "/nodemesh.sample.Echo/Unary";

type Body = { data: string; endStream: boolean };
interface Shape {
  what: string;
  contentLength: string[];
  body: Body;
  /** DATA only this long after HEADERS, once the agent has forwarded the request upstream. */
  dataLaterMs?: number;
  /** What the client does after its DATA when it never ended the stream. */
  afterwards?: "rst" | "close";
}

/** The family of issue 20: a request whose body and content-length disagree, or whose content-length is invalid. */
const SHAPES: readonly Shape[] = [
  { what: "DATA shorter than content-length", contentLength: ["10"], body: { data: "abc", endStream: true } },
  {
    what: "DATA shorter than content-length, after the request went upstream",
    contentLength: ["10"],
    body: { data: "abc", endStream: true },
    dataLaterMs: 300,
  },
  { what: "DATA longer than content-length", contentLength: ["3"], body: { data: "abcdefghij", endStream: true } },
  {
    what: "no END_STREAM, then RST_STREAM",
    contentLength: ["10"],
    body: { data: "abc", endStream: false },
    afterwards: "rst",
  },
  {
    what: "no END_STREAM, then the connection closes",
    contentLength: ["10"],
    body: { data: "abc", endStream: false },
    afterwards: "close",
  },
  { what: "a negative content-length", contentLength: ["-1"], body: { data: "abc", endStream: true } },
  { what: "a content-length that is no number", contentLength: ["ten"], body: { data: "abc", endStream: true } },
  { what: "two different content-lengths", contentLength: ["3", "10"], body: { data: "abc", endStream: true } },
];

/** The connection's opening up to the request's HEADERS, then its DATA. */
function requestBytes(shape: Shape, grpc: boolean): { head: Buffer; data: Buffer } {
  const headers: [string, string][] = [[":authority", "reviews"]];
  if (grpc) headers.push(["content-type", "application/grpc"], ["te", "trailers"]);
  for (const v of shape.contentLength) headers.push(["content-length", v]);
  return {
    head: Buffer.concat([
      PREFACE,
      frame(FRAME.SETTINGS, 0, 0),
      frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, postHeaderBlock(headers, grpc ? GRPC_PATH : undefined)),
    ]),
    data: frame(FRAME.DATA, shape.body.endStream ? FLAG.END_STREAM : 0, 1, Buffer.from(shape.body.data, "latin1")),
  };
}

/** The stream's end as the client saw it: a reset, a GOAWAY, an answer, or a closed connection. */
const streamOver = (frames: readonly H2Frame[]) =>
  frames.some(
    (f) =>
      f.type === FRAME.GOAWAY || (f.stream === 1 && (f.type === FRAME.RST_STREAM || (f.flags & FLAG.END_STREAM) !== 0)),
  );

describeModes("malformed HTTP/2", (mode) => {
  let world: World;
  let mesh: Mesh;
  let client: Pod;
  let server: Pod;
  let stranger: Pod;
  let agents: AgentHandle[];
  let pids: (number | undefined)[];
  /** The well-behaved client's connection, opened before the first malformed request. */
  let steady: http2.ClientHttp2Session;

  beforeAll(async () => {
    world = await World.create({ nodes: 2, cgroups: mode === "ebpf" });
    mesh = new Mesh(world, { mode });
    const [n1, n2] = world.nodes;
    client = await world.addPod(n1, "client");
    server = await world.addPod(n2, "server");
    stranger = await world.addPod(n2, "stranger"); // not meshed
    mesh.writeServices({
      services: [
        {
          name: "server",
          namespace: "default",
          vip: VIP,
          ports: [
            { name: "http", port: HTTP_PORT, targetPort: 8080, protocol: "http" },
            { name: "h2", port: H2_PORT, targetPort: 8080, protocol: "http2" },
            { name: "grpc", port: GRPC_PORT, targetPort: 9090, protocol: "grpc" },
          ],
          endpoints: [{ ip: server.ip, node: n2.name, pod: server.name, meshed: true }],
        },
      ],
    });
    agents = await Promise.all([mesh.startAgent(n1!), mesh.startAgent(n2!)]);
    pids = agents.map((a) => a.proc.pid);
    await mesh.startWorkload(server, ["--http-port", "8080", "--grpc-port", "9090", "--tcp-echo-port", "0"]);
    await mesh.enroll(client, ["--label", "app=client"]);
    await mesh.enroll(server, ["--label", "app=server"]);
    steady = http2SessionFrom(client.netnsPath, VIP, H2_PORT);
    steady.on("error", () => {});
    expect((await http2Get(steady, "/steady")).status).toBe(200);
  }, 60_000);

  afterAll(async () => {
    steady?.destroy();
    await mesh?.destroy();
  });

  /** Both agents run as before and answer /healthz; the steady client and a new one are served. */
  async function expectMeshServing(caller: Pod, url: string): Promise<void> {
    for (const [i, agent] of agents.entries()) {
      expect(agent.proc.exit, `agent on ${agent.node.name} exited`).toBeUndefined();
      expect(agent.proc.pid).toBe(pids[i]);
      const health = await httpFrom(agent.node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/healthz`);
      expect(health.status).toBe(200);
    }
    const again = await http2Get(steady, "/steady");
    expect(again.status).toBe(200);
    expect(JSON.parse(again.body).pod).toBe("server");
    const fresh = await httpFrom(caller.netnsPath, url);
    expect(fresh.status).toBe(200);
  }

  async function sendMalformed(from: Pod, ip: string, port: number, shape: Shape, grpc: boolean) {
    const socket: net.Socket = await connectFrom(from.netnsPath, ip, port);
    try {
      const { head, data } = requestBytes(shape, grpc);
      const early = shape.dataLaterMs ? await readFrames(socket, head, streamOver, shape.dataLaterMs) : undefined;
      const bytes = early ? data : Buffer.concat([head, data]);
      if (!shape.afterwards) {
        const rest = await readFrames(socket, bytes, streamOver);
        return { frames: [...(early?.frames ?? []), ...rest.frames], closed: rest.closed };
      }
      // A client that never ends its body: give the agent time to forward it, then give up.
      const first = await readFrames(socket, bytes, streamOver, 300);
      if (shape.afterwards === "close") socket.destroy();
      else {
        const rst = Buffer.alloc(4);
        rst.writeUInt32BE(H2_ERROR.CANCEL);
        const after = await readFrames(socket, frame(FRAME.RST_STREAM, 0, 1, rst), () => false, 300);
        first.frames.push(...after.frames);
      }
      return first;
    } finally {
      socket.destroy();
    }
  }

  /**
   * What the agent must answer: no answer from the app, and a stream error with PROTOCOL_ERROR —
   * or a connection error: for DATA beyond content-length, nghttp2 fails the whole session and
   * Node sends GOAWAY with INTERNAL_ERROR (RFC 9113 §5.4.1 allows either).
   */
  function expectProtocolError(frames: readonly H2Frame[], shape: Shape): void {
    const shown = JSON.stringify(frames.map((f) => [f.type, f.stream, f.flags]));
    expect(
      frames.filter((f) => f.stream === 1 && (f.type === FRAME.DATA || f.type === FRAME.HEADERS)),
      shown,
    ).toEqual([]);
    if (shape.afterwards) return; // the client itself abandoned the stream
    const reset = frames.find((f) => f.stream === 1 && f.type === FRAME.RST_STREAM);
    const goaway = frames.find((f) => f.type === FRAME.GOAWAY);
    expect(reset ?? goaway, shown).toBeDefined();
    if (reset) expect(errorCodeOf(reset)).toBe(H2_ERROR.PROTOCOL_ERROR);
    else expect([H2_ERROR.PROTOCOL_ERROR, H2_ERROR.INTERNAL_ERROR]).toContain(errorCodeOf(goaway!));
  }

  const directions = [
    { direction: "outbound, Service port declared http", out: true, port: HTTP_PORT, grpc: false },
    { direction: "outbound, Service port declared http2", out: true, port: H2_PORT, grpc: false },
    { direction: "outbound, Service port declared grpc", out: true, port: GRPC_PORT, grpc: true },
    { direction: "inbound from an unmeshed caller, http port", out: false, port: 8080, grpc: false },
    { direction: "inbound from an unmeshed caller, gRPC port", out: false, port: 9090, grpc: true },
  ] as const;

  const cases = directions.flatMap((d) => SHAPES.map((shape) => ({ ...d, shape, what: shape.what })));

  it.each(cases)("$direction: $what ends that stream only", async ({ out, port, grpc, shape }) => {
    const from = out ? client : stranger;
    const ip = out ? VIP : server.ip;
    const { frames } = await sendMalformed(from, ip, port, shape, grpc);
    expectProtocolError(frames, shape);
    await expectMeshServing(from, out ? `http://${VIP}:${HTTP_PORT}/after` : `http://${server.ip}:8080/after`);
  });
});
