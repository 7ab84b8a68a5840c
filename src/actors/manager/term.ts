/**
 * One primary term: what a manager holds while it acts as primary of one epoch (docs/design.md
 * §4), from the rebuild to the step-down, fencing or drain. Every part of the manager that acts
 * for a term holds the term and checks `acting` before it acts (I5): a fenced or released term
 * stops everything it started at once, without an epoch comparison in every callback.
 *
 * The parts (one reason to change each): the queue consumers (consumers.ts), what the queues say
 * applied to the table (intake.ts), the calls of clients and servers (calls.ts), the effect
 * executor (effects.ts) and the backups and snapshots (backups.ts). Each implements its contract
 * below; this file imports none of them. All of them keep what they keep through the manager's
 * store (store.ts), never through JetStream directly. The lease is not the term's:
 * it outlives terms (lease.ts); the manager node (../manager.ts) makes and ends terms.
 */
import type { Consumer, JsMsg } from "@nats-io/jetstream";
import type { Msg, MsgHdrs, Subscription } from "@nats-io/transport-node";
import type { Effect, ManagerCore } from "../../machines/managerCore.js";
import type { RecentSeries } from "../../machines/recentSeries.js";
import type { FencedKv } from "../../runtime/fenced-kv.js";
import { DispatchKeys } from "../../runtime/dispatch-key.js";
import type { Logger } from "../../runtime/logger.js";
import type { Runtime } from "../../runtime/runtime.js";
import type { HedgeProxies } from "../hedgeProxy.js";
import type { ManagerStore } from "./store.js";

/** The manager's clock: monotonic milliseconds (the core's clock). */
export const now = () => performance.now();
/** Wall-clock ms (a deadline, a queue's timestamp) on the core's clock, and back. */
export const toCore = (wallMs: number) => now() - (Date.now() - wallMs);
export const toWall = (coreMs: number) => Date.now() + (coreMs - now());
/** When JetStream stored a queue message, on the core's clock (now when not known). */
export const storedAt = (m: { time?: Date }) => (m.time instanceof Date ? toCore(m.time.getTime()) : now());

/**
 * Messages a cursor's consume() asks for at once, bounded so that as many of the largest
 * message NATS carries (`maxPayload`, its INFO's max_payload) stay within 32 MiB: 32 at the
 * default 1 MiB, 16 to 128 in any case. A count, not bytes: nats.js 3.4's consume() with
 * max_bytes also asks for 100 messages, a pull that ends by count leaves its unused bytes
 * counted as pending until it expires, so its refills ask for a few kB; a batch record larger
 * than that is refused with a 409 (message size exceeds max bytes), on which consume() waits
 * for two missed heartbeats. A window's session stalled for 2 to 3 s in one bench run in three.
 */
export function pullMessages(maxPayload: number | undefined): number {
  const largest = maxPayload && maxPayload > 0 ? maxPayload : 1024 * 1024;
  return Math.max(16, Math.min(128, Math.floor((32 * 1024 * 1024) / largest)));
}

/** What the parts of a term need of the manager node that outlives it. */
/** What an effect about a queue entry needs of it: where it came from, its headers and bytes (a batch's element stands for itself). */
export interface QueueEntry {
  readonly subject: string;
  readonly headers?: MsgHdrs | undefined;
  readonly data: Uint8Array;
}

export interface ManagerContext {
  readonly rt: Runtime;
  /** Where the lease, the cursors, the queues and the records are kept (store.ts). */
  readonly store: ManagerStore;
  readonly node: string;
  readonly baseLog: Logger;
  /** Responses served in the last minute (the dashboard's charts): kept across terms. */
  readonly recent: RecentSeries;
  /** A newer primary exists (or the table cannot be trusted): stop acting, step down. */
  fenced(term: PrimaryTerm, reason: string): void;
  /** Is the lease still this term's? Fences the term when it is not. */
  verifyLease(term: PrimaryTerm): Promise<boolean>;
  /** The table lacks a session the bucket has: step down; the next takeover reads the bucket. */
  rebuildFromBucket(term: PrimaryTerm, session: string): void;
}

// What each part offers the others through the term. The parts depend on the term, never the
// term on them: these are the contracts they fulfil (rebuild.ts wires them).

/** consumers.ts */
export interface TermConsumers {
  readonly healed: { req: number; resp: number };
  readonly refusedPulls: { req: number; resp: number };
  takeOver(reqFrom: number, respFrom: number, js: <T>(what: string, fn: () => Promise<T>) => Promise<T>): Promise<void>;
  caughtUpTo(req: number, resp: number, timeoutMs: number): Promise<void>;
  resume(why: string): Promise<void>;
  consumer(which: "req" | "resp"): Consumer | null;
  close(): Promise<void>;
}

/** intake.ts */
export interface TermIntake {
  onRequestMsg(m: JsMsg, forceReplay?: boolean): void;
  onResponseMsg(m: JsMsg): void;
  replaySession(client: string, session: string, tableLastReq: number, clientLastReq: number, quiet?: boolean): Promise<void>;
}

/** calls.ts */
export interface TermCalls {
  onOpen(m: Msg): Promise<void>;
  onResume(m: Msg): Promise<void>;
  onClose(m: Msg): Promise<void>;
  onRegister(m: Msg): void;
  onHeartbeat(m: Msg): void;
}

/** effects.ts */
export interface TermEffects {
  run(effects: Effect[], source?: QueueEntry): void;
}

/** backups.ts */
export interface TermBackups {
  readonly standbys: ReadonlyMap<string, { at: number; seq: number; needFull: boolean }>;
  readonly inProgress: Promise<void> | null;
  start(): void;
  flush(): Promise<void>;
  stop(): void;
}

export class PrimaryTerm {
  /** False once fenced, stepped down or drained: nothing of this term acts any more. */
  acting = true;
  readonly log: Logger;
  /** Last stream sequences when the rebuild began: entries up to them are a replay. */
  replayEnd = { req: 0, resp: 0 };
  /** Between a NATS disconnect and the reconnect: no heartbeat can arrive, none is missed. */
  natsDown = false;
  /** When serving began (core clock) and the same as an ISO time, for status. */
  servingAt = 0;
  since: string | null = null;
  readonly timers: NodeJS.Timeout[] = [];
  readonly subs: Subscription[] = [];

  // The term's parts, wired by the rebuild (rebuild.ts) before any of them runs.
  proxies!: HedgeProxies;
  effects!: TermEffects;
  consumers!: TermConsumers;
  intake!: TermIntake;
  calls!: TermCalls;
  backups!: TermBackups;

  /** The keys this term gave its work messages, for the check of their answers. */
  readonly keys: DispatchKeys;

  constructor(
    readonly ctx: ManagerContext,
    readonly epoch: number,
    readonly core: ManagerCore,
    /** The deployment's dispatch secret (runtime/dispatch-key.ts). */
    readonly secret: Buffer,
    /** Fenced writers of the buckets (fresh revision maps per term). */
    readonly kv: { sessions: FencedKv; ctl: FencedKv; restart: FencedKv },
  ) {
    this.log = ctx.baseLog.child({ epoch });
    this.keys = new DispatchKeys(secret);
  }

  get rt(): Runtime {
    return this.ctx.rt;
  }

  get store(): ManagerStore {
    return this.ctx.store;
  }

  /** Carry out the core's effects, while this term acts. */
  run(effects: Effect[], source?: QueueEntry): void {
    if (this.acting) this.effects.run(effects, source);
  }

  /** Stop acting and let go of what the term holds (subscriptions, timers, consumers, proxies). */
  async release(): Promise<void> {
    this.acting = false;
    this.proxies?.stopAll();
    for (const s of this.subs) s.unsubscribe();
    this.subs.length = 0;
    this.backups?.stop();
    await this.consumers?.close();
    for (const t of this.timers) clearTimeout(t);
    this.timers.length = 0;
  }
}
