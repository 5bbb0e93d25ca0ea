// JSON over HTTP for every nodemesh server (the agent's enrollment and admin servers, the
// controller's REST API and webhook): one way to answer with JSON and one way to read a bounded
// body. Each server turns a refusal into its own error shape.

import type { IncomingMessage, ServerResponse } from "node:http";

export const JSON_TYPE = "application/json";

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { ...headers, "content-type": JSON_TYPE, "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** A body larger than the reader's limit. */
export class BodyTooLarge extends Error {
  constructor(limit: number) {
    super(`the body exceeds ${limit} bytes`);
  }
}

/**
 * The request's body, at most `limit` bytes. Past it, BodyTooLarge, without reading the rest (a
 * declared Content-Length is checked before any byte): closing is cheaper than draining.
 */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(req.headers["content-length"] ?? 0) > limit) throw new BodyTooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new BodyTooLarge(limit);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
