// Raw bytes to a unix socket from inside a namespace (the bad-input corpus's enrollment cases): the
// agent identifies its caller by the connecting process (SO_PEERCRED), so the bytes must come from
// a process in the pod's namespace, this one:
//
//   world.exec(pod, process.execPath, [UNIX_RAW, JSON.stringify({ socket, waitMs })], { input: hex })
//
// Writes the bytes (given in hex on stdin: a command line holds no more than 128 KB), reads until the agent closes or `waitMs` pass, and prints one JSON line:
// { hex: what came back, closed: whether the agent closed }.

import net from "node:net";

export interface UnixRawArgs {
  socket: string;
  waitMs: number;
}

export interface UnixRawReply {
  hex: string;
  closed: boolean;
  error?: string;
}

const args = JSON.parse(process.argv[2] ?? "{}") as UnixRawArgs;
const input: Buffer[] = [];
for await (const chunk of process.stdin) input.push(chunk as Buffer);
const bytes = Buffer.from(Buffer.concat(input).toString("latin1").trim(), "hex");
const chunks: Buffer[] = [];
let error: string | undefined;
const socket = net.connect(args.socket);
const done = (closed: boolean) => {
  clearTimeout(timer);
  const reply: UnixRawReply = { hex: Buffer.concat(chunks).toString("hex"), closed, ...(error ? { error } : {}) };
  process.stdout.write(`${JSON.stringify(reply)}\n`);
  socket.destroy();
  process.exit(0);
};
const timer = setTimeout(() => done(false), args.waitMs);
socket.on("data", (c: Buffer) => chunks.push(c));
socket.on("error", (err: NodeJS.ErrnoException) => {
  error = err.code ?? err.message;
});
socket.on("close", () => done(true));
socket.on("connect", () => socket.write(bytes));
