// The enrollment request's schema (api/enrollment.ts has the contract). Apart from the contract's
// types and helpers so that the data-plane workers, which use those, never load zod.

import { z } from "zod";
import { isIPv4, notAPodAddress, type PodEnrollment } from "./enrollment.ts";
import { fieldPath } from "./field-path.ts";

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MAX_PORT_RANGES = 256;
const MAX_LABELS = 256;
const LABEL_NAME = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?";
const LABEL_KEY = new RegExp(`^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?${LABEL_NAME}$`);
const LABEL_KEY_RULE = "label keys follow Kubernetes' rules: [prefix/]name, name up to 63 of [A-Za-z0-9-_.]";
const LABEL_VALUE = new RegExp(`^(${LABEL_NAME})?$`);

const dnsLabel = (key: string) => {
  const message = `${key} must be a DNS label (lowercase letters, digits, '-')`;
  return z.string({ error: message }).max(253, message).regex(DNS_LABEL, message);
};
const RANGE_MESSAGE = "a port range is { first, last }: ports 1-65535, first <= last";
const port = z.number({ error: RANGE_MESSAGE }).int(RANGE_MESSAGE).min(1, RANGE_MESSAGE).max(65535, RANGE_MESSAGE);

export const PodEnrollmentSchema = z.strictObject({
  name: dnsLabel("name"),
  namespace: dnsLabel("namespace"),
  ip: z
    .string({ error: "ip must be an IPv4 address" })
    .refine(isIPv4, "ip must be an IPv4 address")
    .superRefine((ip, ctx) => {
      const special = notAPodAddress(ip);
      if (special) ctx.addIssue({ code: "custom", message: `ip ${ip} is ${special}, not a pod address` });
    }),
  netnsPath: z
    .string({ error: "netnsPath must be an absolute path" })
    .startsWith("/", "netnsPath must be an absolute path")
    .optional(),
  // Kubernetes' rules (a key: an optional DNS-subdomain prefix and a name of at most 63; a value:
  // at most 63): what a pod's labels can be, and nothing a handshake or a metric label chokes on.
  labels: z
    .record(
      z.string().regex(LABEL_KEY, LABEL_KEY_RULE),
      z
        .string({ error: "label values must be strings" })
        .regex(LABEL_VALUE, "label values are up to 63 of [A-Za-z0-9-_.]"),
      {
        error: (issue) => (issue.code === "invalid_key" ? LABEL_KEY_RULE : "labels must be an object of strings"),
      },
    )
    .refine((labels) => Object.keys(labels).length <= MAX_LABELS, `at most ${MAX_LABELS} labels`)
    .default({}),
  serviceAccount: z
    .string({ error: "serviceAccount must be a DNS label" })
    .regex(DNS_LABEL, "serviceAccount must be a DNS label")
    .default("default"),
  excludeInboundPorts: z
    .array(
      z
        .object({ first: port, last: port }, { error: RANGE_MESSAGE })
        .refine((r) => r.first <= r.last, RANGE_MESSAGE)
        .transform(({ first, last }) => ({ first, last })),
      { error: `excludeInboundPorts must be a list of at most ${MAX_PORT_RANGES} port ranges` },
    )
    .max(MAX_PORT_RANGES, `excludeInboundPorts must be a list of at most ${MAX_PORT_RANGES} port ranges`)
    .optional(),
});

/** Checks a decoded request body; returns the first problem with the field it concerns. */
export function validateEnrollment(
  body: unknown,
): { ok: true; value: PodEnrollment } | { ok: false; field: string; message: string } {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return { ok: false, field: "", message: "body must be a JSON object" };
  }
  // zod leaves a "__proto__" key out of a record unchecked (prototype safety); JSON.parse makes it an
  // own key, and it is no label key either.
  const labels = (body as { labels?: unknown }).labels;
  if (typeof labels === "object" && labels !== null && Object.hasOwn(labels, "__proto__")) {
    return { ok: false, field: "labels.__proto__", message: LABEL_KEY_RULE };
  }
  const parsed = PodEnrollmentSchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    if (issue.code === "unrecognized_keys") {
      return { ok: false, field: issue.keys[0]!, message: `unknown field "${issue.keys[0]}"` };
    }
    // A port range's own fields are reported as the range ("excludeInboundPorts[0]").
    const path = issue.path[0] === "excludeInboundPorts" ? issue.path.slice(0, 2) : issue.path;
    return { ok: false, field: fieldPath(path), message: issue.message };
  }
  const { excludeInboundPorts, netnsPath, ...rest } = parsed.data;
  return {
    ok: true,
    value: {
      ...rest,
      ...(netnsPath !== undefined ? { netnsPath } : {}),
      ...(excludeInboundPorts && excludeInboundPorts.length > 0 ? { excludeInboundPorts } : {}),
    },
  };
}
