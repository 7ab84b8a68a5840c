/**
 * Health of a process, served with its metrics on `--metrics-port`:
 * - `/healthz`: the process runs and its event loop answers (200), whatever it waits for;
 * - `/readyz`: 200 only when every role of the process is ready and NATS is connected; else 503
 *   with what each role waits for. Ready means: a manager is primary or a standby whose backup
 *   is current; a server is registered with the primary; a client has its sessions open.
 * - `/metrics`: Prometheus text.
 * Bodies are JSON (but /metrics), so that a person with curl reads why.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Metrics } from "./metrics.js";

export interface Readiness {
  ready: boolean;
  /** What it waits for, or what it is, in words. */
  why: string;
}

export class Health {
  private readonly checks = new Map<string, () => Readiness>();

  /** A role's readiness check under a name ("manager", "server s1", ...); returns its removal. */
  add(name: string, check: () => Readiness): () => void {
    this.checks.set(name, check);
    return () => {
      if (this.checks.get(name) === check) this.checks.delete(name);
    };
  }

  /** Every check's answer; ready when all are (and there is at least one, or only NATS counts). */
  report(natsConnected: boolean): { ready: boolean; checks: Record<string, Readiness> } {
    const checks: Record<string, Readiness> = { nats: natsConnected ? { ready: true, why: "connected" } : { ready: false, why: "not connected to NATS (reconnecting)" } };
    for (const [name, check] of this.checks) {
      try {
        checks[name] = check();
      } catch (err) {
        checks[name] = { ready: false, why: `its check failed: ${(err as Error).message}` };
      }
    }
    return { ready: Object.values(checks).every((c) => c.ready), checks };
  }
}

export interface MetricsEndpoint {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** Serve /metrics, /healthz and /readyz on 127.0.0.1:port (0: a free one) until closed. */
export async function serveMetrics(metrics: Metrics, health: Health, natsConnected: () => boolean, port: number, host = "127.0.0.1"): Promise<MetricsEndpoint> {
  metrics.withProcessMetrics();
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const json = (code: number, body: unknown) => {
      res.writeHead(code, { "content-type": "application/json" });
      res.end(`${JSON.stringify(body)}\n`);
    };
    if (path === "/metrics") {
      metrics.render().then(
        (text) => {
          res.writeHead(200, { "content-type": metrics.contentType });
          res.end(text);
        },
        (err: Error) => json(500, { error: err.message }),
      );
    } else if (path === "/healthz") {
      json(200, { ok: true, pid: process.pid, uptimeSeconds: Math.round(process.uptime()) });
    } else if (path === "/readyz") {
      const r = health.report(natsConnected());
      json(r.ready ? 200 : 503, r);
    } else {
      json(404, { error: "not found", paths: ["/metrics", "/healthz", "/readyz"] });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    port: actual,
    url: `http://${host}:${actual}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
