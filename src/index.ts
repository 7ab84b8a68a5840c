/**
 * Tandem's public API. Everything not named here is internal.
 */
export { TandemClient, ClientSession } from "./actors/client.js";
export type { OpenOptions, RequestOptions, Response, PersistedSession } from "./actors/client.js";
export { TandemServer } from "./actors/server.js";
export type { Handler, ServerOptions, WorkContext, WorkRequest } from "./actors/server.js";
export { ManagerNode } from "./actors/manager.js";
export type { ManagerStatus } from "./actors/manager.js";
export { TandemError, ErrorCode, TerminalError, RetryableError } from "./runtime/errors.js";
export { listDeadLetters, getDeadLetter, replayDeadLetter, purgeDeadLetters, replayRecord, bodyOf } from "./actors/deadLetters.js";
export type { DeadLetter, DeadLetterFilter, ReplayRecord, ReplayOutcome } from "./actors/deadLetters.js";
export { DEFAULT_RETRY } from "./machines/retryPolicy.js";
export type { RetryPolicy } from "./machines/retryPolicy.js";
export { resolveConfig, configFromEnv, defaultConfig, DEFAULTS } from "./runtime/config.js";
export type { Config } from "./runtime/config.js";
export { startRuntime } from "./runtime/runtime.js";
export type { Runtime } from "./runtime/runtime.js";
export type { Metrics, ServiceMetrics } from "./runtime/metrics.js";
export type { Health, Readiness, MetricsEndpoint } from "./runtime/health.js";
export { createLogger } from "./runtime/logger.js";
export { NatsServer } from "./runtime/dev/nats-server.js";
export type { HedgeOptions, RetryOptions } from "./machines/types.js";
export type { HedgeRecord } from "./actors/hedgeProxy.js";
export type { SessionInfo, TookRecord } from "./actors/sessionInfo.js";
export { FenceLost } from "./runtime/stores/store.js";
export type { FencedStore, FenceId, FenceOutcome } from "./runtime/stores/store.js";
export { KvStore } from "./runtime/stores/store-kv.js";
export type { KvTx, KvStoreOptions } from "./runtime/stores/store-kv.js";
export { PgStore } from "./runtime/stores/store-pg.js";
export type { PgStoreOptions } from "./runtime/stores/store-pg.js";

import { configFromEnv, resolveConfig, type Config } from "./runtime/config.js";
import { createLogger, type Logger } from "./runtime/logger.js";
import { startRuntime, type Runtime } from "./runtime/runtime.js";

/**
 * Connect to Tandem: NATS from `natsUrls` (or NATS_URL), or an embedded nats-server when none
 * is given. Settings not passed come from TANDEM_* environment variables, then the defaults.
 */
export async function connect(settings: Partial<Config> & { logger?: Logger; name?: string } = {}): Promise<Runtime> {
  const { logger, name, ...rest } = settings;
  const config = resolveConfig(configFromEnv(), rest);
  const log = logger ?? createLogger({ level: config.logLevel });
  return startRuntime(config, { logger: log, name: name ?? `tandem-${process.pid}` });
}
