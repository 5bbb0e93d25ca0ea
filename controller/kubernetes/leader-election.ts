// Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it:
// the holder renews every `retryPeriodMs`; another replica takes over only once it has seen the
// same record unchanged for `leaseDurationMs` on its own clock (no trust in the holder's clock);
// a holder that cannot renew for `renewDeadlineMs` stops leading before anyone may take over.
// Writes are compare-and-swap on resourceVersion, so two replicas never both win.
//
// Only the leader writes status and issues the webhook certificate; every replica serves agents,
// REST and the webhook.

import type { Logger } from "pino";
import { KubeApiError, type KubeClient } from "./kube-client.ts";

export interface LeaderElectionOptions {
  client: KubeClient;
  namespace: string;
  name: string;
  identity: string;
  log: Logger;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

interface Lease {
  apiVersion: "coordination.k8s.io/v1";
  kind: "Lease";
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: LeaseSpec;
}

/** Kubernetes MicroTime: RFC 3339 with microseconds. */
function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

export class LeaderElection {
  readonly #o: Required<Omit<LeaderElectionOptions, "log" | "client">> & Pick<LeaderElectionOptions, "log" | "client">;
  #leading = false;
  #timer?: NodeJS.Timeout;
  #stopped = false;
  /** The record last seen and when (local clock): the basis of expiry. */
  #observed?: { record: string; at: number };
  #lastRenew = 0;
  #inflight?: Promise<unknown>;

  constructor(options: LeaderElectionOptions) {
    this.#o = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000, ...options };
  }

  get leading(): boolean {
    return this.#leading;
  }

  start(): void {
    const tick = async () => {
      if (this.#stopped) return;
      this.#inflight = this.#tryAcquireOrRenew().catch((err) =>
        this.#o.log.warn({ err: (err as Error).message, lease: this.#o.name }, "lease request failed"),
      );
      await this.#inflight;
      if (this.#stopped) return;
      if (this.#leading && Date.now() - this.#lastRenew > this.#o.renewDeadlineMs) this.#setLeading(false);
      this.#timer = setTimeout(tick, this.#o.retryPeriodMs);
    };
    void tick();
  }

  /** Stops; a leader releases the Lease so another replica takes over at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#inflight; // a renewal on its way must not make us leader again
    if (!this.#leading) return;
    this.#setLeading(false);
    try {
      const lease = await this.#get();
      if (lease?.spec.holderIdentity === this.#o.identity)
        await this.#put({ ...lease, spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1 } });
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, "could not release the lease");
    }
  }

  get #path(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.#o.namespace}/leases`;
  }

  async #get(): Promise<Lease | undefined> {
    try {
      return await this.#o.client.get<Lease>(`${this.#path}/${this.#o.name}`);
    } catch (err) {
      if (err instanceof KubeApiError && err.code === 404) return undefined;
      throw err;
    }
  }

  #put(lease: Lease): Promise<Lease> {
    return this.#o.client.request<Lease>("PUT", `${this.#path}/${this.#o.name}`, lease);
  }

  async #tryAcquireOrRenew(): Promise<void> {
    const now = new Date();
    const mine: LeaseSpec = {
      holderIdentity: this.#o.identity,
      leaseDurationSeconds: Math.ceil(this.#o.leaseDurationMs / 1000),
      renewTime: microTime(now),
    };
    const lease = await this.#get();
    if (!lease) {
      await this.#o.client.request("POST", this.#path, {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { name: this.#o.name, namespace: this.#o.namespace },
        spec: { ...mine, acquireTime: microTime(now), leaseTransitions: 0 },
      });
      this.#renewed();
      return;
    }
    const record = JSON.stringify(lease.spec);
    if (this.#observed?.record !== record) this.#observed = { record, at: Date.now() };
    const holder = lease.spec.holderIdentity;
    const heldByMe = holder === this.#o.identity;
    const expired = !holder || Date.now() - this.#observed.at > (lease.spec.leaseDurationSeconds ?? 15) * 1000;
    if (!heldByMe && !expired) {
      if (this.#leading) this.#setLeading(false);
      return;
    }
    const spec: LeaseSpec = heldByMe
      ? { ...lease.spec, ...mine }
      : { ...mine, acquireTime: microTime(now), leaseTransitions: (lease.spec.leaseTransitions ?? 0) + 1 };
    // resourceVersion makes this a compare-and-swap: a 409 means another replica got there first.
    await this.#put({ ...lease, spec });
    this.#renewed();
  }

  #renewed(): void {
    if (this.#stopped) return;
    this.#lastRenew = Date.now();
    this.#observed = undefined;
    if (!this.#leading) this.#setLeading(true);
  }

  #setLeading(leading: boolean): void {
    if (this.#leading === leading) return;
    this.#leading = leading;
    this.#o.log.info(
      { lease: `${this.#o.namespace}/${this.#o.name}`, identity: this.#o.identity, leading },
      leading ? "leading" : "not leading",
    );
    if (leading) this.#o.onStartedLeading();
    else this.#o.onStoppedLeading();
  }
}
