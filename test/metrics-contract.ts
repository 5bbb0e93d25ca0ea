// The metric contract of docs/metrics.md, read from its tables: every metric name with the labels
// it documents. deploy/deploy.test.ts holds the dashboards and alerts to it; the observability e2e
// test holds what the agents and the controller serve to it.

import { readFileSync } from "node:fs";

/** Labels Prometheus attaches to every series of a target (scrape.yaml). */
export const TARGET_LABELS = ["job", "instance", "node", "pod"];

export interface Contract {
  /** Documented metric name → its labels (docs/metrics.md), histograms with `le`. */
  metrics: Map<string, Set<string>>;
  histograms: Set<string>;
  /** `nodemesh_agent_process_*` and the like: prom-client metrics, any name and label under them. */
  prefixes: string[];
}

export function readContract(): Contract {
  const text = readFileSync(new URL("../docs/metrics.md", import.meta.url), "utf8");
  const metrics = new Map<string, Set<string>>();
  const histograms = new Set<string>();
  const prefixes: string[] = [];
  const backticked = (s: string) => [...s.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
  const identifiers = (s: string) =>
    backticked(s)
      .flatMap((b) => b.split(/[\s,]+/))
      .filter((w) => /^[a-z_][a-z0-9_]*$/.test(w) && !w.startsWith("nodemesh_"));
  // Sections (## ...) may name the labels of all their metrics in a paragraph starting "Label".
  for (const section of text.split(/^## /m).slice(1)) {
    const paragraphs = section.split(/\n\s*\n/).map((p) => p.replaceAll("\n", " "));
    const labelsParagraph = paragraphs.find((p) => /^Labels?\b/.test(p.trim())) ?? "";
    const notInHistograms = new Set(identifiers(labelsParagraph.match(/histograms: without ([^)]*)/)?.[1] ?? ""));
    const sectionLabels = identifiers(labelsParagraph.replace(/\(histograms: without [^)]*\)/, ""));
    for (const line of section.split("\n")) {
      const cells = line.split("|").map((c) => c.trim());
      if (cells.length < 5 || !/^`nodemesh_/.test(cells[1]!)) continue;
      const type = cells[2]!;
      for (const name of backticked(cells[1]!)) {
        if (name.endsWith("*")) {
          prefixes.push(name.slice(0, -1));
          continue;
        }
        const labels = new Set([...sectionLabels, ...identifiers(cells[3]!), ...TARGET_LABELS]);
        if (type === "histogram") {
          histograms.add(name);
          for (const l of notInHistograms) labels.delete(l);
          labels.add("le");
        }
        metrics.set(name, labels);
      }
    }
  }
  return { metrics, histograms, prefixes };
}
