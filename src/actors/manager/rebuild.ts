/**
 * The rebuild that starts a term (docs/design.md §4, step 3): the table from the last backup
 * when it is at least as new as the bucket's cut (else from the bucket), the restart data from
 * its bucket, then the queues replayed from the cut's sequences until the table has caught up
 * with where they stood when the rebuild began.
 */
import { DEFAULT_HEDGE_BUDGET } from "../../machines/hedgeBudget.js";
import { ManagerCore, type CursorRecord, type SessionRecord } from "../../machines/managerCore.js";
import type { RestartRecord } from "../../machines/types.js";
import { untilJetStream } from "../../runtime/jetstream.js";
import { decode } from "../../runtime/wire.js";
import { HedgeProxies } from "../hedgeProxy.js";
import { Backups } from "./backups.js";
import { Calls } from "./calls.js";
import { QueueConsumers } from "./consumers.js";
import { Effects } from "./effects.js";
import { QueueIntake } from "./intake.js";
import type { Lease } from "./lease.js";
import { now, PrimaryTerm, type ManagerContext } from "./term.js";

export interface RebuildOptions {
  /** Read the bucket, not the backup (after the table disagreed with the bucket). */
  forceBucket: boolean;
  /** The secret read by an earlier term of this node, if any. */
  secret: Buffer | null;
}

/** Rebuild the table for `epoch` and start its term; resolves once the queues are replayed. */
export async function rebuild(ctx: ManagerContext, lease: Lease, epoch: number, opts: RebuildOptions, onTerm: (term: PrimaryTerm) => void): Promise<PrimaryTerm> {
  const t0 = now();
  const { rt, store } = ctx;
  const c = rt.config;
  const core = new ManagerCore(
    {
      maxPending: c.maxPending,
      maxPayload: c.maxPayload,
      serverTimeoutMs: c.serverTimeoutMs,
      ackTimeoutMs: c.ackTimeoutMs,
      maxSessionBytes: c.maxSessionBytes,
      maxClientBytes: c.maxClientBytes,
      maxHeldBytes: c.maxHeldBytes,
      hedge: { ...DEFAULT_HEDGE_BUDGET, ratio: c.hedgeBudgetPct / 100, reserve: c.hedgeReserve },
    },
    epoch,
  );
  const kv = store.records.fencedWriters();
  // In a cluster that just lost a server, JetStream answers nothing until its leaders are
  // elected again (a follower waits 4-9 s; the timers are the same from 2.9 to 2.15): wait
  // for it here rather than step down and start over with a new epoch.
  const js = <T>(what: string, fn: () => Promise<T>) => untilJetStream(what, fn, 60_000, ctx.baseLog);
  const secret = opts.secret ?? (await js("read the dispatch secret", () => store.records.dispatchSecret()));
  const stored = await js("read the cursor", () => store.cursors.read());
  const storedCursor: CursorRecord | null = stored?.value ?? null;
  if (stored) kv.ctl.saw("cursor", stored.revision);
  let cursor = storedCursor;
  const records: SessionRecord[] = [];
  // The last backup is the cut to start from when we have one at least as new as the bucket's;
  // otherwise the bucket (a manager started cold, or a backup missed).
  const b = lease.backup;
  const fromBackup = !opts.forceBucket && b.complete && b.cursor !== null && (!storedCursor || b.cursor.reqSeq >= storedCursor.reqSeq);
  if (fromBackup) {
    cursor = b.cursor;
    records.push(...b.records.values());
  } else {
    for (const m of await js("read the session records", () => store.records.readAll("sessions"))) {
      const key = m.key;
      if (key.includes(".")) continue; // hedge records of a session, not a session
      kv.sessions.saw(key, m.seq);
      if (m.data.length === 0) continue; // delete marker
      try {
        records.push(decode(m.data) as SessionRecord);
      } catch {
        /* a corrupt record cannot be rebuilt; its session will report unknown */
      }
    }
  }
  const restarts = new Map<string, { client?: RestartRecord; server?: RestartRecord }>();
  for (const m of await js("read the restart data", () => store.records.readAll("restart"))) {
    if (m.data.length === 0) continue;
    const key = m.key;
    kv.restart.saw(key, m.seq);
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

  const term = new PrimaryTerm(ctx, epoch, core, secret, kv);
  const effects = new Effects(term);
  term.effects = effects;
  term.proxies = new HedgeProxies(core, epoch, effects.hedgeEffects(), term.log, now);
  term.intake = new QueueIntake(term);
  term.consumers = new QueueConsumers(term);
  term.calls = new Calls(term);
  term.backups = new Backups(term);
  // The node acts for the term from here: the replay's effects run (I5 checks `acting`).
  onTerm(term);
  const reqLast = await js("read the request queue", () => store.queues.lastSeq("req"));
  const respLast = await js("read the response queue", () => store.queues.lastSeq("resp"));
  term.replayEnd = { req: reqLast, resp: respLast };
  const reqFrom = cursor ? cursor.reqFrom : 1;
  const respFrom = cursor ? cursor.respFrom : 1;
  await term.consumers.takeOver(reqFrom, respFrom, js);
  await term.consumers.caughtUpTo(term.replayEnd.req, term.replayEnd.resp, 60_000);
  term.log.info(
    {
      from: fromBackup ? "backup" : "bucket",
      sessions: core.sessions.size,
      replayedReq: term.replayEnd.req - reqFrom + 1,
      replayedResp: term.replayEnd.resp - respFrom + 1,
      rebuildMs: Math.round(now() - t0),
    },
    "rebuilt from backup and queues",
  );
  return term;
}
