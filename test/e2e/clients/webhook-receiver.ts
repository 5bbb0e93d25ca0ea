// An Alertmanager webhook receiver for the alert test, run inside a world's namespace: listens on
// 127.0.0.1:PORT and prints one JSON line per notification it receives ({"event":"notification",
// "at": ms since the epoch, "body":…}), after a {"event":"listening"} line. Answers 200 to every POST.
//
//   world.spawn(place, process.execPath, [RECEIVER, "9095"])

import { createServer } from "node:http";

const port = Number(process.argv[2] ?? 9095);
const MAX_BODY = 1024 * 1024;

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on("data", (c: Buffer) => {
    size += c.length;
    if (size <= MAX_BODY) chunks.push(c);
  });
  req.on("end", () => {
    let body: unknown = null;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      body = { unparsable: Buffer.concat(chunks).toString("utf8").slice(0, 200) };
    }
    process.stdout.write(`${JSON.stringify({ event: "notification", at: Date.now(), path: req.url, body })}\n`);
    res.writeHead(200).end();
  });
});
server.listen(port, "127.0.0.1", () => process.stdout.write(`${JSON.stringify({ event: "listening", port })}\n`));
process.once("SIGTERM", () => server.close(() => process.exit(0)));
