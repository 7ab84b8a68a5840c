/**
 * Idempotent provisioning of the streams and buckets of docs/design.md §2. Safe to run from every
 * process at start: existing resources are kept (and their limits updated), missing ones made.
 */
import {
  DiscardPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { JsApiCode } from "./errors.js";
import type { Names } from "./wire.js";

export interface ProvisionOptions {
  replicas: number;
  duplicateWindowMs: number;
  /** Bytes TANDEM_DLQ may hold (default 256 MiB); the oldest entries are discarded past it. */
  dlqMaxBytes?: number;
  /** Bind to existing buckets without creating or checking them (users without those rights). */
  bindOnly?: boolean;
}

export interface Buckets {
  sessions: KV;
  restart: KV;
  ctl: KV;
  fence: KV;
}

const ms = (n: number) => n * 1_000_000;

export function streamConfigs(names: Names, opts: ProvisionOptions): Array<Partial<StreamConfig> & { name: string }> {
  const common = {
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    num_replicas: opts.replicas,
    discard: DiscardPolicy.Old,
  };
  return [
    { ...common, name: names.streamReq, subjects: [names.reqAll], duplicate_window: ms(opts.duplicateWindowMs) },
    { ...common, name: names.streamResp, subjects: [names.respAll], duplicate_window: ms(opts.duplicateWindowMs) },
    {
      ...common,
      name: names.streamDlq,
      subjects: [names.dlqAll],
      duplicate_window: ms(60_000),
      max_age: ms(7 * 24 * 3600 * 1000),
      max_msgs: 1_000_000,
      // A byte bound too: anyone may write here, and one writer once put 176 MB in 0.9 s.
      max_bytes: opts.dlqMaxBytes ?? 256 * 1024 * 1024,
    },
  ];
}

export async function provisionStreams(jsm: JetStreamManager, names: Names, opts: ProvisionOptions): Promise<void> {
  for (const cfg of streamConfigs(names, opts)) {
    try {
      const info = await jsm.streams.info(cfg.name);
      const want = { ...info.config, ...cfg };
      if (JSON.stringify(want) !== JSON.stringify(info.config)) await jsm.streams.update(cfg.name, want);
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === JsApiCode.StreamNotFound) {
        try {
          await jsm.streams.add(cfg);
        } catch (e) {
          // Another process created it in between: fine.
          if (!(e instanceof JetStreamApiError)) throw e;
          await jsm.streams.info(cfg.name);
        }
      } else {
        throw err;
      }
    }
  }
}

export async function provisionBuckets(nc: NatsConnection, names: Names, opts: ProvisionOptions): Promise<Buckets> {
  const kvm = new Kvm(nc);
  // Reads go to each bucket's stream leader, not "direct" to any replica: on a cluster a
  // replica that lags serves old values, and a standby reading an old lease revision takes it
  // for a dead primary (seen on a three-server cluster: a standby trying to take over every
  // lease period from a healthy primary).
  const open = async (name: string, history: number): Promise<KV> => {
    if (opts.bindOnly) return kvm.open(name, { allow_direct: false, bindOnly: true });
    try {
      return await kvm.create(name, { replicas: opts.replicas, history, storage: StorageType.File, allow_direct: false });
    } catch {
      // Exists with other settings, or created concurrently: bind to it.
      return kvm.open(name, { allow_direct: false });
    }
  };
  return {
    sessions: await open(names.bucketSessions, 1),
    restart: await open(names.bucketRestart, 1),
    ctl: await open(names.bucketCtl, 5),
    fence: await open(names.bucketFence, 1),
  };
}
