// The REST API's error table. Every refusal has a stable Kubernetes reason with one HTTP code;
// code anywhere in the server throws a RestError (or lets a store error through), and
// `toStatus` is the one place where an error becomes the Kubernetes `Status` a client receives.

import { StoreUnavailableError } from "../store/memory-store.ts";
import { StoreAlreadyExistsError, StoreConflictError, StoreNotFoundError, StoreReadOnlyError } from "../store/store.ts";

export const REST_ERRORS = {
  BadRequest: 400, // body is not JSON, not an object, or a query is unusable
  Unauthorized: 401, // no bearer token, or an unknown one
  Forbidden: 403, // the token's role may not do this
  NotFound: 404, // unknown path, plural or object
  MethodNotAllowed: 405, // the path exists, the method does not
  AlreadyExists: 409, // create of an existing name
  Conflict: 409, // stale resourceVersion
  RequestEntityTooLarge: 413, // body over the limit
  UnsupportedMediaType: 415, // content-type not accepted for the verb
  Invalid: 422, // the object fails validation; `details.causes` names every bad field
  TooManyRequests: 429, // too many watches open, for this client or in all
  InternalError: 500, // a bug: logged, message not shown
  ServiceUnavailable: 503, // the store refuses writes (closed, or a failed write awaits a restart); Alertmanager does not answer
} as const;

export type Reason = keyof typeof REST_ERRORS;

/** Store errors are part of the table: each maps to one reason. */
const STORE_ERRORS: ReadonlyArray<readonly [new (...args: never[]) => Error, Reason]> = [
  [StoreNotFoundError, "NotFound"],
  [StoreAlreadyExistsError, "AlreadyExists"],
  [StoreConflictError, "Conflict"],
  [StoreUnavailableError, "ServiceUnavailable"],
  [StoreReadOnlyError, "MethodNotAllowed"],
];

export interface StatusCause {
  /** Path of the bad field, e.g. `spec.ports[1].port`. */
  field: string;
  message: string;
  /** A Kubernetes cause type, e.g. FieldValueInvalid, FieldValueRequired. */
  reason: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  causes?: StatusCause[];
}

export interface Status {
  kind: "Status";
  apiVersion: "v1";
  metadata: Record<string, never>;
  status: "Failure";
  message: string;
  reason: Reason;
  code: number;
  details: StatusDetails;
}

export class RestError extends Error {
  readonly reason: Reason;
  readonly details: StatusDetails;
  /** Extra response headers, e.g. Allow on 405, WWW-Authenticate on 401. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(reason: Reason, message: string, details: StatusDetails = {}, headers: Record<string, string> = {}) {
    super(message);
    this.reason = reason;
    this.details = details;
    this.headers = headers;
  }

  get code(): number {
    return REST_ERRORS[this.reason];
  }
}

/** Any thrown value as a RestError; an unknown one is an InternalError whose message stays in the log. */
export function toRestError(err: unknown): RestError {
  if (err instanceof RestError) return err;
  const storeReason = STORE_ERRORS.find(([type]) => err instanceof type)?.[1];
  if (storeReason) return new RestError(storeReason, (err as Error).message);
  return new RestError("InternalError", "internal error");
}

/** The Status for an error; `context` (the kind and name the request was about) fills the details. */
export function toStatus(err: RestError, context: StatusDetails = {}): Status {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message: err.message,
    reason: err.reason,
    code: err.code,
    details: { ...context, ...err.details },
  };
}
