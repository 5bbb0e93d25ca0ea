import type { Histogram, Registry } from "prom-client";

/** A histogram's observation count and sum (seconds), read from a registry. */
export async function histogramTotals(registry: Registry, name: string): Promise<{ count: number; sum: number }> {
  const histogram = registry.getSingleMetric(name) as Histogram | undefined;
  if (!histogram) throw new Error(`no metric ${name}`);
  const values = (await histogram.get()).values;
  const pick = (suffix: string) => values.find((v) => v.metricName === `${name}${suffix}`)?.value ?? 0;
  return { count: pick("_count"), sum: pick("_sum") };
}
