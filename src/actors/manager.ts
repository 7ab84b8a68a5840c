/**
 * The manager actor: wires managerMachine (lifecycle) and ManagerCore (routing table) to the
 * subjects, streams and buckets of docs/design.md §2. Only the primary acts; every effect checks
 * that this node is still primary of the epoch it was decided in (I5).
 */
import { AckPolicy, DeliverPolicy, type Consumer, type ConsumerMessages, type JsMsg, type MsgRequest } from "@nats-io/jetstream";
import type { Msg, Subscription } from "@nats-io/transport-node";
import { createActor, fromCallback, fromPromise, waitFor, type Actor } from "xstate";
import { DEFAULT_HEDGE_BUDGET } from "../machines/hedgeBudget.js";
import { RecentSeries, type SecondView } from "../machines/recentSeries.js";
import { BackupStore, splitBackup, type BackupAck, type BackupMsg } from "../machines/backupStore.js";
import { splitToFit } from "../machines/parts.js";
import { ManagerCore, type CursorRecord, type Effect, type SessionRecord } from "../machines/managerCore.js";
import { managerMachine, type LeaseView, type ManagerEvent } from "../machines/managerMachine.js";
import type {
  ClientRestartAck,
  DeliverMsg,
  HedgeOptions,
  HeartbeatReply,
  OpenReply,
  Reply,
  RestartMsg,
  RestartRecord,
  RestartSession,
  ResumeReply,
  RetryOptions,
  ServerRestartAck,
  WorkMsg,
} from "../machines/types.js";
import { ErrorCode, TandemError } from "../runtime/errors.js";
import { byEpoch, FencedError, FencedKv } from "../runtime/fenced-kv.js";
import { dropCursors, isWrongLastSequence, openCursor, readLastPerSubject, untilJetStream } from "../runtime/jetstream.js";
import { dispatchKey, loadDispatchSecret } from "../runtime/dispatch-key.js";
import { newId } from "../runtime/ids.js";
import { trace } from "../runtime/trace.js";
import type { Logger } from "../runtime/logger.js";
import { JS_TIMEOUT_MS, type Runtime } from "../runtime/runtime.js";
import {
  decode,
  encode,
  encodedSize,
  type ClientCall,
  makeHeaders,
  malformed,
} from "../runtime/wire.js";
import { publishToQueue } from "../runtime/queue-publish.js";
import { pollUntil, withBackoff } from "../runtime/backoff.js";
import { HedgeProxies, type HedgeRecord } from "./hedgeProxy.js";
import { asTandem, MANAGER_WRITER, parseHedge, parseRequestMsg, parseResponseMsg, publishDlq, replyError, replyOk } from "./protocol.js";
import { parse, V } from "./schemas.js";

export interface LeaseRecord {
  epoch: number;
  node: string;
  since: string;
}

/** Per service: the hedging budget and learned delay (they survive a failover). */
export interface HedgingStatus {
  requests: number;
  extra: number;
  tokens: number;
  p95Ms: number | null;
  samples: number;
}

export interface ManagerStatus {
  node: string;
  state: string;
  epoch: number;
  leader: string | null;
  sessions: number;
  /** Bytes of requests and responses the table holds in memory (bounded: README, Limits). */
  heldBytes: number;
  /** The last stream sequences of TANDEM_REQ and TANDEM_RESP the table has applied. */
  applied: { req: number; resp: number };
  /** Queue entries a cursor skipped that the manager read back from the stream and applied. */
  healed: { req: number; resp: number };
  servers: Array<{ id: string; service: string; alive: boolean }>;
  services: Array<{ service: string; sessions: number; pending: number; servers: number; hedging?: HedgingStatus }>;
  /** Standby managers that acknowledged backups, with the age of their last acknowledgement. */
  standbys: Array<{ node: string; lastBackupAgeMs: number; seq: number }>;
  since: string | null;
  /** With `{ detail: true }` (the dashboard): the last minute, a second a point. */
  recent?: SecondView[];
  /** With `{ detail: true }`: the sessions with the most requests pending (at most 100). */
  busiest?: SessionStatus[];
}

export interface SessionStatus {
  id: string;
  client: string;
  service: string;
  server: string | null;
  /** Requests stored and not yet answered. */
  pending: number;
  /** Requests at a server now (dispatched, not answered). */
  inFlight: number;
  answered: number;
}

const now = () => performance.now();

/** A status request that asks for the dashboard's detail: `{ "detail": true }`. */
function wantsDetail(data: Uint8Array): boolean {
  if (data.length === 0 || data.length > 256) return false;
  try {
    return (decode(data) as { detail?: unknown } | null)?.detail === true;
  } catch {
    return false;
  }
}

/** Queues are trimmed behind the bucket cut written this long ago (see trimQueues; tests shorten it). */
const trimLagMs = () => Number(process.env.TANDEM_TRIM_LAG_MS ?? 10_000);

/** Room in a work message for everything but its payload and restart data (ids, headers). */
const WORK_OVERHEAD = 2048;

/** Bytes a cursor pulls at once (at least the largest message NATS carries). */
const PULL_MAX_BYTES = 8 * 1024 * 1024;

/** Wall-clock ms (a deadline, a queue's timestamp) on the core's clock, and back. */
const toCore = (wallMs: number) => now() - (Date.now() - wallMs);
const toWall = (coreMs: number) => Date.now() + (coreMs - now());
/** When JetStream stored a queue message, on the core's clock (now when not known). */
const storedAt = (m: { time?: Date }) => (m.time instanceof Date ? toCore(m.time.getTime()) : now());

/** A client that re-syncs while its request has been at a server this long gets it checked. */
const STUCK_DISPATCH_MS = 4000;

/** The bucket gets the manager's cut at most this often (standbys get every backup). */
const KV_EVERY_MS = 1000;


/** One manager node. Any number may run; the lease makes one of them primary. */
export class ManagerNode {
  readonly node: string;
  private readonly baseLog: Logger;
  private log: Logger;
  private actor: Actor<typeof managerMachine> | undefined;
  private core: ManagerCore | null = null;
  /** Between a NATS disconnect and the reconnect: no heartbeat can arrive, none is missed. */
  private natsDown = false;
  /** The deployment's dispatch secret (runtime/dispatch-key.ts), read at the first rebuild. */
  private secret: Buffer | null = null;
  /** Hedging proxies of the current epoch. */
  private proxies: HedgeProxies | null = null;
  /** Epoch in which this node may act; 0 when not primary. */
  private actingEpoch = 0;
  private consumers: ConsumerMessages[] = [];
  /** Current consumer generation per stream: an older loop that ends is not a fencing. */
  private consumerGen = { req: 0, resp: 0 };
  private consumerRefs: { req: Consumer | null; resp: Consumer | null } = { req: null, resp: null };
  /** Messages the current consumer of each stream delivered and the table applied. */
  private applied = { req: 0, resp: 0 };
  private subs: Subscription[] = [];
  private timers: NodeJS.Timeout[] = [];
  private snapshotting: Promise<void> | null = null;
  private replayEnd = { req: 0, resp: 0 };
  /** Standby side: the primary's backups. */
  readonly backup = new BackupStore();
  /** Primary side: fenced writers (fresh revision maps per epoch). */
  private kvSessions: FencedKv | null = null;
  private kvCtl: FencedKv | null = null;
  private kvRestart: FencedKv | null = null;
  private backupSeq = 0;
  private standbys = new Map<string, { at: number; seq: number; needFull: boolean }>();
  private ackSub: Subscription | null = null;
  private lastTick = 0;
  private resumingConsumers = false;
  /** The next rebuild reads the bucket, not the backup (after an inconsistency). */
  private forceBucket = false;
  private primarySince: string | null = null;
  private primaryAt = 0;
  /** The cut the bucket has not got yet, and when it last got one. */
  private kvPending = new Map<string, SessionRecord>();
  private kvWrittenAt = 0;
  private snapshotWarnedAt = -Infinity;
  /** Cursor consumers opened by resumes in this epoch (part of their names). */
  private cursorGen = 0;
  private restartWarnedAt = -Infinity;
  /** Standby side: when the lease holder's last backup arrived (readiness: a current standby). */
  private lastBackupAt = -Infinity;
  /** Responses served in the last minute, for the dashboard's charts. */
  private readonly recent = new RecentSeries();
  private unwatch: Array<() => void> = [];

  constructor(private readonly rt: Runtime) {
    this.node = rt.config.node;
    this.baseLog = rt.logger.child({ role: "manager", node: this.node });
    this.log = this.baseLog;
  }

  /** Ready (/readyz): primary, or a standby whose last backup from the primary is current. */
  readiness(): { ready: boolean; why: string } {
    const snap = this.actor?.getSnapshot();
    if (!snap || snap.status === "done") return { ready: false, why: "not running" };
    if (snap.matches("primary")) return { ready: true, why: `primary at epoch ${snap.context.epoch}` };
    const age = now() - this.lastBackupAt;
    if (age <= this.rt.config.leaseMs) return { ready: true, why: `standby for ${snap.context.leader ?? "?"}, last backup ${Math.round(age)} ms ago` };
    return { ready: false, why: `${this.state}: ${Number.isFinite(age) ? `no backup from a primary for ${Math.round(age)} ms` : "no backup from a primary yet"}` };
  }

  /** Gauges of the manager's view, set when the metrics are scraped. */
  private async collect(): Promise<void> {
    const m = this.rt.metrics;
    const st = this.status();
    const primary = this.isPrimary();
    m.primary.set(primary ? 1 : 0);
    m.epoch.set(st.epoch);
    m.leaseAge.set(primary && this.primaryAt ? Math.max(0, (now() - this.primaryAt) / 1000) : 0);
    for (const g of [m.sessions, m.pending, m.sessionPending, m.serversAlive, m.hedgeRequests, m.hedgeExtra, m.standbyBackupAge, m.consumerLag]) g.reset();
    if (primary) {
      for (const s of st.services) {
        m.sessions.set({ service: s.service }, s.sessions);
        m.pending.set({ service: s.service }, s.pending);
        m.serversAlive.set({ service: s.service }, s.servers);
        if (s.hedging) {
          m.hedgeRequests.set({ service: s.service }, s.hedging.requests);
          m.hedgeExtra.set({ service: s.service }, s.hedging.extra);
        }
      }
      const core = this.core;
      if (core) {
        const top = [...core.sessions.values()].map((s) => ({ s, p: s.lastReq - s.answered })).filter((x) => x.p > 0);
        top.sort((a, b) => b.p - a.p);
        for (const { s, p } of top.slice(0, 50)) m.sessionPending.set({ service: s.service, session: s.id }, p);
      }
      for (const sb of st.standbys) m.standbyBackupAge.set({ standby: sb.node }, sb.lastBackupAgeMs / 1000);
      const lag = async (which: "req" | "resp", stream: string) => {
        const c = this.consumerRefs[which];
        if (c) m.consumerLag.set({ stream }, (await c.info(true)).num_pending);
      };
      const dlq = this.rt.jsm.streams.info(this.rt.names.streamDlq).then((i) => m.dlqMessages.set(i.state.messages));
      await Promise.allSettled([lag("req", this.rt.names.streamReq), lag("resp", this.rt.names.streamResp), dlq]);
    } else if (Number.isFinite(this.lastBackupAt)) {
      m.standbyBackupAge.set({ standby: this.node }, (now() - this.lastBackupAt) / 1000);
    }
  }

  get epoch(): number {
    return this.actingEpoch;
  }

  get state(): string {
    const s = this.actor?.getSnapshot();
    return s ? JSON.stringify(s.value) : "new";
  }

  isPrimary(): boolean {
    return this.actor?.getSnapshot().matches("primary") ?? false;
  }

  start(): void {
    // A work message carries a payload and the server's restart data, each up to maxPayload:
    // both must fit in what this NATS server carries, or such work could never be sent.
    const carried = this.rt.nc.info?.max_payload ?? 1024 * 1024;
    if (2 * this.rt.config.maxPayload + WORK_OVERHEAD > carried) {
      throw new TandemError(
        ErrorCode.Config,
        `--max-payload ${this.rt.config.maxPayload} is too large for this NATS server (max_payload ${carried}): a work message carries a payload and restart data of up to that size each; use --max-payload ${Math.floor((carried - WORK_OVERHEAD) / 2)} or less, or raise max_payload in nats-server`,
        { context: { maxPayload: this.rt.config.maxPayload, natsMaxPayload: carried } },
      );
    }
    const machine = managerMachine.provide({
      actors: {
        watchLease: fromCallback<ManagerEvent, { node: string }>(({ sendBack }) => this.watchLease(sendBack)),
        acquireLease: fromPromise(({ input }) => this.acquireLease(input.previous)),
        rebuild: fromPromise(({ input }) => this.rebuild(input.epoch)),
        serve: fromCallback<ManagerEvent, { epoch: number }>(({ sendBack, input }) => this.serve(input.epoch, sendBack)),
        renewLease: fromPromise(({ input }) => this.renewLease(input.lease)),
        stepDown: fromPromise(({ input }) => this.stepDown(input.epoch)),
        drain: fromPromise(() => this.drain()),
      },
      actions: {
        report: (_, params) => {
          const { event, ...rest } = params;
          this.baseLog.info(rest, `manager ${event}`);
        },
      },
    });
    this.actor = createActor(machine, {
      input: { node: this.node, heartbeatMs: this.rt.config.heartbeatMs, leaseMs: this.rt.config.leaseMs },
    });
    this.actor.subscribe({ error: (err) => this.log.error({ err }, "manager machine failed") });
    this.actor.start();
    this.unwatch.push(this.rt.health.add(`manager ${this.node}`, () => this.readiness()), this.rt.metrics.addCollector(() => this.collect()));
  }

  /** Resolves once this node is primary (for tests and the demo). */
  async waitPrimary(timeoutMs = 30_000): Promise<void> {
    if (!this.actor) throw new Error("not started");
    await waitFor(this.actor, (s) => s.matches("primary"), { timeout: timeoutMs });
  }

  async stop(): Promise<void> {
    if (!this.actor) return;
    for (const u of this.unwatch.splice(0)) u();
    this.actor.send({ type: "STOP" });
    await waitFor(this.actor, (s) => s.status === "done", { timeout: 15_000 }).catch(() => {});
    this.actor.stop();
  }

  /** The status with the dashboard's detail: the last minute and the busiest sessions. */
  detailedStatus(): ManagerStatus {
    const st = this.status();
    const busiest: SessionStatus[] = [];
    for (const s of this.core?.sessions.values() ?? []) {
      const pending = s.lastReq - s.answered;
      busiest.push({ id: s.id, client: s.client, service: s.service, server: s.server, pending, inFlight: s.dispatched > 0 ? 1 : 0, answered: s.answered });
    }
    busiest.sort((a, b) => b.pending - a.pending || b.answered - a.answered);
    return { ...st, recent: this.recent.view(Date.now()), busiest: busiest.slice(0, 100) };
  }

  status(): ManagerStatus {
    const core = this.core;
    const services = new Map<string, ManagerStatus["services"][number]>();
    const svc = (name: string) => {
      let e = services.get(name);
      if (!e) services.set(name, (e = { service: name, sessions: 0, pending: 0, servers: 0 }));
      return e;
    };
    if (core) {
      for (const name of core.services) svc(name);
      for (const s of core.sessions.values()) {
        const e = svc(s.service);
        e.sessions++;
        e.pending += s.lastReq - s.answered;
      }
      for (const srv of core.servers.values()) if (srv.alive) svc(srv.service).servers++;
      for (const [name, b] of core.hedging) {
        const p95 = b.p95();
        svc(name).hedging = { requests: b.requests, extra: b.extra, tokens: Math.round(b.tokens * 100) / 100, p95Ms: p95 === null ? null : Math.round(p95 * 100) / 100, samples: b.samples };
      }
    }
    const snap = this.actor?.getSnapshot();
    return {
      node: this.node,
      state: this.state,
      epoch: snap?.context.epoch ?? 0,
      leader: snap?.context.leader ?? null,
      sessions: core?.sessions.size ?? 0,
      heldBytes: core?.heldBytes() ?? 0,
      applied: { req: core?.reqSeq ?? 0, resp: core?.respSeq ?? 0 },
      healed: { ...this.healed },
      servers: core ? [...core.servers.values()].map((s) => ({ id: s.id, service: s.service, alive: s.alive })) : [],
      services: [...services.values()],
      standbys: [...this.standbys].map(([node, a]) => ({ node, lastBackupAgeMs: Math.round(now() - a.at), seq: a.seq })),
      since: this.primarySince,
    };
  }

  // ---- lease ---------------------------------------------------------------------------

  private watchLease(sendBack: (e: ManagerEvent) => void): () => void {
    let lastRevision = -1;
    let stopped = false;
    /** The lease as last read: only its holder's backups count (see below). */
    let holder: { epoch: number; node: string } | null = null;
    const poll = async () => {
      if (stopped) return;
      try {
        const e = await this.rt.kv.ctl.get("leader");
        if (stopped) return;
        if (!e || e.operation !== "PUT") {
          sendBack({ type: "LEASE_ABSENT" });
        } else if (e.revision !== lastRevision) {
          lastRevision = e.revision;
          const lease = e.json<LeaseRecord>();
          // A standby says whom it stands by for (once per primary), so a quiet one is not a
          // mystery: it waits for that primary's lease to lapse.
          if (lease.node !== this.node && (holder?.node !== lease.node || holder?.epoch !== lease.epoch)) {
            this.log.info({ primary: lease.node, epoch: lease.epoch, takeOverAfterMs: this.rt.config.leaseMs }, "standing by: another manager is primary; taking over if its lease lapses");
          }
          holder = { epoch: lease.epoch, node: lease.node };
          sendBack({ type: "LEASE_SEEN", lease: { epoch: lease.epoch, node: lease.node, revision: e.revision } });
        }
      } catch (err) {
        this.log.debug({ err }, "lease poll failed (NATS unavailable?)");
      }
      if (!stopped) this.timers.push(setTimeout(poll, Math.max(20, this.rt.config.heartbeatMs / 2)));
    };
    void poll();
    // Backups from the primary: keep them, acknowledge them, and take them as a sign of life.
    // Only from the node that holds the lease of that epoch: a forged backup once poisoned a
    // standby's table (15.8 s without service after the primary died) and, repeated, kept it
    // from ever taking over. A new primary's backups count from when the lease poll sees it.
    const sub = this.rt.nc.subscribe(this.rt.names.backup, {
      callback: (err, m) => {
        if (err || stopped) return;
        try {
          const msg = parse(V.backup, decode(m.data)) as BackupMsg;
          if (!holder || msg.epoch !== holder.epoch || msg.node !== holder.node) {
            this.refuseBackup(m, msg, holder);
            return;
          }
          const ack = this.backup.apply(msg, this.node);
          if (!ack) return; // from an older epoch: not a sign of the current primary
          if (m.reply) m.respond(encode(ack));
          this.lastBackupAt = now();
          sendBack({ type: "BACKUP_SEEN", epoch: msg.epoch });
        } catch (e) {
          void publishDlq(this.rt, asTandem(e).toWire(), m.subject, m.headers, m.data);
        }
      },
    });
    return () => {
      stopped = true;
      sub.unsubscribe();
    };
  }

  private backupRefusedAt = -Infinity;

  private refuseBackup(m: Msg, msg: Partial<BackupMsg>, holder: { epoch: number; node: string } | null): void {
    // Before the first lease read, or from a primary of an epoch the poll has not read yet: the
    // ordinary course of a start or a takeover. Say nothing.
    if (!holder || (typeof msg.epoch === "number" && msg.epoch > holder.epoch)) return;
    if (now() - this.backupRefusedAt < 10_000) return;
    this.backupRefusedAt = now();
    const err = new TandemError(ErrorCode.StaleEpoch, `a backup from ${JSON.stringify(msg.node)} at epoch ${String(msg.epoch)}, but the lease is ${holder.node}'s at epoch ${holder.epoch}: ignored`, {
      context: { node: msg.node ?? null, epoch: msg.epoch ?? null, leaseNode: holder.node, leaseEpoch: holder.epoch },
    });
    this.log.warn(err.context, "ignored a backup that does not come from the lease holder (further ones in the next 10 s are not logged)");
    void publishDlq(this.rt, err, m.subject, m.headers, m.data);
  }

  private async acquireLease(previous: LeaseView | null): Promise<LeaseView> {
    const cursor = await this.readCursor();
    const floor = Math.max(previous?.epoch ?? 0, cursor?.epoch ?? 0);
    const value: LeaseRecord = { epoch: floor + 1, node: this.node, since: new Date().toISOString() };
    let revision: number;
    if (previous) {
      // Fails with wrong-last-sequence if the primary renewed after all: then it lives.
      revision = await this.rt.kv.ctl.update("leader", encode(value), previous.revision);
    } else {
      const cur = await this.rt.kv.ctl.get("leader");
      if (cur && cur.operation === "PUT") {
        const held = cur.json<LeaseRecord>();
        value.epoch = Math.max(value.epoch, held.epoch + 1);
        revision = await this.rt.kv.ctl.update("leader", encode(value), cur.revision);
      } else if (cur) {
        revision = await this.rt.kv.ctl.update("leader", encode(value), cur.revision);
      } else {
        revision = await this.rt.kv.ctl.create("leader", encode(value));
      }
    }
    this.log.info({ epoch: value.epoch }, "lease acquired");
    this.rt.metrics.takeovers.inc();
    return { epoch: value.epoch, node: this.node, revision };
  }

  private async renewLease(lease: LeaseView): Promise<LeaseView> {
    const value: LeaseRecord = { epoch: lease.epoch, node: this.node, since: new Date().toISOString() };
    const started = now();
    let warned = false;
    try {
      // At a steady 50 ms (a lease must not wait out a back-off). Anything but a failed
      // compare-and-set means NATS is out of reach, for the standbys as much as for us (or, in a
      // cluster, our first renewal after it comes back fails the compare-and-set). Whatever we
      // send meanwhile carries our epoch and is refused by anyone who has seen a newer one; our
      // bucket writes are fenced.
      const revision = await withBackoff(() => this.rt.kv.ctl.update("leader", encode(value), lease.revision, this.rt.config.heartbeatMs * 2), {
        initialMs: 50,
        factor: 1,
        maxMs: 50,
        fatal: isWrongLastSequence,
        onFailure: (err) => {
          if (warned || isWrongLastSequence(err) || now() - started <= this.rt.config.leaseMs) return;
          warned = true;
          this.log.warn({ err }, "cannot renew the lease (NATS unreachable?); still trying");
        },
      });
      if (warned) this.log.info({ outageMs: Math.round(now() - started) }, "lease renewed again after NATS came back");
      return { ...lease, revision };
    } catch (err) {
      // Someone changed the lease: we are fenced, unless our own renewal is what moved it: one
      // whose answer timed out under load was stored all the same, and a retry then found its
      // revision (a flood of 125 MB once made a lone primary step down from itself this way).
      const cur = await this.rt.kv.ctl.get("leader").catch(() => null);
      const held = cur && cur.operation === "PUT" ? (decode(cur.value) as Partial<LeaseRecord>) : null;
      if (cur && held && held.epoch === value.epoch && held.node === value.node && held.since === value.since) return { ...lease, revision: cur.revision };
      this.actingEpoch = 0;
      throw new TandemError(ErrorCode.NotLeader, `lease renewal failed for epoch ${lease.epoch}; another manager holds it`, { cause: err });
    }
  }

  private async readCursor(): Promise<CursorRecord | null> {
    const e = await this.rt.kv.ctl.get("cursor");
    return e && e.operation === "PUT" ? e.json<CursorRecord>() : null;
  }

  // ---- rebuild ---------------------------------------------------------------------------

  private async rebuild(epoch: number): Promise<void> {
    const t0 = now();
    const { rt } = this;
    const core = new ManagerCore(
      {
        maxPending: rt.config.maxPending,
        maxPayload: rt.config.maxPayload,
        serverTimeoutMs: rt.config.serverTimeoutMs,
        ackTimeoutMs: rt.config.ackTimeoutMs,
        maxSessionBytes: rt.config.maxSessionBytes,
        maxClientBytes: rt.config.maxClientBytes,
        maxHeldBytes: rt.config.maxHeldBytes,
        hedge: { ...DEFAULT_HEDGE_BUDGET, ratio: rt.config.hedgeBudgetPct / 100, reserve: rt.config.hedgeReserve },
      },
      epoch,
    );
    this.kvSessions = new FencedKv(rt.kv.sessions);
    this.kvCtl = new FencedKv(rt.kv.ctl);
    this.kvRestart = new FencedKv(rt.kv.restart);
    // In a cluster that just lost a server, JetStream answers nothing until its leaders are
    // elected again (a follower waits 4-9 s; the timers are the same from 2.9 to 2.15): wait
    // for it here rather than step down and start over with a new epoch.
    const js = <T>(what: string, fn: () => Promise<T>) => untilJetStream(what, fn, 60_000, this.log);
    this.secret ??= await js("read the dispatch secret", () => loadDispatchSecret(rt.kv.ctl));
    const stored = await js("read the cursor", () => rt.kv.ctl.get("cursor"));
    const storedCursor = stored && stored.operation === "PUT" ? stored.json<CursorRecord>() : null;
    if (stored) this.kvCtl.saw("cursor", stored.revision);
    let cursor = storedCursor;
    const records: SessionRecord[] = [];
    // The last backup is the cut to start from when we have one at least as new as the bucket's
    // (docs/design.md §4, step 3); otherwise the bucket (a manager started cold, or a backup missed).
    const b = this.backup;
    const fromBackup = !this.forceBucket && b.complete && b.cursor !== null && (!storedCursor || b.cursor.reqSeq >= storedCursor.reqSeq);
    this.forceBucket = false;
    if (fromBackup) {
      cursor = b.cursor;
      records.push(...b.records.values());
    } else {
      for (const m of await js("read the session records", () => readLastPerSubject(rt.js, rt.jsm, `KV_${rt.names.bucketSessions}`))) {
        const key = m.subject.split(".").slice(2).join(".");
        if (key.includes(".")) continue; // hedge records of a session, not a session
        this.kvSessions.saw(key, m.seq);
        if (m.data.length === 0) continue; // delete marker
        try {
          records.push(decode(m.data) as SessionRecord);
        } catch {
          /* a corrupt record cannot be rebuilt; its session will report unknown */
        }
      }
    }
    const restarts = new Map<string, { client?: RestartRecord; server?: RestartRecord }>();
    for (const m of await js("read the restart data", () => readLastPerSubject(rt.js, rt.jsm, `KV_${rt.names.bucketRestart}`))) {
      if (m.data.length === 0) continue;
      const key = m.subject.split(".").slice(2).join(".");
      this.kvRestart.saw(key, m.seq);
      const dot = key.lastIndexOf(".");
      const session = key.slice(0, dot);
      const side = key.slice(dot + 1);
      const e = restarts.get(session) ?? {};
      try {
        if (side === "client") e.client = decode(m.data) as RestartRecord;
        if (side === "server") e.server = decode(m.data) as RestartRecord;
      } catch {
        continue;
      }
      restarts.set(session, e);
    }
    core.restore(records, restarts, cursor, now());
    // Records from a backup are newer than the bucket's: the first cut written to the bucket
    // must hold all of them, or it would pair stale records with a newer cursor.
    if (fromBackup) core.markAllDirty();
    this.core = core;
    this.proxies = new HedgeProxies(core, epoch, this.hedgeEffects(epoch), this.baseLog.child({ epoch }), now);
    this.actingEpoch = epoch;
    this.log = this.baseLog.child({ epoch });
    const reqInfo = await js("read the request queue", () => rt.jsm.streams.info(rt.names.streamReq));
    const respInfo = await js("read the response queue", () => rt.jsm.streams.info(rt.names.streamResp));
    this.replayEnd = { req: reqInfo.state.last_seq, resp: respInfo.state.last_seq };
    const reqFrom = cursor ? cursor.reqFrom : 1;
    const respFrom = cursor ? cursor.respFrom : 1;
    const prefix = rt.config.prefix.replace(/-/g, "_");
    // Take the queues over: delete the predecessor's cursors (its pulls fail: I5), open ours.
    await Promise.all([
      dropCursors(rt.jsm, rt.names.streamReq, `${prefix}_mgr_req`, null),
      dropCursors(rt.jsm, rt.names.streamResp, `${prefix}_mgr_resp`, null),
    ]);
    // A new name per attempt: a cursor whose creation timed out may have been placed on a
    // server that just died, and asking again for the same name waits on it (seen: a minute).
    let attempt = 0;
    const reqConsumer = await js("open the request cursor", () => openCursor(rt.js, rt.jsm, rt.names.streamReq, `${prefix}_mgr_req`, `e${epoch}_${this.node}_r${attempt++}`, reqFrom));
    const respConsumer = await js("open the response cursor", () => openCursor(rt.js, rt.jsm, rt.names.streamResp, `${prefix}_mgr_resp`, `e${epoch}_${this.node}_r${attempt++}`, respFrom));
    await this.startConsuming(reqConsumer, "req", epoch, reqFrom);
    await this.startConsuming(respConsumer, "resp", epoch, respFrom);
    await this.caughtUpTo(this.replayEnd.req, this.replayEnd.resp, 60_000);
    const rebuildMs = now() - t0;
    this.log.info(
      { from: fromBackup ? "backup" : "bucket", sessions: core.sessions.size, replayedReq: this.replayEnd.req - reqFrom + 1, replayedResp: this.replayEnd.resp - respFrom + 1, rebuildMs: Math.round(rebuildMs) },
      "rebuilt from backup and queues",
    );
  }

  /**
   * Wait until the table has applied the queues up to these stream sequences. A sequence may
   * belong to a message since purged (a closed session), which no consumer will deliver: a
   * consumer with nothing pending, whose last delivery we applied, is caught up as well.
   */
  private async caughtUpTo(req: number, resp: number, timeoutMs: number): Promise<void> {
    const deadline = now() + timeoutMs;
    const done = async (which: "req" | "resp", target: number): Promise<boolean> => {
      const core = this.core;
      if (!core) return true;
      const seq = which === "req" ? core.reqSeq : core.respSeq;
      if (seq >= target) return true;
      const c = this.consumerRefs[which];
      if (!c) return false;
      const info = await c.info().catch(() => null);
      // Caught up: nothing left to deliver, and we applied every message it delivered.
      if (!info || info.num_pending !== 0 || info.delivered.consumer_seq > this.applied[which]) return false;
      // Nothing left to deliver below the target: only purged sequences remain.
      core.passed(which, target);
      return true;
    };
    await pollUntil(async () => (await done("req", req)) && (await done("resp", resp)), "the table to catch up with the queues", Math.max(0, deadline - now()), 10).catch((err: unknown) => {
      throw new TandemError(ErrorCode.Unavailable, `manager did not catch up with the queues in ${timeoutMs} ms`, { cause: err });
    });
  }

  private async startConsuming(consumer: Consumer, which: "req" | "resp", epoch: number, fromSeq: number): Promise<void> {
    const gen = ++this.consumerGen[which];
    this.applied[which] = 0;
    // The last stream sequence this cursor delivered: a jump past the next one is checked
    // against the stream (healSkipped), never taken on trust.
    let last = fromSeq - 1;
    const current = () => this.actingEpoch === epoch && this.consumerGen[which] === gen;
    // Callback mode: each message is applied in the subscription's own callback, with no
    // async iterator between the socket and the table (one queue hop less per message).
    const messages = await consumer.consume({
      // In bytes, not messages: 512 requests of 200 kB once sat in the pull buffer at once
      // (100 MB), which a manager under a small heap could not hold while it replayed them.
      max_bytes: PULL_MAX_BYTES,
      expires: 2000,
      abort_on_missing_resource: true,
      callback: (m) => {
        if (!current()) return;
        if (m.seq > last + 1) this.healSkipped(which, epoch, last + 1, m.seq - 1);
        if (m.seq > last) last = m.seq;
        try {
          if (which === "req") this.onRequestMsg(m);
          else this.onResponseMsg(m);
        } catch (err) {
          this.log.error({ err, subject: m.subject, seq: m.seq }, "failed to apply a queue message");
        }
        this.applied[which]++;
        // A seq with nothing for us (deleted session) still moves the cursor.
        this.core?.passed(which, m.seq);
      },
    });
    this.consumerRefs[which] = consumer;
    this.consumers.push(messages);
    void messages.closed().then((err) => {
      if (!current()) return;
      if (err) this.log.warn({ err, which }, "consumer ended");
      // Our consumer was deleted (a newer primary took it over) or ended: we must stop acting.
      this.fenced(epoch, `${which} consumer lost`);
    });
  }

  private healing: Record<"req" | "resp", Promise<void>> = { req: Promise.resolve(), resp: Promise.resolve() };
  private healWarnedAt = -Infinity;

  /**
   * A cursor jumped from one stream sequence past the next (issue 14): purged sessions leave
   * such holes, and so did a nats-server bug that moved every consumer past a filtered purge,
   * silently skipping other sessions' entries. Read the stream for what is there in the hole and
   * apply it (every queue event is idempotent, so applying one late or twice is safe), one hole
   * after another per stream, off the delivery path.
   */
  private healSkipped(which: "req" | "resp", epoch: number, from: number, to: number): void {
    const { rt } = this;
    const stream = which === "req" ? rt.names.streamReq : rt.names.streamResp;
    const subjects = which === "req" ? rt.names.reqAll : rt.names.respAll;
    this.healing[which] = this.healing[which].then(async () => {
      const missed: JsMsg[] = [];
      for (let seq = from; seq <= to && this.actingEpoch === epoch; ) {
        // The first message at or after `seq` (STREAM.MSG.GET's next_by_subj; nats.js's type
        // names it only for direct gets, the server takes it on both).
        const next = { seq, next_by_subj: subjects } as unknown as MsgRequest;
        const sm = await rt.jsm.streams.getMessage(stream, next).catch(() => null);
        if (!sm || sm.seq > to) break;
        missed.push({ seq: sm.seq, subject: sm.subject, data: sm.data, headers: sm.header, time: sm.time } as unknown as JsMsg);
        seq = sm.seq + 1;
      }
      if (missed.length === 0 || this.actingEpoch !== epoch) return;
      if (now() - this.healWarnedAt > 10_000) {
        this.healWarnedAt = now();
        this.log.warn({ stream, from, to, missed: missed.length }, "the cursor skipped queue entries that are still there; applied them (further ones in the next 10 s are not logged)");
      }
      this.healed[which] += missed.length;
      for (const m of missed) {
        if (which === "req") this.onRequestMsg(m);
        else this.onResponseMsg(m);
      }
    });
  }

  /** Queue entries a cursor skipped and healSkipped applied (status, tests). */
  private healed = { req: 0, resp: 0 };

  /**
   * Start consuming again from what the table has applied (after a reconnect, or when the
   * queues move and our consumer does not). Safe: consumers are ack-none and every queue
   * event is applied idempotently, so re-reading from our own cursor loses and doubles nothing.
   */
  private async resumeConsumers(epoch: number, why: string): Promise<void> {
    const core = this.core;
    if (!core || this.actingEpoch !== epoch || this.resumingConsumers) return;
    this.resumingConsumers = true;
    try {
      // Never take the consumers back from a newer primary.
      if (!(await this.verifyLease(epoch))) return;
      const { rt } = this;
      this.consumerGen.req++;
      this.consumerGen.resp++;
      const old = this.consumers;
      this.consumers = [];
      for (const c of old) await c.close().catch(() => {});
      const prefix = rt.config.prefix.replace(/-/g, "_");
      // New cursors under new names: opening them never waits on the old ones, which may sit on
      // a nats-server that just died. The old ones are ours; drop them in the background.
      const tag = `e${epoch}_${this.node}_${++this.cursorGen}`;
      const req = await openCursor(rt.js, rt.jsm, rt.names.streamReq, `${prefix}_mgr_req`, tag, core.reqSeq + 1);
      const resp = await openCursor(rt.js, rt.jsm, rt.names.streamResp, `${prefix}_mgr_resp`, tag, core.respSeq + 1);
      if (this.actingEpoch !== epoch) return;
      await this.startConsuming(req, "req", epoch, core.reqSeq + 1);
      await this.startConsuming(resp, "resp", epoch, core.respSeq + 1);
      void dropCursors(rt.jsm, rt.names.streamReq, `${prefix}_mgr_req`, `${prefix}_mgr_req_${tag}`);
      void dropCursors(rt.jsm, rt.names.streamResp, `${prefix}_mgr_resp`, `${prefix}_mgr_resp_${tag}`);
      this.log.info({ why, reqFrom: core.reqSeq + 1, respFrom: core.respSeq + 1 }, "consumers resumed from the table's cursors");
    } catch (err) {
      this.log.warn({ err: { message: (err as Error).message }, why }, "could not resume the consumers yet (JetStream electing a leader?); retrying");
      // Elections take seconds: try again soon rather than after the next progress check.
      const t = setTimeout(() => void this.resumeConsumers(epoch, why), 500);
      this.timers.push(t);
    } finally {
      this.resumingConsumers = false;
    }
  }

  private onRequestMsg(m: JsMsg, forceReplay = false): void {
    const core = this.core!;
    const replaying = forceReplay || m.seq <= this.replayEnd.req;
    const parsed = parseRequestMsg(this.rt.names, m);
    if ("error" in parsed) {
      core.passed("req", m.seq);
      if (!replaying) void publishDlq(this.rt, parsed.error, m.subject, m.headers, m.data, `req.${m.seq}`);
      if (parsed.client && parsed.session && parsed.n) {
        const unreadable = { seq: m.seq, client: parsed.client, session: parsed.session, n: parsed.n, error: parsed.error.toWire() };
        if (core.sessions.has(parsed.session)) this.run(core.onUnreadableRequest(unreadable, now()));
        else if (!replaying) this.run([{ type: "notify", client: parsed.client, session: parsed.session, n: parsed.n, error: unreadable.error }]);
      }
      return;
    }
    if (parsed.type === "taken") {
      this.run(core.onTaken({ seq: m.seq, client: parsed.client, session: parsed.session, taken: parsed.taken }, now()));
    } else if (parsed.type === "cancel") {
      const { type: _t, ...cancel } = parsed;
      this.run(core.onCancelRecord({ seq: m.seq, ...cancel }, now()));
    } else if (parsed.type === "open") {
      const { type: _t, ...open } = parsed;
      this.run(core.onOpenRecord({ seq: m.seq, ...open }, now(), replaying), m);
    } else {
      if (parsed.taken !== undefined) {
        this.run(core.onTaken({ seq: m.seq, client: parsed.request.client, session: parsed.request.session, taken: parsed.taken }, now()));
      }
      trace("manager.request", parsed.request.session, parsed.request.n);
      // The parse gives an upper bound (the message's size): measure exactly only past the limit.
      const restartSize = parsed.restartSize > this.rt.config.maxPayload ? encodedSize(parsed.request.restart) : 0;
      const { deadline, ...request } = parsed.request;
      const effects = core.onRequest(
        { seq: m.seq, ...request, ...(deadline !== undefined ? { deadline: toCore(deadline) } : {}), size: parsed.size, restartSize },
        now(),
        replaying,
      );
      if (effects.some((e) => e.type === "notify" && e.error.code === ErrorCode.UnknownSession)) {
        void this.unknownSession(parsed.request.session, effects, m);
      } else {
        this.run(effects, m);
      }
    }
  }

  /**
   * Before telling a client its session is unknown, make sure the bucket agrees: a session the
   * bucket has but the table lacks means the table is wrong (a cut read while NATS was
   * restarting, say). Then nothing is answered: this manager steps down and the next takeover
   * rebuilds from the bucket.
   */
  private async unknownSession(session: string, effects: Effect[], m: JsMsg): Promise<void> {
    const epoch = this.actingEpoch;
    try {
      const e = await this.rt.kv.sessions.get(session);
      if (e && e.operation === "PUT") {
        this.rebuildFromBucket(epoch, session);
        return;
      }
    } catch {
      return; // cannot tell now; the client retries its request
    }
    if (this.actingEpoch === epoch) this.run(effects, m);
  }

  private onResponseMsg(m: JsMsg): void {
    const core = this.core!;
    const parsed = parseResponseMsg(this.rt.names, m, this.secret!);
    if ("error" in parsed) {
      core.passed("resp", m.seq);
      if (m.seq > this.replayEnd.resp) void publishDlq(this.rt, parsed.error, m.subject, m.headers, m.data, `resp.${m.seq}`);
      return;
    }
    // The session's client is the table's: the subject names the server that wrote it.
    const client = core.sessions.get(parsed.body.session)?.client;
    if (client === undefined) {
      core.passed("resp", m.seq);
      return; // closed (or not yet replayed: a response of a session opened later in the queue)
    }
    // Also while the request queue's replay is behind: a response stored after the takeover
    // began may belong to a request the table has not read yet (refused, it would be lost).
    const replaying = m.seq <= this.replayEnd.resp || core.reqSeq < this.replayEnd.req;
    if (parsed.type === "attempt") {
      const { at, ...attempt } = parsed.body;
      this.run(core.onAttemptRecord({ seq: m.seq, client, ...attempt, at: at !== undefined ? toCore(at) : storedAt(m) }, now()));
      return;
    }
    // The restart data's size is measured (see above) only for responses and checkpoints.
    if (parsed.body.restartSize > this.rt.config.maxPayload) parsed.body.restartSize = encodedSize(parsed.body.restart);
    else parsed.body.restartSize = 0;
    if (parsed.type === "checkpoint") {
      this.run(core.onCheckpoint({ seq: m.seq, client, ...parsed.body }, replaying), m);
    } else {
      trace("manager.response", parsed.body.session, parsed.body.n);
      const body = parsed.body;
      // When it was stored matters only to a failure or a request with a deadline (the time is
      // read from the message's reply subject: not paid on the hot path).
      const timed = body.error !== undefined || core.sessions.get(body.session)?.requests.get(body.n)?.deadline !== undefined;
      this.run(core.onResponse({ seq: m.seq, client, ...body, size: m.data.length, ...(timed ? { at: storedAt(m) } : {}) }, now(), replaying), m);
    }
  }

  // ---- serving ---------------------------------------------------------------------------

  private serve(epoch: number, sendBack: (e: ManagerEvent) => void): () => void {
    const { rt } = this;
    const core = this.core!;
    const names = rt.names;
    const sub = (subject: string, handler: (m: Msg) => Promise<void> | void) => {
      const s = rt.nc.subscribe(subject, {
        callback: (err, m) => {
          if (err || this.actingEpoch !== epoch) return;
          Promise.resolve(handler(m)).catch((e) => this.log.error({ err: e, subject }, "handler failed"));
        },
      });
      this.subs.push(s);
    };
    sub(names.clientCallAll("open"), (m) => this.onOpen(m));
    sub(names.clientCallAll("resume"), (m) => this.onResume(m));
    sub(names.clientCallAll("close"), (m) => this.onClose(m));
    sub(names.mgr("status"), (m) => replyOk(m, wantsDetail(m.data) ? this.detailedStatus() : this.status()));
    sub(names.registerAll, (m) => this.onRegister(m));
    sub(names.heartbeatAll, (m) => this.onHeartbeat(m));
    this.primarySince = new Date().toISOString();
    this.primaryAt = now();
    this.standbys.clear();
    this.backupSeq = 0;
    const inbox = rt.nc.subscribe(`_INBOX.tandem-backup.${this.node}.${epoch}`, {
      callback: (err, m) => {
        if (err) return;
        try {
          const ack = decode(m.data) as BackupAck;
          this.standbys.set(ack.node, { at: now(), seq: ack.seq, needFull: ack.needFull });
        } catch {
          /* ignore */
        }
      },
    });
    this.ackSub = inbox;
    // Everyone restarts against this epoch (docs/design.md §4, step 3).
    this.run(core.startEpoch(epoch, now()));
    const tickMs = Math.max(20, Math.min(100, rt.config.serverHeartbeatMs / 2));
    this.lastTick = now();
    const tick = setInterval(() => {
      if (this.actingEpoch !== epoch) return;
      const t = now();
      const gap = t - this.lastTick;
      this.lastTick = t;
      // A gap this long means this process was paused (SIGSTOP, a VM freeze): a newer primary
      // may exist. Check the lease before doing anything else.
      if (gap > rt.config.leaseMs / 2) {
        // Timeouts measured across the pause are not real: act on nothing until the lease is
        // confirmed, then give servers a fresh heartbeat window.
        this.log.warn({ pausedMs: Math.round(gap) }, "event loop was paused; verifying the lease");
        void this.verifyLease(epoch).then((ok) => {
          if (!ok) return;
          core.graceServers(now());
        });
        return;
      }
      // Cut off from NATS nobody's heartbeat can arrive: a server is not dead for that (a
      // nats-server restart once moved every session to "other" servers that were the same one).
      if (this.natsDown) return;
      this.run(core.tick(t));
    }, tickMs);
    const snap = setInterval(() => {
      if (this.actingEpoch === epoch && !this.snapshotting) {
        this.snapshotting = this.snapshot(epoch).finally(() => (this.snapshotting = null));
      }
    }, rt.config.backupMs);
    // After a reconnect the pulls in flight are gone: resume consuming at once rather than
    // waiting for missed heartbeats to tell the client library.
    let serving = true;
    void (async () => {
      for await (const st of rt.nc.status()) {
        if (!serving || this.actingEpoch !== epoch) break;
        if (st.type === "disconnect") this.natsDown = true;
        if (st.type === "reconnect") {
          this.natsDown = false;
          core.graceServers(now());
          void this.resumeConsumers(epoch, "reconnected to NATS");
        }
      }
    })();
    // And if a queue moves while our cursor on it does not, resume too. Each queue on its own:
    // in a cluster, the consumer on one queue can die with a nats-server (its pulls then go
    // unanswered, and nats.js keeps retrying) while the other queue's consumer still delivers.
    const lastProgress = { req: { seq: -1, at: now() }, resp: { seq: -1, at: now() } };
    const progress = setInterval(() => {
      if (this.actingEpoch !== epoch) return;
      const still: Array<"req" | "resp"> = [];
      for (const which of ["req", "resp"] as const) {
        const seq = which === "req" ? core.reqSeq : core.respSeq;
        const p = lastProgress[which];
        if (seq !== p.seq) lastProgress[which] = { seq, at: now() };
        else if (now() - p.at >= 3000) still.push(which);
      }
      if (still.length === 0) return;
      void Promise.all(still.map((which) => rt.jsm.streams.info(which === "req" ? rt.names.streamReq : rt.names.streamResp).then((i) => ({ which, last: i.state.last_seq }))))
        .then((infos) => {
          const behind = infos.filter(({ which, last }) => last > (which === "req" ? core.reqSeq : core.respSeq)).map((x) => x.which);
          for (const which of still) lastProgress[which].at = now();
          if (behind.length && this.actingEpoch === epoch) void this.resumeConsumers(epoch, `the ${behind.join(" and ")} queue moved but its consumer did not deliver`);
        })
        .catch(() => {});
    }, 1000);
    // Watchdog: a session waiting for something the table does not hold would wait forever.
    const reported = new Set<string>();
    const watchdog = setInterval(() => {
      if (this.actingEpoch !== epoch) return;
      for (const x of core.stalled()) {
        const key = `${x.session}.${x.missing}.${x.n}`;
        if (reported.has(key)) continue;
        reported.add(key);
        this.log.error(x, "session stalled: the table lacks a queue entry it needs (please report this)");
      }
    }, 5000);
    this.timers.push(tick, snap, watchdog, progress);
    void sendBack;
    return () => {
      serving = false;
      clearInterval(tick);
      clearInterval(snap);
      clearInterval(watchdog);
      clearInterval(progress);
    };
  }

  /**
   * Every backupMs: take a cut of the table and send it to the standbys. The bucket gets the
   * latest cut at most once a second (KV_EVERY_MS): standbys hold the fresh one in memory, the
   * bucket is for a manager started cold, and a write per active session per backup would cost
   * more than the round trips it protects. Records merge into the pending cut, so the bucket
   * always holds a consistent cut (every record as of its cursor, or newer).
   */
  private async snapshot(epoch: number, flush = false): Promise<void> {
    const core = this.core;
    const kvSessions = this.kvSessions;
    const kvCtl = this.kvCtl;
    if (!core || !kvSessions || !kvCtl || this.actingEpoch !== epoch) return;
    const { records, removed, cursor } = core.snapshot();
    for (const r of records) this.kvPending.set(r.session, r);
    for (const id of removed) this.kvPending.delete(id);
    this.sendBackup(epoch, core, records, removed, cursor);
    if (!flush && now() - this.kvWrittenAt < KV_EVERY_MS) return;
    const pending = [...this.kvPending.values()];
    this.kvPending.clear();
    try {
      await Promise.all(pending.map((r) => kvSessions.write(r.session, r, byEpoch(epoch))));
      // The cursor is written last: every record of this cut is stored before it.
      if (this.actingEpoch === epoch) await kvCtl.write("cursor", cursor, byEpoch(epoch));
      this.kvWrittenAt = now();
      this.trimQueues(epoch, cursor);
    } catch (err) {
      if (err instanceof FencedError) {
        this.fenced(epoch, err.message);
        return;
      }
      // Keep them for the next write (newer records of the same session win).
      for (const r of pending) if (!this.kvPending.has(r.session) && core.sessions.has(r.session)) this.kvPending.set(r.session, r);
      // During a NATS election this fails every backupMs: say it once every few seconds.
      if (now() - this.snapshotWarnedAt > 5000) {
        this.snapshotWarnedAt = now();
        this.log.warn({ err: { message: (err as Error).message } }, "snapshot to the bucket failed; retrying (the standbys have it)");
      }
    }
  }

  /** Cuts written to the bucket, oldest first, for trimming the queues behind them. */
  private cuts: Array<{ at: number; reqFrom: number; respFrom: number }> = [];
  private trimmed = { req: 0, resp: 0 };

  /**
   * Storage that does not grow (issue 14): entries below a cut's `reqFrom`/`respFrom` are never
   * read again (every request below is answered, every response below taken, in every session),
   * so the queues are purged up to the cut written 10 s ago. The lag leaves time for a
   * cursor that skipped an entry to find it (healSkipped) before it could go. Before, a live
   * session's queues grew by a message per request and per response for as long as it lived.
   */
  private trimQueues(epoch: number, cursor: CursorRecord): void {
    const t = now();
    this.cuts.push({ at: t, reqFrom: cursor.reqFrom, respFrom: cursor.respFrom });
    let cut: (typeof this.cuts)[number] | undefined;
    const lag = trimLagMs();
    while (this.cuts.length > 0 && t - this.cuts[0]!.at >= lag) cut = this.cuts.shift();
    if (!cut || this.actingEpoch !== epoch) return;
    const { jsm, names } = this.rt;
    for (const [which, stream, from] of [["req", names.streamReq, cut.reqFrom], ["resp", names.streamResp, cut.respFrom]] as const) {
      if (from <= this.trimmed[which] + 1) continue;
      this.trimmed[which] = from - 1;
      // Purge by sequence: every message below `from` (a purge by subject would cost one per session).
      jsm.streams.purge(stream, { seq: from }).catch((err: Error) => this.log.debug({ err: { message: err.message }, stream }, "trimming a queue failed; the next cut retries"));
    }
  }

  /** When a record too large for any backup part was last reported (rate-limits the report). */
  private oversizeWarnedAt = -Infinity;

  /** Backup to the standbys: the same cut as the snapshot, full to any that asked for it. */
  private sendBackup(epoch: number, core: ManagerCore, records: SessionRecord[], removed: string[], cursor: CursorRecord): void {
    const reply = this.ackSub ? `_INBOX.tandem-backup.${this.node}.${epoch}` : undefined;
    if (!reply) return;
    const stale = now() - 10 * this.rt.config.backupMs - 2000;
    for (const [node, a] of this.standbys) if (a.at < stale) this.standbys.delete(node);
    const wantFull = this.backupSeq === 0 || [...this.standbys.values()].some((a) => a.needFull);
    const seq = ++this.backupSeq;
    const base = { epoch, node: this.node, seq, cursor };
    if (wantFull) for (const a of this.standbys.values()) a.needFull = false;
    // What this NATS server carries (its INFO's max_payload), with headroom for headers.
    const maxBytes = (this.rt.nc.info?.max_payload ?? 1024 * 1024) - 1024;
    const all = wantFull ? core.allRecords() : records;
    const gone = wantFull ? [] : removed;
    // The usual backup fits one message: encode it once and send it, as before parts existed.
    const whole = encode({ ...base, full: wantFull, part: 1, parts: 1, records: all, removed: gone } satisfies BackupMsg);
    if (whole.length <= maxBytes) {
      this.rt.nc.publish(this.rt.names.backup, whole, { reply });
      return;
    }
    const { parts, oversized } = splitBackup(base, wantFull, all, gone, maxBytes, encodedSize);
    if (oversized.length > 0 && now() - this.oversizeWarnedAt > 5000) {
      this.oversizeWarnedAt = now();
      this.log.error({ sessions: oversized.map((r) => r.session).slice(0, 10), maxBytes }, "session records too large for any backup message are left out of the backups (the bucket and the queues still have them)");
    }
    for (const m of parts) this.rt.nc.publish(this.rt.names.backup, encode(m), { reply });
  }

  private fenced(epoch: number, reason: string): void {
    if (this.actingEpoch !== epoch) return;
    this.actingEpoch = 0;
    this.log.warn({ reason }, "fenced by a newer manager");
    this.actor?.send({ type: "FENCED", reason });
  }

  /** The table lacks a session the bucket has: step down; the next takeover reads the bucket. */
  private rebuildFromBucket(epoch: number, session: string): void {
    this.log.error({ session }, "the table lacks a session the bucket has; stepping down to rebuild from the bucket");
    this.forceBucket = true;
    this.fenced(epoch, "table inconsistent with the bucket");
  }

  /** After a pause: is the lease still ours? */
  private async verifyLease(epoch: number): Promise<boolean> {
    try {
      const e = await this.rt.kv.ctl.get("leader");
      const lease = e && e.operation === "PUT" ? e.json<LeaseRecord>() : null;
      if (!lease || lease.epoch !== epoch || lease.node !== this.node) {
        this.fenced(epoch, `lease now held by ${lease?.node ?? "nobody"} at epoch ${lease?.epoch ?? 0}`);
        return false;
      }
      return true;
    } catch {
      return this.actingEpoch === epoch;
    }
  }

  private async stepDown(epoch: number): Promise<void> {
    this.baseLog.warn({ epoch }, "stepped down: serving stopped, back to standby");
    await this.release();
  }

  private async release(): Promise<void> {
    this.actingEpoch = 0;
    this.proxies?.stopAll();
    this.proxies = null;
    this.log = this.baseLog;
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    this.ackSub?.unsubscribe();
    this.ackSub = null;
    this.primarySince = null;
    this.kvPending.clear();
    this.kvWrittenAt = 0;
    for (const c of this.consumers) await c.close().catch(() => {});
    this.consumers = [];
    this.consumerRefs = { req: null, resp: null };
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    this.core = null;
  }

  private async drain(): Promise<void> {
    const epoch = this.actingEpoch;
    if (epoch && this.core) {
      await this.snapshotting;
      await this.snapshot(epoch, true);
      this.baseLog.info({ epoch }, "drained: state snapshotted");
    }
    await this.release();
  }

  /**
   * Safety net: re-read one session's request and response queues from the streams and apply
   * them (idempotently) when its client has sent more than the table holds.
   */
  private async replaySession(client: string, session: string, tableLastReq: number, clientLastReq: number, quiet = false): Promise<void> {
    const { rt } = this;
    const core = this.core;
    if (!core) return;
    let applied = 0;
    for (const [stream, subject] of [
      [rt.names.streamReq, rt.names.req(client, session)],
      [rt.names.streamResp, rt.names.respOf(session)],
    ] as const) {
      try {
        const info = await rt.jsm.streams.info(stream, { subjects_filter: subject });
        // (The response filter is a wildcard: one subject per server that answered.)
        if (Object.keys(info.state.subjects ?? {}).length === 0) continue;
        const name = `replay_${newId(6)}`;
        await rt.jsm.consumers.add(stream, { name, ack_policy: AckPolicy.None, filter_subject: subject, deliver_policy: DeliverPolicy.All, inactive_threshold: 30_000_000_000 });
        const c = await rt.js.consumers.get(stream, name);
        try {
          for (;;) {
            const batch = await c.fetch({ max_bytes: PULL_MAX_BYTES, expires: 1000 });
            let got = 0;
            let last = -1;
            for await (const msg of batch) {
              got++;
              last = msg.info.pending;
              core.offCursor(() => (stream === rt.names.streamReq ? this.onRequestMsg(msg, true) : this.onResponseMsg(msg)));
              applied++;
              if (msg.info.pending === 0) break;
            }
            if (got === 0 || last === 0) break;
          }
        } finally {
          await c.delete().catch(() => {});
        }
      } catch (err) {
        this.log.warn({ err, session }, "re-reading a session's queue failed");
      }
    }
    const s = core.sessions.get(session);
    if (quiet) return;
    this.log.error(
      { session, client, tableLastReq, clientLastReq, nowLastReq: s?.lastReq, applied },
      "the table lacked requests its client had sent; re-read the session's queues (please report this)",
    );
  }

  // ---- request/reply handlers ------------------------------------------------------------

  /**
   * The client a call comes from: its subject's token, which NATS lets only that client's user
   * publish on. A body naming another client is refused (alice once opened, read and closed
   * bob's sessions by writing "client":"bob").
   */
  private callerOf(op: ClientCall, m: Msg, body: Record<string, unknown>): string {
    const client = this.rt.names.clientOfCall(op, m.subject);
    if (!client) throw malformed(`${op}: subject ${m.subject} is not ${this.rt.names.clientCall(op, "<client>")}`);
    if (body.client !== undefined && body.client !== client) {
      throw malformed(`${op}: the body names client ${JSON.stringify(body.client)} but the call comes from ${client}`, { field: "client", subject: m.subject });
    }
    return client;
  }

  private async onOpen(m: Msg): Promise<void> {
    const core = this.core!;
    const epoch = this.actingEpoch;
    let body: Record<string, unknown>;
    try {
      body = parse(V.open, decode(m.data));
      body.client = this.callerOf("open", m, body);
      if (m.data.length > this.rt.config.maxPayload && encodedSize(body.restart) > this.rt.config.maxPayload) {
        const size = encodedSize(body.restart);
        throw new TandemError(ErrorCode.PayloadTooLarge, `restart data is ${size} bytes; the limit is ${this.rt.config.maxPayload}`, { context: { size, limit: this.rt.config.maxPayload } });
      }
      if (body.hedge !== undefined) body.hedge = parseHedge(body.hedge);
    } catch (err) {
      return this.reject(m, err as TandemError);
    }
    const client = body.client as string;
    const service = body.service as string;
    if (!core.isKnownService(service) && now() - this.primaryAt < this.rt.config.serverTimeoutMs) {
      // Just took over: servers of this service may not have registered again yet. Retryable.
      replyError(m, new TandemError(ErrorCode.Unavailable, `manager is starting; service "${service}" not seen yet, retry`, { context: { service } }));
      return;
    }
    if (!core.isKnownService(service)) {
      return this.reject(
        m,
        new TandemError(ErrorCode.UnknownService, `no server has registered for service "${service}"; start one with: tandem server --service ${service}`, {
          context: { service },
        }),
      );
    }
    const open = core.sessionsOf(client);
    if (open >= this.rt.config.maxSessionsPerClient) {
      return this.reject(
        m,
        new TandemError(ErrorCode.SessionLimit, `client ${client} has ${open} sessions open; the limit is ${this.rt.config.maxSessionsPerClient}. Close sessions it no longer uses`, {
          context: { client, open, limit: this.rt.config.maxSessionsPerClient },
        }),
      );
    }
    // And across clients: unsecured, anyone can make up client ids (issue 13: no limit across ids).
    if (core.sessions.size >= this.rt.config.maxSessions) {
      return this.reject(
        m,
        new TandemError(ErrorCode.SessionLimit, `the manager has ${core.sessions.size} sessions open, its limit (TANDEM_MAX_SESSIONS); close sessions or raise the limit`, {
          context: { open: core.sessions.size, limit: this.rt.config.maxSessions, scope: "manager" },
        }),
      );
    }
    const session = newId();
    const maxPending = Math.min((body.maxPending as number | undefined) ?? this.rt.config.maxPending, this.rt.config.maxPending);
    const hedge = body.hedge as HedgeOptions | undefined;
    const retry = body.retry as RetryOptions | undefined;
    const { entry, effects } = core.open({ session, client, service, maxPending, restart: body.restart, ...(hedge ? { hedge } : {}), ...(retry ? { retry } : {}) }, now());
    try {
      // The session's existence goes into its own request queue first: a standby that takes
      // over from a backup older than this open recreates the session when it replays it.
      await publishToQueue(
        this.rt.requester,
        this.rt.names.req(client, session),
        encode({ open: { service, maxPending, ...(body.restart !== undefined ? { restart: body.restart } : {}), ...(hedge ? { hedge } : {}), ...(retry ? { retry } : {}) } }),
        { msgID: `${session}.open`, headers: makeHeaders({ session, epoch, kind: "control", client }), timeout: JS_TIMEOUT_MS },
      );
      await this.kvSessions!.create(session, core.record(entry));
    } catch (err) {
      core.close(client, session);
      return this.reject(m, new TandemError(ErrorCode.Unavailable, "could not store the session; try again", { cause: err }));
    }
    // A primary that was paused must not hand out a session a newer primary will not know.
    if (this.actingEpoch !== epoch || !(await this.verifyLease(epoch))) {
      replyError(m, new TandemError(ErrorCode.NotLeader, "this manager lost its lease; retry the open"));
      return;
    }
    replyOk<OpenReply>(m, { session, epoch, maxPending, maxPayload: this.rt.config.maxPayload });
    this.log.debug({ session, client, service, server: entry.server }, "session opened");
    this.run(effects);
  }

  private async onResume(m: Msg): Promise<void> {
    const core = this.core!;
    let client: string;
    let session: string;
    let clientLastReq = 0;
    let clientTaken = 0;
    try {
      const v = parse(V.resume, decode(m.data));
      client = this.callerOf("resume", m, v);
      session = v.session;
      clientLastReq = v.lastReq ?? 0;
      clientTaken = v.taken ?? 0;
    } catch (err) {
      return this.reject(m, err as TandemError);
    }
    // I6: everything the client saw acknowledged in its request queue must be applied first.
    try {
      const info = await this.rt.jsm.streams.info(this.rt.names.streamReq);
      await this.caughtUpTo(info.state.last_seq, 0, 5000);
    } catch (err) {
      return this.reject(m, new TandemError(ErrorCode.Unavailable, "manager is catching up with the queues; retry the resume", { cause: err }));
    }
    const known = core.sessions.get(session);
    if (known && known.client === client && (clientLastReq > known.lastReq || clientTaken > known.taken)) {
      // The client has sent requests, or committed receipts, that the table does not hold: its
      // `taken` comes from the session's queue, not only from the table (a receipt the cursor
      // skipped once made a resumed client get committed responses again). Read them again.
      await this.replaySession(client, session, known.lastReq, clientLastReq);
    }
    // Running at its server, as the server's heartbeats say: long work, not lost (docs/design.md §9).
    const running = known && known.client === client && known.dispatched > 0 && now() - known.runningAt < this.rt.config.serverTimeoutMs ? known : null;
    if (known && known.client === client && !running && known.dispatched > 0 && now() - known.dispatchedAt > STUCK_DISPATCH_MS) {
      // A request at a server for long with its client waiting: its response may be in the queue
      // unseen (a cursor that skipped it in a NATS election), or the work lost. Re-read the
      // session's queues, and if it is still unanswered send it again (a server still running
      // it says so; a handler runs at least once anyway).
      const n = known.dispatched;
      const answered = known.answered;
      await this.replaySession(client, session, known.lastReq, clientLastReq, true);
      const s = core.sessions.get(session);
      if (s && s.answered > answered) {
        this.log.error({ session, client, n }, "the table missed a stored response; re-read the session's queues (please report this)");
      } else if (s && s.dispatched === n) {
        this.log.warn({ session, client, n, server: s.server, waitedMs: Math.round(now() - s.dispatchedAt) }, "a request has been at its server long with its client waiting; sending it again");
        this.run(core.redispatch(session, now()));
      }
    }
    if (known && known.client === client) {
      const d = core.diagnose(session, now());
      if (d) {
        this.log.warn({ session, client, answered: known.answered, lastReq: known.lastReq, server: known.server, why: d.reason }, "client re-synced while its session had nothing at a server");
        if (d.reason === "request missing from the table") await this.replaySession(client, session, known.lastReq, clientLastReq);
        this.run(d.effects);
      }
    }
    const { entry, effects } = core.resume(client, session, now());
    if (!entry) {
      const rec = await this.rt.kv.sessions.get(session).catch(() => null);
      if (rec && rec.operation === "PUT" && rec.json<SessionRecord>().client === client) {
        this.rebuildFromBucket(this.actingEpoch, session);
        replyError(m, new TandemError(ErrorCode.Unavailable, "manager is rebuilding; retry the resume"));
        return;
      }
      return this.reject(
        m,
        new TandemError(ErrorCode.UnknownSession, `session ${session} is not open (closed, or never opened by client ${client}); open a new session`, {
          context: { session, client },
        }),
      );
    }
    const info = core.restartInfo(session)!;
    replyOk<ResumeReply>(m, {
      session,
      service: entry.service,
      epoch: this.actingEpoch,
      restart: entry.clientRestart,
      lastReq: entry.lastReq,
      taken: entry.taken,
      requests: info.requests,
      responses: info.responses,
      maxPending: entry.maxPending,
      ...(running && running.server ? { running: { n: running.dispatched, server: running.server, forMs: Math.round(now() - running.dispatchedAt) } } : {}),
      maxPayload: this.rt.config.maxPayload,
    });
    this.log.info({ session, client, taken: entry.taken, lastReq: entry.lastReq }, "session resumed");
    this.run(effects);
  }

  private async onClose(m: Msg): Promise<void> {
    const core = this.core!;
    let client: string;
    let session: string;
    try {
      const v = parse(V.close, decode(m.data));
      client = this.callerOf("close", m, v);
      session = v.session;
    } catch (err) {
      return this.reject(m, err as TandemError);
    }
    const { closed, effects } = core.close(client, session);
    if (!closed) {
      return this.reject(m, new TandemError(ErrorCode.UnknownSession, `session ${session} is not open`, { context: { session } }));
    }
    this.run(effects);
    this.proxies?.close(session);
    // A snapshot taken before the close must not write the record back after the purge.
    await this.snapshotting;
    const { names, jsm } = this.rt;
    // Purge the queues first, then the record: a crash in between leaves an empty record,
    // never queue entries without one.
    await Promise.all([
      jsm.streams.purge(names.streamReq, { filter: names.req(client, session) }),
      jsm.streams.purge(names.streamResp, { filter: names.respOf(session) }),
      // Hedge records of the session (`<session>.hedge.<n>`, `<session>.took.<n>.<server>`).
      jsm.streams.purge(`KV_${names.bucketSessions}`, { filter: `$KV.${names.bucketSessions}.${session}.>` }),
    ]).catch((err) => this.log.warn({ err, session }, "purge of a closed session's queues failed"));
    this.kvSessions?.forget(session);
    this.kvRestart?.forget(`${session}.client`);
    this.kvRestart?.forget(`${session}.server`);
    // Purged from the buckets' streams, not with kv.purge: that leaves a marker per key for good
    // (6 MiB after 3,000 closed sessions with none live).
    await Promise.all([
      jsm.streams.purge(`KV_${names.bucketSessions}`, { filter: `$KV.${names.bucketSessions}.${session}` }),
      jsm.streams.purge(`KV_${names.bucketRestart}`, { filter: `$KV.${names.bucketRestart}.${session}.*` }),
    ]).catch((err) => this.log.warn({ err, session }, "removing a closed session's records failed"));
    replyOk(m, { session, closed: true });
    this.log.debug({ session, client }, "session closed");
  }

  /**
   * A registration counts once the server answers on its own subject (`<p>.srv.<id>.ping`,
   * which only that server's user may receive on when secured) and names the same service:
   * registrations of servers that did not exist once drew new sessions that then timed out, and
   * one under a real server's id for another service drew that service's work to the real server.
   */
  private onRegister(m: Msg): void {
    const core = this.core!;
    const epoch = this.actingEpoch;
    let server: string;
    let service: string;
    let capacity: number;
    let incarnation: string | undefined;
    try {
      // Who registers for what is in the subject (NATS permissions enforce it when secured);
      // a body that says otherwise is refused.
      const where = this.rt.names.parseSrvSubject(m.subject);
      if (!where || where.op !== "register") throw malformed(`register: subject ${m.subject} is not ${this.rt.names.register("<server>", "<service>")}`);
      const v = parse(V.register, decode(m.data));
      if ((v.server !== undefined && v.server !== where.server) || (v.service !== undefined && v.service !== where.service)) {
        throw malformed(`register: the body names server ${JSON.stringify(v.server)} of ${JSON.stringify(v.service)} but the subject ${m.subject}`, { field: "server" });
      }
      server = where.server;
      service = where.service!;
      if (server === MANAGER_WRITER) throw malformed(`register: "${MANAGER_WRITER}" is not a server id (the manager writes under it)`, { field: "server" });
      capacity = v.capacity ?? 1;
      incarnation = v.incarnation;
    } catch (err) {
      return this.reject(m, err as TandemError);
    }
    const { rt } = this;
    void rt.requester
      .request(rt.names.srv(server, "ping"), encode({ epoch }), { timeout: rt.config.ackTimeoutMs, headers: makeHeaders({ epoch, kind: "control" }) })
      .then(
        (r) => {
          const rep = decode(r.data) as Reply<{ server?: unknown; service?: unknown }>;
          return rep.ok && rep.value.server === server && rep.value.service === service ? null : `it answered for ${JSON.stringify(rep.ok ? rep.value.service : rep.error.code)}`;
        },
        () => "nothing answered on its own subject",
      )
      .then((problem) => {
        if (this.actingEpoch !== epoch || this.core !== core) return; // no longer ours to act on
        if (problem) {
          return this.reject(m, new TandemError(ErrorCode.ServerUnverified, `registration of server ${server} for service ${service} refused: ${problem} (${rt.names.srv(server, "ping")})`, { context: { server, service } }));
        }
        const effects = core.registerServer(server, service, capacity, now(), incarnation);
        replyOk(m, { epoch: this.actingEpoch });
        this.log.info({ server, service }, "server registered");
        this.run(effects);
      });
  }

  private onHeartbeat(m: Msg): void {
    const core = this.core!;
    try {
      const where = this.rt.names.parseSrvSubject(m.subject);
      if (!where || where.op !== "heartbeat") throw malformed(`heartbeat: subject ${m.subject} is not ${this.rt.names.heartbeat("<server>")}`);
      const v = parse(V.heartbeat, decode(m.data));
      if (v.server !== undefined && v.server !== where.server) {
        throw malformed(`heartbeat: the body names server ${JSON.stringify(v.server)} but the subject ${m.subject}`, { field: "server" });
      }
      const server = where.server;
      const epoch = v.epoch ?? 0;
      if (epoch > this.actingEpoch) {
        // A server says it has seen a newer manager. Only the lease moves an epoch: check it
        // (at most once a second) and step down if it is no longer ours; a claim the lease does
        // not back is refused and reported, never a step-down (a server reporting a higher
        // epoch three times a second once made the managers step down 14 times in 15 s).
        this.checkEpochClaim(server, epoch, m);
        return;
      }
      const known = core.heartbeat(server, now(), v.running);
      replyOk<HeartbeatReply>(m, known ? { epoch: this.actingEpoch } : { epoch: this.actingEpoch, reregister: true });
    } catch (err) {
      this.reject(m, err as TandemError);
    }
  }

  private epochClaimCheckedAt = -Infinity;
  private epochClaimReportedAt = -Infinity;

  private checkEpochClaim(source: string, claimed: number, m: Msg): void {
    const acting = this.actingEpoch;
    const err = new TandemError(ErrorCode.StaleEpoch, `epoch ${claimed} is not the lease's (this manager holds epoch ${acting})`, {
      context: { source, claimed, acting },
    });
    replyError(m, err);
    const t = now();
    if (t - this.epochClaimCheckedAt < 1000) return;
    this.epochClaimCheckedAt = t;
    void this.verifyLease(acting).then((ours) => {
      if (!ours || now() - this.epochClaimReportedAt < 10_000) return;
      this.epochClaimReportedAt = now();
      this.baseLog.warn({ source, claimed, epoch: acting }, "a peer claims an epoch the lease does not back; refused (further claims in the next 10 s are not logged)");
      void publishDlq(this.rt, err, m.subject, m.headers, m.data);
    });
  }

  /**
   * A record of the manager's own in a session's response queue (an error in a request's place,
   * a failed attempt) must reach the queue, or the request is never answered: retry while this
   * epoch acts (same message id, so it is stored once). Under a flood of refused requests the
   * publishes once timed out and were given up.
   */
  private async storeManagerRecord(epoch: number, session: string, n: number, data: Uint8Array, msgID: string, code: string): Promise<void> {
    const { rt } = this;
    const headers = makeHeaders({ session, request: n, epoch, kind: code === "attempt" ? "control" : "response", code });
    await withBackoff(() => publishToQueue(rt.requester, rt.names.resp(MANAGER_WRITER, session), data, { msgID, headers, timeout: JS_TIMEOUT_MS }), {
      maxMs: 2000,
      while: () => this.actingEpoch === epoch,
      onFailure: (err, attempt) => attempt === 6 && this.log.warn({ err, session, n, code }, "storing a record in a response queue keeps failing; retrying"),
    }).catch(() => {}); // this epoch ended: the next primary answers the request
  }

  /** Send request n of a session to a server; true when the server acknowledged it. */
  private async sendWork(epoch: number, server: string, session: string, n: number, copy?: number): Promise<boolean> {
    const s = this.core?.sessions.get(session);
    const req = s?.requests.get(n);
    if (!s || !req) return false;
    let payload = req.payload;
    if (req.evicted) {
      // Not held in memory (read on replay past the byte bounds): the queue has it.
      const stored = await this.rt.jsm.streams.getMessage(this.rt.names.streamReq, { seq: req.seq }).catch(() => null);
      const parsed = stored ? parseRequestMsg(this.rt.names, stored) : null;
      if (!parsed || !("type" in parsed) || parsed.type !== "request" || parsed.request.n !== n) {
        this.log.warn({ session, n, seq: req.seq }, "could not read a request back from its queue; retrying");
        return false;
      }
      payload = parsed.request.payload;
    }
    const work: WorkMsg = {
      epoch,
      session,
      client: s.client,
      service: s.service,
      n,
      kind: req.kind,
      payload,
      restart: s.serverRestart,
      k: dispatchKey(this.secret!, session, n, server),
      ...(copy !== undefined ? { copy } : {}),
      ...(req.tp !== undefined ? { tp: req.tp } : {}),
      attempt: (s.attempts.get(n)?.failures ?? 0) + 1,
      ...(req.deadline !== undefined ? { deadline: Math.round(toWall(req.deadline)) } : {}),
    };
    const headers = makeHeaders({ session, request: n, epoch, kind: req.kind, ...(req.tp !== undefined ? { traceparent: req.tp } : {}) });
    trace("manager.dispatch", session, n);
    return this.rt.requester
      .request(this.rt.names.work(server, session), encode(work), { timeout: this.rt.config.ackTimeoutMs, headers })
      .then((r) => (decode(r.data) as Reply<unknown>).ok, () => false);
  }

  /** What the hedging proxies of an epoch do on the wire. */
  private hedgeEffects(epoch: number) {
    const { rt } = this;
    const timeout = rt.config.ackTimeoutMs;
    const ok = (r: { data: Uint8Array }) => (decode(r.data) as Reply<unknown>).ok;
    return {
      sendCopy: (server: string, session: string, n: number, copy: number): Promise<boolean> =>
        this.actingEpoch === epoch ? this.sendWork(epoch, server, session, n, copy) : Promise.resolve(false),
      cancel: async (server: string, session: string, n: number): Promise<boolean> => {
        if (this.actingEpoch !== epoch) return true; // not ours to finish any more
        const headers = makeHeaders({ session, request: n, epoch, kind: "control" });
        return this.rt.requester.request(rt.names.cancel(server, session), encode({ epoch, session, n }), { timeout, headers }).then(ok, () => false);
      },
      record: (rec: HedgeRecord): void => {
        // A closed session's records are purged: do not write one back.
        if (this.actingEpoch !== epoch || !this.core?.sessions.has(rec.session)) return;
        rt.kv.sessions.put(`${rec.session}.hedge.${rec.n}`, encode(rec)).catch((err) => this.log.warn({ err, session: rec.session }, "could not record a hedge outcome"));
      },
    };
  }

  private reject(m: Msg, err: TandemError | Error): void {
    const te = err instanceof TandemError ? err : new TandemError(ErrorCode.Malformed, String(err.message ?? err));
    replyError(m, te);
    void publishDlq(this.rt, te, m.subject, m.headers, m.data);
  }

  /** When a session too large for any restart message was last reported (rate-limits it). */
  private restartOversizeWarnedAt = -Infinity;

  /**
   * A restart to one client or server, in as many messages as it takes for each to fit the
   * server's max_payload (a client with thousands of sessions, or large restart data, once made
   * one restart too large to send, retried forever: the takeover never finished for it). Each
   * part is acknowledged on its own, as the sessions it names are restarted independently;
   * resolves with every part's acknowledgement, or null when any part failed (retried whole).
   */
  private async sendRestart<A>(subject: string, epoch: number, sessions: RestartSession[]): Promise<A[] | null> {
    const { rt } = this;
    const maxBytes = (rt.nc.info?.max_payload ?? 1024 * 1024) - 1024;
    const overhead = encodedSize({ epoch, sessions: [] }) + 16;
    const { parts, oversized } = splitToFit(sessions, encodedSize, maxBytes - overhead);
    if (oversized.length > 0 && now() - this.restartOversizeWarnedAt > 5000) {
      this.restartOversizeWarnedAt = now();
      this.log.error({ subject, sessions: oversized.map((s) => s.session).slice(0, 10), maxBytes }, "sessions whose restart (restart data and queues) cannot fit any message are left out of the restart");
    }
    const headers = makeHeaders({ epoch, kind: "control" });
    try {
      const replies = await Promise.all(
        parts.map((p) => rt.requester.request(subject, encode({ epoch, sessions: p } satisfies RestartMsg), { timeout: rt.config.ackTimeoutMs, headers })),
      );
      const acks: A[] = [];
      for (const r of replies) {
        const rep = decode(r.data) as Reply<A>;
        if (!rep.ok) return null;
        acks.push(rep.value);
      }
      return acks;
    } catch {
      return null;
    }
  }

  // ---- effects ---------------------------------------------------------------------------

  /** `source`: the queue message the effects answer (a dead letter about it carries its bytes). */
  private run(effects: Effect[], source?: JsMsg): void {
    const epoch = this.actingEpoch;
    if (!epoch) return;
    for (const e of effects) this.exec(e, epoch, source);
  }

  private exec(e: Effect, epoch: number, source?: JsMsg): void {
    const { rt } = this;
    const core = this.core;
    if (!core || this.actingEpoch !== epoch) return;
    const timeout = rt.config.ackTimeoutMs;
    switch (e.type) {
      case "dispatch": {
        const s = core.sessions.get(e.session);
        const req = s?.requests.get(e.n);
        if (!s || !req) return;
        rt.metrics.forService(s.service).dispatched.inc();
        const acked = (ok: boolean) => (ok ? core.dispatchAcked(e.session, e.n) : this.run(core.dispatchFailed(e.session, e.n, now())));
        // A hedged session's proxy sends the copies (the first one to this server).
        if (s.hedge && this.proxies) this.proxies.dispatch(e.session, e.n, e.server, acked);
        else void this.sendWork(epoch, e.server, e.session, e.n).then(acked);
        return;
      }
      case "answered": {
        this.proxies?.answered(e.session, e.n, e.server, e.replaying ? [] : e.others);
        return;
      }
      case "cancel": {
        rt.nc.publish(rt.names.cancel(e.server, e.session), encode({ epoch, session: e.session, n: e.n }), {
          headers: makeHeaders({ session: e.session, request: e.n, epoch, kind: "control" }),
        });
        return;
      }
      case "deliver": {
        const s = core.sessions.get(e.session);
        const resp = s?.responses.get(e.n);
        if (!s || !resp) return;
        const msg: DeliverMsg = { epoch, session: s.id, n: e.n, server: resp.server, ...(resp.error ? { error: resp.error } : { ok: resp.ok }) };
        if (resp.tp !== undefined) msg.tp = resp.tp;
        const headers = makeHeaders({ session: s.id, request: e.n, epoch, kind: "response", ...(resp.tp !== undefined ? { traceparent: resp.tp } : {}) });
        trace("manager.deliver", s.id, e.n);
        this.rt.requester
          .request(rt.names.deliver(e.client, e.session), encode(msg), { timeout, headers })
          .then((r) => {
            const rep = decode(r.data) as Reply<unknown>;
            if (rep.ok) {
              rt.metrics.forService(s.service).delivered.inc();
              this.run(core.deliverAcked(e.session, e.n, now()));
            }
            else this.run(core.deliverFailed(e.session, e.n, now()));
          })
          .catch(() => this.run(core.deliverFailed(e.session, e.n, now())));
        return;
      }
      case "putRestart": {
        // Never older over newer (I6), whoever wrote the newer one.
        const mine = e.record;
        this.kvRestart
          ?.write(`${e.session}.${e.side}`, mine, (stored) => {
            const s = stored as RestartRecord | null;
            return !s || mine.n > s.n || (mine.n === s.n && mine.seq >= s.seq) ? "overwrite" : "skip";
          })
          .catch((err) => {
            if (now() - this.restartWarnedAt < 5000) return;
            this.restartWarnedAt = now();
            this.log.warn({ err: { message: (err as Error).message }, session: e.session }, "storing restart data in the bucket failed (it stays in the queue); further failures in the next 5 s are not logged");
          });
        return;
      }
      case "storeError": {
        const body = { n: e.n, k: dispatchKey(this.secret!, e.session, e.n, MANAGER_WRITER), error: e.error };
        void this.storeManagerRecord(epoch, e.session, e.n, encode(body), `${e.session}.${e.n}`, e.error.code);
        return;
      }
      case "notify": {
        const msg: DeliverMsg = { epoch, session: e.session, n: e.n, server: "manager", error: e.error };
        rt.nc.publish(rt.names.deliver(e.client, e.session), encode(msg), { headers: makeHeaders({ session: e.session, request: e.n, epoch, kind: "control", code: e.error.code }) });
        return;
      }
      case "dlq": {
        const dedupe = `${e.context.session ?? ""}.${e.context.n ?? ""}`;
        if (e.reqSeq !== undefined) {
          // The request the entry is about, as it was queued: subject, headers and bytes.
          void rt.jsm.streams
            .getMessage(rt.names.streamReq, { seq: e.reqSeq })
            .catch(() => null)
            .then((sm) => publishDlq(rt, e, sm?.subject ?? "", sm?.header, sm?.data, dedupe));
        } else if (source) {
          void publishDlq(rt, e, source.subject, source.headers, source.data, dedupe);
        } else {
          void publishDlq(rt, e, "", undefined, undefined, dedupe);
        }
        return;
      }
      case "recordAttempt": {
        rt.metrics.failedAttempts.inc({ service: core.sessions.get(e.session)?.service ?? "", code: e.error.code });
        const body = { n: e.n, k: dispatchKey(this.secret!, e.session, e.n, MANAGER_WRITER), attempt: { server: e.server, error: e.error, at: Math.round(toWall(e.at)) } };
        // Numbered by the attempt it ends: stored once however often it is written.
        const failures = core.sessions.get(e.session)?.attempts.get(e.n)?.failures ?? 0;
        void this.storeManagerRecord(epoch, e.session, e.n, encode(body), `${e.session}.${e.n}.a${failures + 1}`, "attempt");
        return;
      }
      case "restartServer": {
        const sessions: RestartSession[] = [];
        for (const id of e.sessions) {
          const info = core.restartInfo(id);
          const s = core.sessions.get(id);
          if (info && s) sessions.push({ ...info, restart: s.serverRestart });
        }
        this.sendRestart<ServerRestartAck>(rt.names.srv(e.server, "restart"), epoch, sessions).then((acks) => {
          if (!acks) return core.serverRestartFailed(e.server, now());
          const ack: ServerRestartAck = { server: e.server, working: acks.flatMap((a) => a.working) };
          this.log.info({ server: e.server, sessions: e.sessions.length, working: ack.working.length, parts: acks.length }, "server session restarted");
          this.run(core.serverRestartAcked(ack, now()));
        });
        return;
      }
      case "restartClient": {
        const sessions: RestartSession[] = [];
        for (const id of e.sessions) {
          const info = core.restartInfo(id);
          const s = core.sessions.get(id);
          if (info && s) sessions.push({ ...info, restart: s.clientRestart });
        }
        this.sendRestart<ClientRestartAck>(rt.names.cli(e.client, "restart"), epoch, sessions).then((acks) => {
          if (!acks) return this.run(core.clientRestartFailed(e.client, now()));
          const ack: ClientRestartAck = { client: e.client, sessions: acks.flatMap((a) => a.sessions) };
          this.log.info({ client: e.client, sessions: e.sessions.length, parts: acks.length }, "client session restarted");
          this.run(core.clientRestartAcked(ack, now()));
        });
        return;
      }
      case "served": {
        rt.metrics.workSeconds.labels({ service: e.service }).observe(e.ms / 1000);
        this.recent.add(Date.now(), e.ms, e.ok);
        return;
      }
      case "report": {
        this.log[e.level](e.context, e.message);
        return;
      }
    }
  }
}

