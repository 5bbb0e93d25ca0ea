// Reading REST request bodies: JSON objects of a media type, with the limits a public API needs.

import type { IncomingMessage } from "node:http";
import { BodyTooLarge, readBody } from "../../api/http-json.ts";
import { RestError } from "./errors.ts";

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
/** No resource nests this deep; refusing deeper bodies keeps recursive walks (merge patch) off the stack limit. */
export const MAX_JSON_DEPTH = 32;

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
  let bytes: Buffer;
  try {
    bytes = await readBody(req, limit);
  } catch (err) {
    if (!(err instanceof BodyTooLarge)) throw err;
    // The rest of an oversized body is never read: the connection closes.
    throw new RestError("RequestEntityTooLarge", err.message, {}, { connection: "close" });
  }
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString("utf8"));
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
