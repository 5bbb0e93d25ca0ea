// The node agent's control thread: it owns the enrollment socket, the admin listener, the
// service table and the data-plane workers, and wires them together. It forwards no traffic.

import type { Server } from "node:http";
import pino, { type Logger } from "pino";
import { startAdminServer } from "./control/admin.ts";
import { startEnrollmentServer } from "./control/enrollment-server.ts";
import { PodRegistry } from "./control/pods.ts";
import { loadServiceFile, type VersionedTable } from "./control/service-source.ts";
import { BALANCER_SLOTS, WorkerPool } from "./control/workers.ts";
import { BalancerSlots } from "./dataplane/snapshot.ts";

export interface AgentOptions {
  nodeName: string;
  enrollmentSocket: string;
  stateDir: string;
  servicesFile: string | undefined;
  adminAddress: string;
  adminPort: number;
  workers: number;
  connectTimeoutMs: number;
  logLevel: string;
}

export class Agent {
  readonly log: Logger;
  private readonly opts: AgentOptions;
  private readonly slots = new BalancerSlots(BALANCER_SLOTS);
  private pool!: WorkerPool;
  private pods!: PodRegistry;
  private servers: Server[] = [];
  private table: VersionedTable = { version: "", table: { services: [] } };
  private started = false;

  constructor(opts: AgentOptions) {
    this.opts = opts;
    this.log = pino({ level: opts.logLevel, base: { component: "agent", node: opts.nodeName } });
  }

  async start(): Promise<void> {
    const o = this.opts;
    this.pool = await WorkerPool.start(o.workers, { connectTimeoutMs: o.connectTimeoutMs, logLevel: o.logLevel });
    if (o.servicesFile) this.applyTable(loadServiceFile(o.servicesFile));
    else this.applyTable({ version: "empty", table: { services: [] } });
    this.pods = new PodRegistry(o.stateDir, this.pool, this.log);
    await this.pods.restore();
    this.servers.push(await startEnrollmentServer(o.enrollmentSocket, this.pods));
    this.servers.push(
      await startAdminServer(o.adminAddress, o.adminPort, {
        node: o.nodeName,
        ready: () => this.started,
        workers: o.workers,
        configVersion: () => this.table.version,
        configSource: o.servicesFile ? `file:${o.servicesFile}` : "none",
        pods: () => this.pods.list(),
        config: () => this.table,
        workerMetrics: () => this.pool.metrics(),
      }),
    );
    this.started = true;
    this.log.info(
      { workers: o.workers, socket: o.enrollmentSocket, admin: `${o.adminAddress}:${o.adminPort}` },
      "agent ready",
    );
  }

  /** Re-reads the service file; an invalid file leaves the current table in force. */
  reloadServices(): void {
    if (!this.opts.servicesFile) return;
    try {
      this.applyTable(loadServiceFile(this.opts.servicesFile));
    } catch (err) {
      this.log.error({ err: (err as Error).message }, "service table rejected; keeping the previous one");
    }
  }

  private applyTable(table: VersionedTable): void {
    this.table = table;
    this.pool.broadcastSnapshot({ version: table.version, table: table.table, slots: this.slots.assign(table.table) });
    this.log.info({ version: table.version, services: table.table.services.length }, "service table applied");
  }

  /** Stops listening. Enrolled pods stay recorded so a restarted agent takes them back. */
  async stop(): Promise<void> {
    this.started = false;
    await Promise.all(this.servers.map((s) => new Promise((resolve) => s.close(resolve))));
    await this.pool?.stop();
  }
}
