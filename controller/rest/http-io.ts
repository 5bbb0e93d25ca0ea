// Reading request bodies and writing JSON responses, with the limits a public API needs.

import type { IncomingMessage, ServerResponse } from "node:http";
import { RestError } from "./errors.ts";

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
/** No resource nests this deep; refusing deeper bodies keeps recursive walks (merge patch) off the stack limit. */
export const MAX_JSON_DEPTH = 32;

export const JSON_TYPE = "application/json";
export const MERGE_PATCH_TYPE = "application/merge-patch+json";

/** The media type without parameters (`application/json; charset=utf-8` → `application/json`). */
function mediaType(req: IncomingMessage): string {
  return (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
}

/** Reads a JSON object body of `contentType`, at most `limit` bytes. */
export async function readJsonObject(
  req: IncomingMessage,
  contentType: string,
  limit: number,
): Promise<Record<string, unknown>> {
  const actual = mediaType(req);
  if (actual !== contentType) {
    throw new RestError("UnsupportedMediaType", `content-type must be ${contentType}, not ${actual || "(none)"}`);
  }
  // The rest of an oversized body is never read: closing the connection is cheaper than draining it.
  const tooLarge = () =>
    new RestError("RequestEntityTooLarge", `the body exceeds ${limit} bytes`, {}, { connection: "close" });
  if (Number(req.headers["content-length"] ?? 0) > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch (err) {
    throw new RestError("BadRequest", `the body is not valid JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(body)) throw new RestError("BadRequest", "the body must be a JSON object");
  if (nestsDeeperThan(body, MAX_JSON_DEPTH)) {
    throw new RestError("BadRequest", `the body nests deeper than ${MAX_JSON_DEPTH} levels`);
  }
  return body;
}

/** Recursion is bounded by `limit`, whatever the input. */
function nestsDeeperThan(value: unknown, limit: number): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (limit === 0) return true;
  return Object.values(value).some((child) => nestsDeeperThan(child, limit - 1));
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function sendJson(
  res: ServerResponse,
  code: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(code, { ...headers, "content-type": JSON_TYPE, "content-length": Buffer.byteLength(text) });
  res.end(text);
}
