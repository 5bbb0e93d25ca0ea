// Run by read-buffers.test.ts, with or without --expose-gc: 256 MB forwarded by pipeBoth between
// two loopback connections, in a thread whose young generation is a data-plane worker's
// (--max-semi-space-size=8). Reports the most memory that ArrayBuffers held meanwhile.
import { once } from "node:events";
import net, { type AddressInfo } from "node:net";
import { pipeBoth } from "./pipe.ts";

const TOTAL = 256 * 2 ** 20;
const chunk = Buffer.alloc(64 * 1024, 7);
let maxArrayBuffers = 0;
let received = 0;
let chunks = 0;
const sink = net.createServer((s) => {
  s.on("data", (c: Buffer) => {
    received += c.length;
    // process.memoryUsage() reads /proc: sampled every 16th chunk.
    if (++chunks % 16 === 0) maxArrayBuffers = Math.max(maxArrayBuffers, process.memoryUsage().arrayBuffers);
    if (received >= TOTAL) s.end();
  });
});
const proxy = net.createServer((client) => {
  const upstream = net.connect((sink.address() as AddressInfo).port, "127.0.0.1");
  upstream.once("connect", () => void pipeBoth(client, upstream));
});
sink.listen(0, "127.0.0.1");
proxy.listen(0, "127.0.0.1");
await Promise.all([once(sink, "listening"), once(proxy, "listening")]);
const client = net.connect((proxy.address() as AddressInfo).port, "127.0.0.1");
await once(client, "connect");
for (let sent = 0; sent < TOTAL; sent += chunk.length) {
  if (!client.write(chunk)) await once(client, "drain");
}
client.end();
client.resume();
await once(client, "close");
sink.close();
proxy.close();
console.log(JSON.stringify({ received, maxArrayBuffersMB: maxArrayBuffers / 2 ** 20 }));
