import { expect, it } from "vitest";
import { trafficTotals } from "./traffic-totals.ts";

it("sums the workers' connection counters over every label set", () => {
  const worker = (opened: number, bytes: number) => [
    { name: "nodemesh_tcp_connections_opened_total", values: [{ value: opened }, { value: 1 }] },
    { name: "nodemesh_tcp_connections_closed_total", values: [{ value: opened }] },
    { name: "nodemesh_tcp_received_bytes_total", values: [{ value: bytes }] },
    { name: "nodemesh_tcp_sent_bytes_total", values: [{ value: 2 * bytes }] },
    { name: "nodemesh_tcp_connect_failures_total", values: [{ value: 99 }] },
  ];
  expect(trafficTotals([worker(2, 100), worker(3, 50)])).toEqual({
    connectionsOpened: 7,
    connectionsClosed: 5,
    bytesReceived: 150,
    bytesSent: 300,
  });
  expect(trafficTotals([])).toEqual({ connectionsOpened: 0, connectionsClosed: 0, bytesReceived: 0, bytesSent: 0 });
});
