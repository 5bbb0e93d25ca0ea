// A gRPC client for the end-to-end tests (the sample workload's Echo service), run inside a pod's
// network namespace so that its connection goes through the pod's interception rules:
//
//   world.exec(client, process.execPath, [GRPC_CALL, JSON.stringify({ target: "10.96.0.12:9090", mode: "unary", calls: 10 })])
//
// Modes: `unary` makes `calls` Unary calls, `concurrency` at a time (all on one channel, so one
// HTTP/2 connection); `bidi` opens `calls` BidiStreams one after the other, on each sends
// `messages` messages one by one, each after the previous reply, and collects the replies. With
// `deadlineMs`, each call or stream must finish that long after it starts. Prints one JSON line (GrpcReport).

import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { type EchoReply, type EchoRequest, echoClient } from "../../workload/workload.ts";

/** The Echo client's methods with metadata and call options (the typed EchoClient omits them). */
interface EchoCalls {
  Unary(
    request: Partial<EchoRequest>,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<EchoReply>,
  ): grpc.ClientUnaryCall;
  BidiStream(
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
  ): grpc.ClientDuplexStream<Partial<EchoRequest>, EchoReply>;
}

export interface GrpcArgs {
  /** "host:port". */
  target: string;
  mode: "unary" | "bidi";
  /** unary: number of calls; bidi: number of streams, one after the other. Default 1. */
  calls?: number;
  /** unary: calls in flight at once. Default 1. */
  concurrency?: number;
  /** unary: calls started per second, open loop (`concurrency` is then ignored). */
  rate?: number;
  /** bidi: messages to send on each stream. Default 1. */
  messages?: number;
  /** Deadline of each call, ms after it starts. */
  deadlineMs?: number;
  metadata?: Record<string, string>;
  /** Message text; calls get `${message}-${i}`. Default "hello". */
  message?: string;
}

export interface CallResult {
  /** gRPC status name, e.g. "OK", "UNAVAILABLE". */
  code: string;
  details: string;
  ms: number;
  pod?: string;
  version?: string;
  /** x-nodemesh-error from the status metadata (a trailers-only answer from the agent). */
  nmError?: string;
}

export interface GrpcReport {
  codes: Record<string, number>;
  details: Record<string, number>;
  pods: Record<string, number>;
  versions: Record<string, number>;
  nmErrors: Record<string, number>;
  latencies: number[];
  results: CallResult[];
  /** bidi: per stream, the messages sent and the replies in the order they arrived. */
  streams?: { sent: string[]; received: EchoReply[] }[];
}

const round = (ms: number) => Math.round(ms * 100) / 100;

function bump(map: Record<string, number>, key: string | undefined): void {
  if (key === undefined) return;
  map[key] = (map[key] ?? 0) + 1;
}

function codeName(code: number): string {
  return grpc.status[code] ?? String(code);
}

function metadataOf(values: Record<string, string> | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(values ?? {})) md.set(k, v);
  return md;
}

function nmErrorOf(md: grpc.Metadata | undefined): string | undefined {
  const v = md?.get("x-nodemesh-error")[0];
  return v === undefined ? undefined : String(v);
}

export async function runGrpc(args: GrpcArgs): Promise<GrpcReport> {
  const client = await echoClient(args.target);
  const calls = client as unknown as EchoCalls;
  const results: CallResult[] = [];
  const report: GrpcReport = {
    codes: {},
    details: {},
    pods: {},
    versions: {},
    nmErrors: {},
    latencies: [],
    results,
  };
  const options = (): grpc.CallOptions =>
    args.deadlineMs === undefined ? {} : { deadline: new Date(Date.now() + args.deadlineMs) };
  const message = args.message ?? "hello";

  try {
    if (args.mode === "unary") {
      const total = args.calls ?? 1;
      const one = (i: number) =>
        new Promise<void>((resolve) => {
          const started = performance.now();
          let status: grpc.StatusObject | undefined;
          const call = calls.Unary(
            { message: `${message}-${i}` },
            metadataOf(args.metadata),
            options(),
            (err, reply) => {
              const result: CallResult = err
                ? {
                    code: codeName(err.code),
                    details: err.details,
                    ms: round(performance.now() - started),
                    nmError: nmErrorOf(err.metadata),
                  }
                : {
                    code: "OK",
                    details: "",
                    ms: round(performance.now() - started),
                    pod: reply?.pod,
                    version: reply?.version,
                  };
              if (!result.nmError && status) result.nmError = nmErrorOf(status.metadata);
              results[i] = result;
              resolve();
            },
          );
          call.on("status", (s: grpc.StatusObject) => {
            status = s;
          });
        });
      let next = 0;
      if (args.rate) {
        // Open loop: each call starts on its schedule, whatever the earlier ones are doing.
        const start = performance.now();
        const pending: Promise<void>[] = [];
        for (let i = 0; i < total; i++) {
          const wait = start + (i * 1000) / args.rate - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          pending.push(one(i));
        }
        await Promise.all(pending);
      } else {
        const worker = async () => {
          while (next < total) await one(next++);
        };
        await Promise.all(Array.from({ length: Math.min(Math.max(1, args.concurrency ?? 1), total) }, worker));
      }
    } else {
      const count = args.messages ?? 1;
      report.streams = [];
      for (let i = 0; i < (args.calls ?? 1); i++) {
        const stream = { sent: [] as string[], received: [] as EchoReply[] };
        report.streams.push(stream);
        results.push(await bidi(calls, args, count, `${message}-${i}`, stream, options()));
      }
    }
  } finally {
    client.close();
  }

  for (const r of results) {
    bump(report.codes, r.code);
    if (r.details) bump(report.details, r.details);
    bump(report.pods, r.pod);
    bump(report.versions, r.version);
    bump(report.nmErrors, r.nmError);
    report.latencies.push(r.ms);
  }
  return report;
}

/** One BidiStream: sends a message, waits for its reply, sends the next; then ends. */
function bidi(
  calls: EchoCalls,
  args: GrpcArgs,
  count: number,
  prefix: string,
  stream: { sent: string[]; received: EchoReply[] },
  options: grpc.CallOptions,
): Promise<CallResult> {
  const started = performance.now();
  return new Promise<CallResult>((resolve) => {
    const call = calls.BidiStream(metadataOf(args.metadata), options);
    const sendNext = () => {
      if (stream.sent.length >= count) {
        call.end();
        return;
      }
      const m = `${prefix}-${stream.sent.length + 1}`;
      stream.sent.push(m);
      call.write({ message: m });
    };
    call.on("data", (reply: EchoReply) => {
      stream.received.push(reply);
      sendNext();
    });
    call.on("error", () => {}); // the status below carries it
    call.on("status", (s: grpc.StatusObject) => {
      const last = stream.received.at(-1);
      resolve({
        code: codeName(s.code),
        details: s.details,
        ms: round(performance.now() - started),
        pod: last?.pod,
        version: last?.version,
        nmError: nmErrorOf(s.metadata),
      });
    });
    sendNext();
  });
}

if (import.meta.main) {
  const raw = process.argv[2];
  if (!raw) {
    process.stderr.write('usage: node grpc-call.ts \'{"target":"10.96.0.12:9090","mode":"unary","calls":10}\'\n');
    process.exit(2);
  }
  const report = await runGrpc(JSON.parse(raw) as GrpcArgs);
  process.stdout.write(`${JSON.stringify(report)}\n`);
}
