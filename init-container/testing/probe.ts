// A tiny TCP probe run inside test namespaces (see netns.ts).
//   probe.ts serve PORT=BANNER...   listen on 0.0.0.0:PORT, answer each connection with BANNER
//   probe.ts connect HOST PORT [LOCAL_PORT [MARK]]
//                                   print what the server answered, or "error: CODE"; from
//                                   LOCAL_PORT if given, with SO_MARK MARK as the agent's sockets
import net from "node:net";

const [mode, ...args] = process.argv.slice(2);

if (mode === "serve") {
  let pending = args.length;
  for (const arg of args) {
    const [port, banner] = arg.split("=");
    const server = net.createServer((socket) => socket.end(`${banner}\n`));
    server.listen(Number(port), "0.0.0.0", () => {
      if (--pending === 0) process.stdout.write("ready\n");
    });
  }
  process.on("SIGTERM", () => process.exit(0));
} else if (mode === "connect") {
  const [host, port, localPort, mark] = [args[0], Number(args[1]), Number(args[2] ?? 0), Number(args[3] ?? 0)];
  // Only a marked socket needs the FFI (the agent's own way of making one).
  const fd = mark ? (await import("../../agent/sys/linux.ts")).connectableFd(undefined, mark) : undefined;
  const socket = fd === undefined ? new net.Socket() : new net.Socket({ fd, readable: true, writable: true });
  socket.connect({ host, port, ...(localPort ? { localPort, localAddress: "0.0.0.0" } : {}) });
  let answer = "";
  socket.setTimeout(3_000, () => socket.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })));
  socket.setEncoding("utf8").on("data", (chunk: string) => (answer += chunk));
  socket.on("end", () => process.stdout.write(answer));
  socket.on("error", (err: NodeJS.ErrnoException) => {
    process.stdout.write(`error: ${err.code}\n`);
    process.exitCode = 1;
  });
} else {
  process.stderr.write("usage: probe.ts serve PORT=BANNER... | connect HOST PORT [LOCAL_PORT [MARK]]\n");
  process.exitCode = 2;
}
