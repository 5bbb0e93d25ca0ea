// prom-client's classes, each loaded from its own file. Its index also loads the push gateway
// (http, https, url), summaries (tdigest) and OpenTelemetry: about 18 MB per thread, in every
// agent worker thread, for nothing the agent uses. Same classes, same types.
// The file paths are prom-client's internals, not its API: package.json pins the exact version
// they were checked against, and prom.test.ts fails if an upgrade moves or changes them.

import { createRequire } from "node:module";
import type * as PromClient from "prom-client";

const require = createRequire(import.meta.url);

export const Registry: typeof PromClient.Registry = require("prom-client/lib/registry.js");
export type Registry = PromClient.Registry;
export const Counter: typeof PromClient.Counter = require("prom-client/lib/counter.js");
export type Counter<T extends string = string> = PromClient.Counter<T>;
export const Gauge: typeof PromClient.Gauge = require("prom-client/lib/gauge.js");
export type Gauge<T extends string = string> = PromClient.Gauge<T>;
export const Histogram: typeof PromClient.Histogram = require("prom-client/lib/histogram.js");
export type Histogram<T extends string = string> = PromClient.Histogram<T>;
export const AggregatorRegistry: typeof PromClient.AggregatorRegistry = require("prom-client/lib/cluster.js");
export const collectDefaultMetrics: typeof PromClient.collectDefaultMetrics = require("prom-client/lib/defaultMetrics.js");
export type { Metric, MetricObjectWithValues, MetricValue } from "prom-client";
