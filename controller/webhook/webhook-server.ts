// The injection webhook: AdmissionReview v1 over HTTPS on POST /inject. Each review is answered
// on its own: a malformed one gets a clear refusal (HTTP 400 when it has no uid to answer,
// `allowed: false` with a 400 status when it has one) and never disturbs the others.
//
// TLS: tls.crt and tls.key from a directory (the Secret the leader writes, mounted), re-read
// every `reloadIntervalMs` (2 s) so a rotated certificate is served without a restart. The server
// listens once the files exist.

import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { JSON_TYPE, sendJson } from "../../api/http-json.ts";
import { RestError, toRestError, toStatus } from "../rest/errors.ts";
import { isPlainObject, readJsonObject } from "../rest/http-io.ts";
import { type AdmittedPod, decideInjection, type InjectionConfig, InjectionError } from "./inject.ts";

export const DEFAULT_WEBHOOK_PORT = 9443;
export const INJECT_PATH = "/inject";
/** The API server sends at most a few MB (an object and its old version); pods are far smaller. */
const MAX_REVIEW_BYTES = 4 * 1024 * 1024;
const ADMISSION_API_VERSION = "admission.k8s.io/v1";

export interface WebhookOptions {
  host: string;
  port: number;
  tlsDir: string;
  /** The injection's image and command; a function so the image can be learnt after start. */
  injection: () => InjectionConfig;
  /** The annotations of a Namespace; throws when it cannot be read (the pod is then refused). */
  namespaceAnnotations: (name: string) => Promise<Record<string, string>>;
  log: Logger;
  reloadIntervalMs?: number;
}

interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  patchType?: "JSONPatch";
  patch?: string;
  status?: { code: number; message: string; reason?: string };
  warnings?: string[];
}

export class WebhookServer {
  readonly #o: WebhookOptions;
  readonly #server: Server;
  #certPem = "";
  #reloader?: NodeJS.Timeout;
  #listening?: Promise<void>;

  constructor(options: WebhookOptions) {
    this.#o = options;
    this.#server = createServer({}, (req, res) => {
      this.#handle(req, res).catch((err) => {
        const e = toRestError(err);
        if (e.reason === "InternalError") this.#o.log.error({ err }, "webhook request failed");
        if (!res.headersSent) sendJson(res, e.code, toStatus(e), e.headers);
        else res.destroy();
      });
    });
    this.#server.on("tlsClientError", (err) => this.#o.log.debug({ err: err.message }, "webhook TLS handshake failed"));
  }

  /** Starts reading the certificate; resolves once it is served (or right away if `wait` is false). */
  async start(wait = true): Promise<void> {
    this.#listening = new Promise<void>((resolve, reject) => {
      const tryLoad = () => {
        if (!this.#loadCertificate()) return;
        if (this.#server.listening) return;
        this.#server.once("error", reject);
        this.#server.listen(this.#o.port, this.#o.host, () => {
          this.#o.log.info({ port: this.port }, "injection webhook listening");
          resolve();
        });
      };
      tryLoad();
      // Kubelet refreshes a mounted Secret within about a minute; two small reads every 2 s cost nothing.
      this.#reloader = setInterval(tryLoad, this.#o.reloadIntervalMs ?? 2_000);
      this.#reloader.unref();
    });
    if (wait) await this.#listening;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo | null)?.port ?? 0;
  }

  async close(): Promise<void> {
    clearInterval(this.#reloader);
    if (!this.#server.listening) return;
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Reads tls.crt/tls.key; true when a certificate is in force. A broken pair keeps the last good one. */
  #loadCertificate(): boolean {
    let cert: string;
    let key: string;
    try {
      cert = readFileSync(`${this.#o.tlsDir}/tls.crt`, "utf8");
      key = readFileSync(`${this.#o.tlsDir}/tls.key`, "utf8");
    } catch {
      if (!this.#certPem) this.#o.log.info({ dir: this.#o.tlsDir }, "webhook certificate not there yet");
      return this.#certPem !== "";
    }
    if (cert === this.#certPem) return true;
    try {
      this.#server.setSecureContext({ cert, key });
    } catch (err) {
      this.#o.log.error({ err: (err as Error).message, dir: this.#o.tlsDir }, "webhook certificate refused");
      return this.#certPem !== "";
    }
    this.#o.log.info({ dir: this.#o.tlsDir, reload: this.#certPem !== "" }, "webhook certificate loaded");
    this.#certPem = cert;
    return true;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "").split("?")[0];
    if (path !== INJECT_PATH)
      throw new RestError("NotFound", `no webhook at ${path}; the injector is POST ${INJECT_PATH}`);
    if (req.method !== "POST")
      throw new RestError("MethodNotAllowed", `${INJECT_PATH} takes POST`, {}, { allow: "POST" });
    const review = await readJsonObject(req, JSON_TYPE, MAX_REVIEW_BYTES);
    const request = review.request;
    if (review.apiVersion !== ADMISSION_API_VERSION || review.kind !== "AdmissionReview")
      return refuseUnanswerable(res, `expected an AdmissionReview of ${ADMISSION_API_VERSION}`);
    if (!isPlainObject(request) || typeof request.uid !== "string" || request.uid === "")
      return refuseUnanswerable(res, "the AdmissionReview has no request.uid");
    const response = await this.#review(request as Record<string, unknown> & { uid: string });
    sendJson(res, 200, { apiVersion: ADMISSION_API_VERSION, kind: "AdmissionReview", response });
  }

  async #review(request: Record<string, unknown> & { uid: string }): Promise<AdmissionResponse> {
    const { uid } = request;
    const refuse = (message: string): AdmissionResponse => ({
      uid,
      allowed: false,
      status: { code: 400, reason: "BadRequest", message: `nodemesh injector: ${message}` },
    });
    const resource = request.resource as { group?: string; resource?: string } | undefined;
    if (resource?.group !== "" || resource?.resource !== "pods" || request.subResource)
      return refuse(`only pods are handled here, not ${JSON.stringify(resource)}`);
    if (request.operation !== "CREATE") return { uid, allowed: true };
    const pod = request.object;
    const namespace = request.namespace;
    if (!isPlainObject(pod)) return refuse("request.object is not a Pod");
    if (typeof namespace !== "string" || namespace === "") return refuse("request.namespace is missing");
    const meta = pod.metadata;
    if (meta !== undefined && !isPlainObject(meta)) return refuse("metadata is not an object");
    for (const field of ["labels", "annotations"] as const) {
      const map = (meta as Record<string, unknown> | undefined)?.[field];
      if (map !== undefined && (!isPlainObject(map) || Object.values(map).some((v) => typeof v !== "string")))
        return refuse(`metadata.${field} must map strings to strings`);
    }
    const podName = `${namespace}/${(meta?.name ?? meta?.generateName ?? "?") as string}`;
    let annotations: Record<string, string>;
    try {
      annotations = await this.#o.namespaceAnnotations(namespace);
    } catch (err) {
      // Not knowing whether the namespace is opted in must not let a pod start un-intercepted.
      this.#o.log.warn({ namespace, err: (err as Error).message }, "namespace unknown: pod refused");
      return refuse(`cannot read namespace ${namespace}: ${(err as Error).message}`);
    }
    try {
      const result = decideInjection(pod as AdmittedPod, annotations, this.#o.injection());
      if (!result.injected) {
        this.#o.log.debug({ pod: podName, reason: result.reason }, "not injected");
        return { uid, allowed: true };
      }
      this.#o.log.info({ pod: podName }, "init container injected");
      return {
        uid,
        allowed: true,
        patchType: "JSONPatch",
        patch: Buffer.from(JSON.stringify(result.patch)).toString("base64"),
      };
    } catch (err) {
      if (!(err instanceof InjectionError)) throw err;
      this.#o.log.warn({ pod: podName, err: err.message }, "pod refused");
      return refuse(err.message);
    }
  }
}

function refuseUnanswerable(res: ServerResponse, message: string): void {
  sendJson(res, 400, toStatus(new RestError("BadRequest", message)));
}
