/**
 * A manager node (docs/design.md §4): wires managerMachine (its lifecycle: standby, taking
 * over, primary, stepping down) to the lease and to primary terms. Any number of nodes may run;
 * the lease makes one of them primary. A term (manager/term.ts) is what a node holds while
 * primary of one epoch, in parts with one reason to change each:
 *
 * - manager/lease.ts: the lease, renewed by compare-and-set; the standby's watch and backups
 * - manager/rebuild.ts: the table from a backup or the bucket, the queues replayed
 * - manager/consumers.ts: the cursors on the queue streams, healed and resumed
 * - manager/intake.ts: what the queues say, applied to the table (ManagerCore)
 * - manager/calls.ts: open, resume, close, register, heartbeat
 * - manager/effects.ts: the core's effects carried out on the wire
 * - manager/backups.ts: backups to the standbys, snapshots to the bucket, trimmed queues
 * - manager/store.ts: the lease, cursors, queues and records as kept in JetStream
 *
 * Only an acting term acts; every effect checks that its term still acts (I5).
 */
import type { Msg, Subscription } from "@nats-io/transport-node";
import { createActor, fromCallback, fromPromise, waitFor, type Actor } from "xstate";
import type { BackupStore } from "../machines/backupStore.js";
import { managerMachine, type ManagerEvent } from "../machines/managerMachine.js";
import { RecentSeries, type SecondView } from "../machines/recentSeries.js";
import { ErrorCode, TandemError } from "../runtime/errors.js";
import type { Logger } from "../runtime/logger.js";
import type { Runtime } from "../runtime/runtime.js";
import { decode, malformed } from "../runtime/wire.js";
import { publishDlq, replyOk } from "./protocol.js";
import { Lease } from "./manager/lease.js";
import { rebuild } from "./manager/rebuild.js";
import { JetStreamStore, type ManagerStore } from "./manager/store.js";
import { now, type ManagerContext, type PrimaryTerm } from "./manager/term.js";

export type { LeaseRecord } from "./manager/lease.js";

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
  /** Pulls of a cursor that nats-server refused (409): each one left the cursor idle until consume() pulled again. */
  refusedPulls: { req: number; resp: number };
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

/** A status request that asks for the dashboard's detail: `{ "detail": true }`. */
function wantsDetail(data: Uint8Array): boolean {
  if (data.length === 0 || data.length > 256) return false;
  try {
    return (decode(data) as { detail?: unknown } | null)?.detail === true;
  } catch {
    return false;
  }
}

/** Room in a work message for everything but its payload and restart data (ids, headers). */
const WORK_OVERHEAD = 2048;

export class ManagerNode implements ManagerContext {
  readonly node: string;
  readonly baseLog: Logger;
  /** Responses served in the last minute, for the dashboard's charts (kept across terms). */
  readonly recent = new RecentSeries();
  readonly store: ManagerStore;
  private readonly lease: Lease;
  private actor: Actor<typeof managerMachine> | undefined;
  /** The primary term this node acts for; null when standby. */
  private term: PrimaryTerm | null = null;
  /** The deployment's dispatch secret, read by the first term. */
  private secret: Buffer | null = null;
  /** The next rebuild reads the bucket, not the backup (after an inconsistency). */
  private forceBucket = false;
  private unwatch: Array<() => void> = [];

  constructor(readonly rt: Runtime) {
    this.node = rt.config.node;
    this.baseLog = rt.logger.child({ role: "manager", node: this.node });
    this.store = new JetStreamStore(rt);
    this.lease = new Lease(rt, this.store, this.node, this.baseLog);
    // A batch of acknowledgements that cannot be read is bad input like any other (README: Limits).
    rt.requester.onMalformedBatch = (subject, data, problem) => {
      const responder = subject.slice(subject.lastIndexOf(".") + 1);
      const err = malformed(`a batch of acknowledgements from ${responder} could not be read: ${problem}; the requests it did not settle are sent again`, { responder, problem });
      this.baseLog.warn({ subject, code: err.code }, err.message);
      void publishDlq(rt, err, subject, undefined, data);
    };
  }

  /** Standby side: the primary's backups (tests look at what a standby holds). */
  get backup(): BackupStore {
    return this.lease.backup;
  }

  /** The epoch this node acts in; 0 when not primary. */
  get epoch(): number {
    return this.term?.acting ? this.term.epoch : 0;
  }

  get state(): string {
    const s = this.actor?.getSnapshot();
    return s ? JSON.stringify(s.value) : "new";
  }

  isPrimary(): boolean {
    return this.actor?.getSnapshot().matches("primary") ?? false;
  }

  /** Ready (/readyz): primary, or a standby whose last backup from the primary is current. */
  readiness(): { ready: boolean; why: string } {
    const snap = this.actor?.getSnapshot();
    if (!snap || snap.status === "done") return { ready: false, why: "not running" };
    if (snap.matches("primary")) return { ready: true, why: `primary at epoch ${snap.context.epoch}` };
    const age = now() - this.lease.lastBackupAt;
    if (age <= this.rt.config.leaseMs) return { ready: true, why: `standby for ${snap.context.leader ?? "?"}, last backup ${Math.round(age)} ms ago` };
    return { ready: false, why: `${this.state}: ${Number.isFinite(age) ? `no backup from a primary for ${Math.round(age)} ms` : "no backup from a primary yet"}` };
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
        watchLease: fromCallback<ManagerEvent, { node: string }>(({ sendBack }) => this.lease.watch(sendBack)),
        acquireLease: fromPromise(({ input }) => this.lease.acquire(input.previous)),
        rebuild: fromPromise(({ input }) => this.startTerm(input.epoch)),
        serve: fromCallback<ManagerEvent, { epoch: number }>(() => this.serve()),
        renewLease: fromPromise(({ input }) =>
          this.lease.renew(input.lease).catch((err: unknown) => {
            // Another manager holds the lease: nothing of this term may act any more.
            if (this.term) this.term.acting = false;
            throw err;
          }),
        ),
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
    this.actor.subscribe({ error: (err) => this.baseLog.error({ err }, "manager machine failed") });
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

  // ---- terms -----------------------------------------------------------------------------

  private async startTerm(epoch: number): Promise<void> {
    const forceBucket = this.forceBucket;
    this.forceBucket = false;
    const term = await rebuild(this, this.lease, epoch, { forceBucket, secret: this.secret }, (t) => {
      this.secret = t.secret;
      this.term = t;
    });
    if (this.term !== term) await term.release();
  }

  /** Serving: the calls answered, the table's clock ticking, the consumers watched. */
  private serve(): () => void {
    const term = this.term;
    if (!term) return () => {};
    const { rt, core } = term;
    const names = rt.names;
    const sub = (subject: string, handler: (m: Msg) => Promise<void> | void) => {
      const s: Subscription = rt.nc.subscribe(subject, {
        callback: (err, m) => {
          if (err || !term.acting) return;
          Promise.resolve(handler(m)).catch((e) => term.log.error({ err: e, subject }, "handler failed"));
        },
      });
      term.subs.push(s);
    };
    const calls = term.calls;
    sub(names.clientCallAll("open"), (m) => calls.onOpen(m));
    sub(names.clientCallAll("resume"), (m) => calls.onResume(m));
    sub(names.clientCallAll("close"), (m) => calls.onClose(m));
    sub(names.mgr("status"), (m) => replyOk(m, wantsDetail(m.data) ? this.detailedStatus() : this.status()));
    sub(names.registerAll, (m) => calls.onRegister(m));
    sub(names.heartbeatAll, (m) => calls.onHeartbeat(m));
    term.since = new Date().toISOString();
    term.servingAt = now();
    term.backups.start();
    // Everyone restarts against this epoch (docs/design.md §4, step 3).
    term.run(core.startEpoch(term.epoch, now()));
    const tickMs = Math.max(20, Math.min(100, rt.config.serverHeartbeatMs / 2));
    let lastTick = now();
    const tick = setInterval(() => {
      if (!term.acting) return;
      const t = now();
      const gap = t - lastTick;
      lastTick = t;
      // A gap this long means this process was paused (SIGSTOP, a VM freeze): a newer primary
      // may exist. Check the lease before doing anything else.
      if (gap > rt.config.leaseMs / 2) {
        // Timeouts measured across the pause are not real: act on nothing until the lease is
        // confirmed, then give servers a fresh heartbeat window.
        term.log.warn({ pausedMs: Math.round(gap) }, "event loop was paused; verifying the lease");
        void this.verifyLease(term).then((ok) => {
          if (ok) core.graceServers(now());
        });
        return;
      }
      // Cut off from NATS nobody's heartbeat can arrive: a server is not dead for that (a
      // nats-server restart once moved every session to "other" servers that were the same one).
      if (term.natsDown) return;
      term.run(core.tick(t));
    }, tickMs);
    // After a reconnect the pulls in flight are gone: resume consuming at once rather than
    // waiting for missed heartbeats to tell the client library.
    let serving = true;
    void (async () => {
      for await (const st of rt.nc.status()) {
        if (!serving || !term.acting) break;
        if (st.type === "disconnect") term.natsDown = true;
        if (st.type === "reconnect") {
          term.natsDown = false;
          core.graceServers(now());
          void term.consumers.resume("reconnected to NATS");
        }
      }
    })();
    // And if a queue moves while our cursor on it does not, resume too. Each queue on its own:
    // in a cluster, the consumer on one queue can die with a nats-server (its pulls then go
    // unanswered, and nats.js keeps retrying) while the other queue's consumer still delivers.
    const lastProgress = { req: { seq: -1, at: now() }, resp: { seq: -1, at: now() } };
    const progress = setInterval(() => {
      if (!term.acting) return;
      const still: Array<"req" | "resp"> = [];
      for (const which of ["req", "resp"] as const) {
        const seq = which === "req" ? core.reqSeq : core.respSeq;
        const p = lastProgress[which];
        if (seq !== p.seq) lastProgress[which] = { seq, at: now() };
        else if (now() - p.at >= 3000) still.push(which);
      }
      if (still.length === 0) return;
      void Promise.all(still.map((which) => this.store.queues.lastSeq(which).then((last) => ({ which, last }))))
        .then((infos) => {
          const behind = infos.filter(({ which, last }) => last > (which === "req" ? core.reqSeq : core.respSeq)).map((x) => x.which);
          for (const which of still) lastProgress[which].at = now();
          if (behind.length && term.acting) void term.consumers.resume(`the ${behind.join(" and ")} queue moved but its consumer did not deliver`);
        })
        .catch(() => {});
    }, 1000);
    // Watchdog: a session waiting for something the table does not hold would wait forever.
    const reported = new Set<string>();
    const watchdog = setInterval(() => {
      if (!term.acting) return;
      for (const x of core.stalled()) {
        const key = `${x.session}.${x.missing}.${x.n}`;
        if (reported.has(key)) continue;
        reported.add(key);
        term.log.error(x, "session stalled: the table lacks a queue entry it needs (please report this)");
      }
    }, 5000);
    term.timers.push(tick, watchdog, progress);
    return () => {
      serving = false;
      clearInterval(tick);
      clearInterval(watchdog);
      clearInterval(progress);
    };
  }

  fenced(term: PrimaryTerm, reason: string): void {
    if (!term.acting || this.term !== term) return;
    term.acting = false;
    term.log.warn({ reason }, "fenced by a newer manager");
    this.actor?.send({ type: "FENCED", reason });
  }

  rebuildFromBucket(term: PrimaryTerm, session: string): void {
    term.log.error({ session }, "the table lacks a session the bucket has; stepping down to rebuild from the bucket");
    this.forceBucket = true;
    this.fenced(term, "table inconsistent with the bucket");
  }

  /** After a pause, or before taking a step only the primary may take: is the lease still ours? */
  async verifyLease(term: PrimaryTerm): Promise<boolean> {
    try {
      const lease = await this.lease.read();
      if (!lease || lease.epoch !== term.epoch || lease.node !== this.node) {
        this.fenced(term, `lease now held by ${lease?.node ?? "nobody"} at epoch ${lease?.epoch ?? 0}`);
        return false;
      }
      return true;
    } catch {
      return term.acting;
    }
  }

  private async stepDown(epoch: number): Promise<void> {
    this.baseLog.warn({ epoch }, "stepped down: serving stopped, back to standby");
    await this.release();
  }

  private async release(): Promise<void> {
    const term = this.term;
    this.term = null;
    await term?.release();
  }

  private async drain(): Promise<void> {
    const term = this.term;
    if (term?.acting) {
      await term.backups.flush();
      this.baseLog.info({ epoch: term.epoch }, "drained: state snapshotted");
    }
    await this.release();
  }

  // ---- status ----------------------------------------------------------------------------

  /** The status with the dashboard's detail: the last minute and the busiest sessions. */
  detailedStatus(): ManagerStatus {
    const st = this.status();
    const busiest: SessionStatus[] = [];
    for (const s of this.term?.core.sessions.values() ?? []) {
      const pending = s.lastReq - s.answered;
      busiest.push({ id: s.id, client: s.client, service: s.service, server: s.server, pending, inFlight: s.inFlight.size, answered: s.answered });
    }
    busiest.sort((a, b) => b.pending - a.pending || b.answered - a.answered);
    return { ...st, recent: this.recent.view(Date.now()), busiest: busiest.slice(0, 100) };
  }

  status(): ManagerStatus {
    const term = this.term;
    const core = term?.core;
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
      healed: { ...(term?.consumers.healed ?? { req: 0, resp: 0 }) },
      refusedPulls: { ...(term?.consumers.refusedPulls ?? { req: 0, resp: 0 }) },
      servers: core ? [...core.servers.values()].map((s) => ({ id: s.id, service: s.service, alive: s.alive })) : [],
      services: [...services.values()],
      standbys: [...(term?.backups.standbys ?? [])].map(([node, a]) => ({ node, lastBackupAgeMs: Math.round(now() - a.at), seq: a.seq })),
      since: term?.since ?? null,
    };
  }

  /** Gauges of the manager's view, set when the metrics are scraped. */
  private async collect(): Promise<void> {
    const m = this.rt.metrics;
    const st = this.status();
    const primary = this.isPrimary();
    m.primary.set(primary ? 1 : 0);
    m.epoch.set(st.epoch);
    m.leaseAge.set(primary && this.term ? Math.max(0, (now() - this.term.servingAt) / 1000) : 0);
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
      const core = this.term?.core;
      if (core) {
        const top = [...core.sessions.values()].map((s) => ({ s, p: s.lastReq - s.answered })).filter((x) => x.p > 0);
        top.sort((a, b) => b.p - a.p);
        for (const { s, p } of top.slice(0, 50)) m.sessionPending.set({ service: s.service, session: s.id }, p);
      }
      for (const sb of st.standbys) m.standbyBackupAge.set({ standby: sb.node }, sb.lastBackupAgeMs / 1000);
      const lag = async (which: "req" | "resp", stream: string) => {
        const c = this.term?.consumers.consumer(which);
        if (c) m.consumerLag.set({ stream }, (await c.info(true)).num_pending);
      };
      const dlq = this.store.queues.deadLetters().then((n) => m.dlqMessages.set(n));
      await Promise.allSettled([lag("req", this.rt.names.streamReq), lag("resp", this.rt.names.streamResp), dlq]);
    } else if (Number.isFinite(this.lease.lastBackupAt)) {
      m.standbyBackupAge.set({ standby: this.node }, (now() - this.lease.lastBackupAt) / 1000);
    }
  }
}
