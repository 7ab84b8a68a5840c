/**
 * Test helper like nats.js's `nst`: a real nats-server on a free loopback port with a temporary
 * store, SIGKILLed by PID, restartable on the same store, removed by cleanup().
 */
import { NatsServer } from "../../src/runtime/dev/nats-server.js";
import { resolveConfig, type Config } from "../../src/runtime/config.js";
import { memoryLogger } from "../../src/runtime/logger.js";
import { startRuntime, type Runtime } from "../../src/runtime/runtime.js";
import { ManagerNode } from "../../src/actors/manager.js";

export { NatsServer };

export async function startNats(): Promise<NatsServer> {
  return NatsServer.start();
}

/** Settings tuned for tests: short timeouts so faults heal in seconds. */
export const FAST: Partial<Record<keyof Config, number | string>> = {
  heartbeatMs: 100,
  leaseMs: 600,
  backupMs: 100,
  serverHeartbeatMs: 100,
  serverTimeoutMs: 600,
  ackTimeoutMs: 500,
};

export async function runtimeFor(ns: NatsServer, over: Partial<Record<keyof Config, unknown>> = {}, name = "test"): Promise<Runtime & { logs: () => Array<Record<string, unknown>> }> {
  const { logger, lines } = memoryLogger("debug");
  const config = resolveConfig(FAST as never, { natsUrls: [ns.url], ...over } as never);
  const rt = await startRuntime(config, { logger, name });
  return Object.assign(rt, { logs: lines });
}

/** A manager node on this runtime, started and primary (the in-process tests' usual first step). */
export async function primaryManager(rt: Runtime): Promise<ManagerNode> {
  const mgr = new ManagerNode(rt);
  mgr.start();
  await mgr.waitPrimary();
  return mgr;
}

export function fastEnv(url: string): Record<string, string> {
  return {
    NATS_URL: url,
    TANDEM_HEARTBEAT_MS: String(FAST.heartbeatMs),
    TANDEM_LEASE_MS: String(FAST.leaseMs),
    TANDEM_BACKUP_MS: String(FAST.backupMs),
    TANDEM_SERVER_HEARTBEAT_MS: String(FAST.serverHeartbeatMs),
    TANDEM_SERVER_TIMEOUT_MS: String(FAST.serverTimeoutMs),
    TANDEM_ACK_TIMEOUT_MS: String(FAST.ackTimeoutMs),
    TANDEM_LOG_JSON: "1",
  };
}

export async function eventually<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 15_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
