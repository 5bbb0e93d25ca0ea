// The sample workload as every benchmark runs it: HTTP/1.1 on 8080 and gRPC on 9090, answering
// 1 KiB, no TCP echo.

export const BENCH_WORKLOAD_ARGS: readonly string[] = [
  "--http-port",
  "8080",
  "--grpc-port",
  "9090",
  "--tcp-echo-port",
  "0",
  "--response-bytes",
  "1024",
];
