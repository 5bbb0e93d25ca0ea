// Small helpers shared by the agent's two HTTP servers (enrollment socket and admin port).
// JSON answers and bounded bodies come from api/http-json.ts, as for the controller.

import type { IncomingMessage, ServerResponse } from "node:http";
import { BodyTooLarge, readBody, sendJson } from "../../api/http-json.ts";

export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field: string | undefined;
  constructor(status: number, code: string, message: string, field?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** Errors become responses here and only here. */
export function sendError(res: ServerResponse, err: unknown): void {
  const e = err instanceof HttpError ? err : new HttpError(500, "INTERNAL", (err as Error).message);
  sendJson(res, e.status, { error: { code: e.code, message: e.message, ...(e.field ? { field: e.field } : {}) } });
}

/** Reads a JSON body of at most `limit` bytes. */
export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  if (!/^application\/json\b/.test(req.headers["content-type"] ?? "")) {
    throw new HttpError(415, "UNSUPPORTED_MEDIA_TYPE", "content-type must be application/json");
  }
  let body: Buffer;
  try {
    body = await readBody(req, limit);
  } catch (err) {
    throw err instanceof BodyTooLarge ? new HttpError(413, "BODY_TOO_LARGE", `body exceeds ${limit} bytes`) : err;
  }
  try {
    return JSON.parse(body.toString("utf8"));
  } catch (err) {
    throw new HttpError(400, "BAD_JSON", `body is not JSON: ${(err as Error).message}`);
  }
}
