/**
 * A NATS cluster on loopback: N nats-server processes with JetStream, distinct client and
 * route ports, a store directory each, every one routing to the others. For `tandem nats
 * --cluster 3`, local use and the cluster tests; each server can be SIGKILLed and restarted on
 * its own store. Tandem runs no consensus of its own: JetStream's Raft is the engine.
 */
import { withBackoff } from "../backoff.js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { ErrorCode, TandemError } from "../errors.js";
import { freePorts, NatsServer } from "./nats-server.js";

export interface NatsClusterOptions {
  size: number;
  /** Parent of the per-server store directories; default a new temporary directory. */
  dir?: string;
  name?: string;
  /** Extra arguments for every server (e.g. `-c` a config with users). */
  args?: string[];
  /** Fixed client ports (default: free ports). */
  ports?: number[];
  /** Config file text for every server (fsync policy, users: see serverConfig). */
  config?: string | null;
}

export class NatsCluster {
  private constructor(
    readonly servers: NatsServer[],
    /** Server names (`-n`), as JetStream reports stream leaders. */
    readonly names: string[],
    private readonly dir: string,
    private readonly ownsDir: boolean,
  ) {}

  static async start(opts: NatsClusterOptions): Promise<NatsCluster> {
    if (!Number.isInteger(opts.size) || opts.size < 1 || opts.size > 7) {
      throw new TandemError(ErrorCode.Config, `cluster size must be 1..7 (got ${opts.size})`);
    }
    const ownsDir = opts.dir === undefined;
    const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), "tandem-cluster-")));
    const name = opts.name ?? "tandem";
    // Route and client ports picked together, all distinct: picked one by one, a client port
    // could be a route port another server of the cluster was about to bind.
    const ports = await freePorts(opts.size * 2);
    const routePorts = ports.slice(0, opts.size);
    const clientPorts = ports.slice(opts.size);
    const names = routePorts.map((_, i) => `${name}-${i + 1}`);
    const routes = routePorts.map((p) => `nats://127.0.0.1:${p}`).join(",");
    const servers = await Promise.all(
      routePorts.map((rp, i) =>
        NatsServer.start({
          storeDir: join(dir, names[i]!),
          port: opts.ports?.[i] || clientPorts[i]!,
          args: ["-n", names[i]!, "--cluster_name", name, "--cluster", `nats://127.0.0.1:${rp}`, "--routes", routes, ...(opts.args ?? [])],
          ...(opts.config ? { config: opts.config } : {}),
        }),
      ),
    );
    return new NatsCluster(servers, names, dir, ownsDir);
  }

  get urls(): string[] {
    return this.servers.map((s) => s.url);
  }

  /** Comma-separated, as NATS_URL takes it. */
  get url(): string {
    return this.urls.join(",");
  }

  indexOf(serverName: string): number {
    return this.names.indexOf(serverName);
  }

  /** Resolves once JetStream answers (the cluster elected its meta leader). */
  async waitReady(timeoutMs = 30_000, auth: { user?: string; pass?: string } = {}): Promise<void> {
    const nc = await connect({ servers: this.urls, ...auth });
    try {
      await withBackoff(async () => (await jetstreamManager(nc, { timeout: 2000 })).getAccountInfo(), { initialMs: 250, factor: 1, maxMs: 250, forMs: timeoutMs }).catch((err: unknown) => {
        throw new TandemError(ErrorCode.NatsServer, `the NATS cluster's JetStream is not ready after ${timeoutMs} ms`, { cause: err });
      });
    } finally {
      await nc.close();
    }
  }

  /** SIGKILL server i; its store stays for restart(i). */
  async kill(i: number): Promise<void> {
    await this.servers[i]!.stop();
  }

  async restart(i: number): Promise<void> {
    await this.servers[i]!.restart();
  }

  async shutdown(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.shutdown()));
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.stop()));
    if (this.ownsDir) await rm(this.dir, { recursive: true, force: true });
  }
}
