/**
 * The built-in `ledger` handler: transfers between accounts in an external store, committed
 * through the fenced commit so that each transfer is applied exactly once (I4), whichever of
 * its duplicates runs. Works on both stores:
 *  - PostgreSQL: a row per account in `tandem_ledger`, and a row per applied transfer in
 *    `tandem_ledger_log` (no unique key on purpose, so a double application would show);
 *  - KV: the whole ledger in one key (a KV update is atomic on one key only).
 */
import type pg from "pg";
import type { Handler, WorkContext } from "../actors/server.js";
import { ErrorCode, TandemError } from "../runtime/errors.js";
import type { FencedStore } from "../runtime/stores/store.js";
import type { KvStore, KvTx } from "../runtime/stores/store-kv.js";
import type { PgStore } from "../runtime/stores/store-pg.js";

export interface Transfer {
  from: string;
  to: string;
  amount: number;
}

export interface TransferResult {
  applied: boolean;
  reason?: string;
  from: string;
  to: string;
  amount: number;
  balances: Record<string, number>;
}

/** The KV ledger: one key. */
export interface KvLedger {
  balances: Record<string, number>;
  /** Transfers applied so far. */
  applied: number;
}

export const LEDGER_KEY = "ledger";

const ACCOUNT = /^[A-Za-z0-9_-]{1,64}$/;

export function parseTransfer(payload: unknown): Transfer {
  const t = (payload as { transfer?: unknown } | null)?.transfer as Record<string, unknown> | undefined;
  if (!t || typeof t.from !== "string" || typeof t.to !== "string" || !ACCOUNT.test(t.from) || !ACCOUNT.test(t.to)) {
    throw new TandemError(ErrorCode.Malformed, 'ledger: payload must be {"transfer":{"from":"A","to":"B","amount":10}}');
  }
  if (typeof t.amount !== "number" || !Number.isSafeInteger(t.amount) || t.amount <= 0) {
    throw new TandemError(ErrorCode.Malformed, "ledger: amount must be a positive integer");
  }
  if (t.from === t.to) throw new TandemError(ErrorCode.Malformed, "ledger: from and to must differ");
  return { from: t.from, to: t.to, amount: t.amount };
}

async function kvTransfer(tx: KvTx, t: Transfer): Promise<TransferResult> {
  const l = (await tx.get<KvLedger>(LEDGER_KEY)) ?? { balances: {}, applied: 0 };
  const have = l.balances[t.from] ?? 0;
  if (have < t.amount) {
    return { applied: false, reason: "insufficient funds", ...t, balances: { [t.from]: have, [t.to]: l.balances[t.to] ?? 0 } };
  }
  const balances = { ...l.balances, [t.from]: have - t.amount, [t.to]: (l.balances[t.to] ?? 0) + t.amount };
  tx.set(LEDGER_KEY, { balances, applied: l.applied + 1 } satisfies KvLedger);
  return { applied: true, ...t, balances: { [t.from]: balances[t.from]!, [t.to]: balances[t.to]! } };
}

async function pgTransfer(c: pg.PoolClient, t: Transfer, session: string, request: number): Promise<TransferResult> {
  // Lock both rows in a fixed order so two transfers never deadlock.
  const rows = await c.query<{ account: string; balance: string }>(
    "SELECT account, balance FROM tandem_ledger WHERE account = ANY($1) ORDER BY account FOR UPDATE",
    [[t.from, t.to]],
  );
  const bal = new Map(rows.rows.map((r) => [r.account, Number(r.balance)]));
  const have = bal.get(t.from) ?? 0;
  if (have < t.amount) {
    return { applied: false, reason: "insufficient funds", ...t, balances: { [t.from]: have, [t.to]: bal.get(t.to) ?? 0 } };
  }
  const upsert = "INSERT INTO tandem_ledger (account, balance) VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET balance = tandem_ledger.balance + $2 RETURNING balance";
  const from = await c.query<{ balance: string }>(upsert, [t.from, -t.amount]);
  const to = await c.query<{ balance: string }>(upsert, [t.to, t.amount]);
  await c.query("INSERT INTO tandem_ledger_log (session, request, src, dst, amount) VALUES ($1, $2, $3, $4, $5)", [session, request, t.from, t.to, t.amount]);
  return { applied: true, ...t, balances: { [t.from]: Number(from.rows[0]!.balance), [t.to]: Number(to.rows[0]!.balance) } };
}

/** Tables of the PostgreSQL ledger (idempotent). */
export async function ensurePgLedger(store: PgStore): Promise<void> {
  await store.pool.query("CREATE TABLE IF NOT EXISTS tandem_ledger (account text PRIMARY KEY, balance bigint NOT NULL)");
  await store.pool.query(
    "CREATE TABLE IF NOT EXISTS tandem_ledger_log (session text NOT NULL, request bigint NOT NULL, src text NOT NULL, dst text NOT NULL, amount bigint NOT NULL, at timestamptz NOT NULL DEFAULT now())",
  );
}

/** Set the opening balances (replaces the ledger; not fenced: for demos and tests). */
export async function seedLedger(store: FencedStore, balances: Record<string, number>): Promise<void> {
  if (store.kind === "postgres") {
    const s = store as PgStore;
    await ensurePgLedger(s);
    await s.pool.query("TRUNCATE tandem_ledger, tandem_ledger_log");
    for (const [account, balance] of Object.entries(balances)) {
      await s.pool.query("INSERT INTO tandem_ledger (account, balance) VALUES ($1, $2)", [account, balance]);
    }
    return;
  }
  await (store as KvStore).seed(LEDGER_KEY, { balances, applied: 0 } satisfies KvLedger);
}

/** Accounts of the built-in ledger, and the transfer the CLI client sends as request i. */
export const LEDGER_ACCOUNTS = ["A", "B", "C", "D"];
export const LEDGER_OPENING = 1000;

export function transferFor(i: number): { transfer: Transfer } {
  const k = LEDGER_ACCOUNTS.length;
  const from = LEDGER_ACCOUNTS[i % k]!;
  const to = LEDGER_ACCOUNTS[(i + 1 + (Math.floor(i / k) % (k - 1))) % k]!;
  return { transfer: { from, to, amount: (i % 9) + 1 } };
}

/** Open the ledger with LEDGER_OPENING in each account unless it exists (servers race here). */
export async function openLedgerIfMissing(store: FencedStore): Promise<void> {
  const balances = Object.fromEntries(LEDGER_ACCOUNTS.map((a) => [a, LEDGER_OPENING]));
  if (store.kind === "postgres") {
    const s = store as PgStore;
    await ensurePgLedger(s);
    for (const [account, balance] of Object.entries(balances)) {
      await s.pool.query("INSERT INTO tandem_ledger (account, balance) VALUES ($1, $2) ON CONFLICT DO NOTHING", [account, balance]);
    }
    return;
  }
  const kv = (store as KvStore).data;
  await kv.create(LEDGER_KEY, new TextEncoder().encode(JSON.stringify({ v: { balances, applied: 0 }, recent: [] }))).catch(() => {});
}

/** The ledger now: balances and how many transfers were applied. */
export async function readLedger(store: FencedStore): Promise<KvLedger> {
  if (store.kind === "postgres") {
    const s = store as PgStore;
    const b = await s.pool.query<{ account: string; balance: string }>("SELECT account, balance FROM tandem_ledger");
    const n = await s.pool.query<{ n: string }>("SELECT count(*) AS n FROM tandem_ledger_log");
    return { balances: Object.fromEntries(b.rows.map((r) => [r.account, Number(r.balance)])), applied: Number(n.rows[0]!.n) };
  }
  return (await (store as KvStore).read<KvLedger>(LEDGER_KEY)) ?? { balances: {}, applied: 0 };
}

/** PostgreSQL only: transfers applied more than once (must be empty: I4). */
export async function pgDoubleApplied(store: PgStore): Promise<Array<{ session: string; request: number; times: number }>> {
  const r = await store.pool.query<{ session: string; request: string; times: string }>(
    "SELECT session, request, count(*) AS times FROM tandem_ledger_log GROUP BY session, request HAVING count(*) > 1",
  );
  return r.rows.map((x) => ({ session: x.session, request: Number(x.request), times: Number(x.times) }));
}

export function ledgerHandler(): Handler {
  return async (req, ctx: WorkContext) => {
    const t = parseTransfer(req.payload);
    if (!ctx.store) throw new TandemError(ErrorCode.NoStore, "the ledger needs a store: start the server with --store kv or --store postgres://...");
    if (ctx.store.kind === "postgres") return ctx.commit((c: pg.PoolClient) => pgTransfer(c, t, req.session, req.n));
    return ctx.commit((tx: KvTx) => kvTransfer(tx, t));
  };
}
