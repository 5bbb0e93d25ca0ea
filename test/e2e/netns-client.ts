// Clients that run inside a test world's namespaces without a helper process: the socket is
// created in the namespace (agent/sys/linux.ts), so a pod's interception rules apply to it exactly
// as they do to the pod's own programs. In a world with pod cgroups (the eBPF mode), the socket is
// also created while this process is in the pod's cgroup, which is what the eBPF programs match.

import { createHash } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { connectableFd, Netns } from "../../agent/sys/linux.ts";
import { withCgroup } from "../world/cgroup.ts";
import { cgroupOfNetns } from "../world/world.ts";

const opened = new Map<string, Netns>();
function netnsAt(path: string): Netns {
  let ns = opened.get(path);
  if (!ns) {
    ns = Netns.open(path);
    opened.set(path, ns);
  }
  return ns;
}

/** An unconnected TCP socket of the pod at `netnsPath`: its namespace, and its cgroup if it has one. */
function podSocket(netnsPath: string): net.Socket {
  const cgroup = cgroupOfNetns(netnsPath);
  const make = () => connectableFd(netnsAt(netnsPath), 0);
  return new net.Socket({ fd: cgroup ? withCgroup(cgroup, make) : make(), readable: true, writable: true });
}

/** A TCP connection from inside the namespace at `netnsPath`. */
export function connectFrom(netnsPath: string, ip: string, port: number, timeoutMs = 5000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = podSocket(netnsPath);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect ${ip}:${port} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.connect(port, ip);
  });
}

export interface HttpReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * One HTTP/1.1 request on a fresh connection from inside the namespace. `createConnection` with no
 * `agent` is the only http.request shape that uses our socket (`agent: false` makes Node build an
 * Agent that ignores it and connects from the root namespace), so the reply is also checked to
 * have come over that socket. With `localPort`, the connection leaves from that port.
 */
export function httpFrom(
  netnsPath: string,
  url: string,
  opts: { method?: string; body?: string; timeoutMs?: number; localPort?: number } = {},
): Promise<HttpReply> {
  const u = new URL(url);
  const port = Number(u.port || 80);
  return new Promise((resolve, reject) => {
    let ours: net.Socket | undefined;
    const req = http.request(
      {
        method: opts.method ?? "GET",
        host: u.hostname,
        port,
        path: `${u.pathname}${u.search}`,
        headers: { connection: "close", ...(opts.body ? { "content-type": "application/json" } : {}) },
        createConnection: () => {
          ours = podSocket(netnsPath);
          const from = opts.localPort ? { localPort: opts.localPort, localAddress: "0.0.0.0" } : {};
          return ours.connect({ port, host: u.hostname, ...from });
        },
        timeout: opts.timeoutMs ?? 5000,
      },
      (res) => {
        if (!ours || res.socket !== ours) {
          req.destroy();
          reject(new Error("the request did not use the socket created in the namespace"));
          return;
        }
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${url} timed out`)));
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** A prior-knowledge h2c session over one connection from inside the namespace. */
export function http2SessionFrom(netnsPath: string, ip: string, port: number): http2.ClientHttp2Session {
  return http2.connect(`http://${ip}:${port}`, {
    createConnection: () => podSocket(netnsPath).connect(port, ip),
  });
}

/** One GET on an open HTTP/2 session: the status and the body. */
export function http2Get(session: http2.ClientHttp2Session, path: string, timeoutMs = 5000): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": "GET", ":path": path });
    const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), timeoutMs);
    let status = 0;
    let headers: http.IncomingHttpHeaders = {};
    let body = "";
    stream.setEncoding("utf8");
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      headers = h as http.IncomingHttpHeaders;
    });
    stream.on("data", (c: string) => {
      body += c;
    });
    stream.on("end", () => {
      clearTimeout(timer);
      resolve({ status, headers, body });
    });
    stream.on("close", () => {
      clearTimeout(timer);
      if (!stream.readableEnded) reject(new Error(`${path}: stream closed (${stream.rstCode}) before its end`));
    });
    stream.on("error", () => {});
    stream.end();
  });
}

/** Sends `payload`, half-closes, and collects everything until the peer closes. */
export async function echoFrom(netnsPath: string, ip: string, port: number, payload: Buffer): Promise<Buffer> {
  const socket = await connectFrom(netnsPath, ip, port);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("end", () => resolve(Buffer.concat(chunks)));
    socket.on("error", reject);
    socket.end(payload);
  });
}

/**
 * Writes `request` as it is (a raw HTTP/1.1 request, which should say `Connection: close`) and
 * collects the answer until the peer closes: "" when it closed or reset without a byte.
 */
export async function rawHttpFrom(
  netnsPath: string,
  ip: string,
  port: number,
  request: string,
  timeoutMs = 5000,
): Promise<string> {
  const socket = await connectFrom(netnsPath, ip, port);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString("latin1"));
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("close", done);
    socket.on("error", () => {});
    socket.write(request, "latin1");
  });
}

/** Reads the first line a server sends, then closes. */
export async function firstLineFrom(netnsPath: string, ip: string, port: number): Promise<string> {
  const socket = await connectFrom(netnsPath, ip, port);
  return new Promise((resolve, reject) => {
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (c: string) => {
      text += c;
      const nl = text.indexOf("\n");
      if (nl >= 0) {
        socket.destroy();
        resolve(text.slice(0, nl));
      }
    });
    socket.on("end", () => reject(new Error(`closed before a line; got "${text}"`)));
    socket.on("error", reject);
    socket.end();
  });
}

export function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Parses Prometheus text into "name{labels}" → value (labels as printed by prom-client). */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** Sum of every series of `name` whose labels include all of `labels`. */
export function metricSum(metrics: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const [series, value] of metrics) {
    if (series !== name && !series.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`))) sum += value;
  }
  return sum;
}

/**
 * Serves `127.0.0.1:listenPort` of this machine (port 0: any free one) by forwarding each
 * connection to `targetIp:targetPort` as seen from the namespace at `netnsPath` — how the demo puts
 * the controller's dashboard, which listens on its namespace's loopback, one click away.
 */
export async function forwardIntoNetns(
  listenPort: number,
  netnsPath: string,
  targetIp: string,
  targetPort: number,
): Promise<net.Server> {
  const server = net.createServer((visitor) => {
    visitor.pause();
    connectFrom(netnsPath, targetIp, targetPort).then(
      (inside) => {
        visitor.pipe(inside).pipe(visitor);
        visitor.resume();
        const end = () => {
          visitor.destroy();
          inside.destroy();
        };
        visitor.once("error", end).once("close", end);
        inside.once("error", end).once("close", end);
      },
      () => visitor.destroy(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listenPort, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  return server;
}
