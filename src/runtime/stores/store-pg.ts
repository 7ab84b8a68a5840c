/**
 * Fenced commit on PostgreSQL: the update and a row of the fence table, whose primary key is
 * (session, request), commit in one transaction. A duplicate's insert of the same key waits
 * for the first transaction: if that commits, the duplicate's insert does nothing and it
 * rolls back; if that rolls back (its server crashed mid-way, the connection dropped), the
 * duplicate's insert goes through and it applies instead. The fence row keeps the result, so
 * a redo after the winner crashed between commit and response answers the same.
 */
import pg from "pg";
import { ErrorCode, TandemError } from "../errors.js";
import type { FenceId, FenceOutcome, FencedStore } from "./store.js";

export interface PgStoreOptions {
  /** postgres://user:pass@host:port/db */
  url: string;
  /** Fence table name (created when missing). */
  table?: string;
  poolSize?: number;
}

const IDENT = /^[a-z_][a-z0-9_]{0,62}$/;

export class PgStore implements FencedStore<pg.PoolClient> {
  readonly kind = "postgres";
  readonly pool: pg.Pool;
  private readonly table: string;

  private constructor(opts: PgStoreOptions) {
    this.table = opts.table ?? "tandem_fence";
    if (!IDENT.test(this.table)) throw new TandemError(ErrorCode.Config, `fence table name "${this.table}" must be a lower-case SQL identifier`);
    this.pool = new pg.Pool({ connectionString: opts.url, max: opts.poolSize ?? 8 });
    // An idle client whose server went away must not crash the process.
    this.pool.on("error", () => {});
  }

  static async open(opts: PgStoreOptions): Promise<PgStore> {
    const s = new PgStore(opts);
    try {
      await s.pool.query(
        `CREATE TABLE IF NOT EXISTS ${s.table} (
           session text NOT NULL,
           request bigint NOT NULL,
           server text NOT NULL,
           result jsonb,
           at timestamptz NOT NULL DEFAULT now(),
           PRIMARY KEY (session, request))`,
      );
    } catch (err) {
      await s.pool.end().catch(() => {});
      // Two processes creating it at once race on the catalog; the table exists either way.
      if ((err as { code?: string }).code === "23505") return PgStore.open(opts);
      throw new TandemError(ErrorCode.Store, `cannot use PostgreSQL at ${redact(opts.url)}: ${(err as Error).message}. Check the URL and that the server runs`, {
        cause: err,
      });
    }
    return s;
  }

  async commit<R>(f: FenceId, signal: AbortSignal, fn: (tx: pg.PoolClient) => Promise<R>): Promise<FenceOutcome<R>> {
    if (signal.aborted) throw signal.reason;
    const c = await this.pool.connect();
    let broken: Error | undefined;
    // The connection may die while checked out (a server crash, a terminated backend).
    const onError = (e: Error) => (broken = e);
    c.on("error", onError);
    try {
      await c.query("BEGIN");
      // Waits for a concurrent duplicate's uncommitted insert of the same key.
      const ins = await c.query(`INSERT INTO ${this.table} (session, request, server) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, [
        f.session,
        f.request,
        f.server,
      ]);
      if (ins.rowCount === 0) {
        await c.query("ROLLBACK");
        const r = await c.query<{ server: string; result: R }>(`SELECT server, result FROM ${this.table} WHERE session = $1 AND request = $2`, [
          f.session,
          f.request,
        ]);
        const row = r.rows[0]!;
        return { won: false, result: row.result, by: row.server };
      }
      if (signal.aborted) throw signal.reason;
      const result = await fn(c);
      if (signal.aborted) throw signal.reason; // cancelled before commit: roll back
      await c.query(`UPDATE ${this.table} SET result = $3 WHERE session = $1 AND request = $2`, [f.session, f.request, JSON.stringify(result ?? null)]);
      await c.query("COMMIT");
      return { won: true, result, by: f.server };
    } catch (err) {
      await c.query("ROLLBACK").catch((e: Error) => (broken = e));
      if (signal.aborted && err === signal.reason) throw err;
      if (err instanceof TandemError) throw err;
      const code = (err as { code?: string }).code;
      // Connection-level failures are retryable; a failing statement of the handler is its error.
      if (!code || code.startsWith("08") || code === "57P01") {
        broken = err as Error;
        throw new TandemError(ErrorCode.Store, `PostgreSQL failed during the update (not applied): ${(err as Error).message}`, { cause: err });
      }
      throw err;
    } finally {
      c.off("error", onError);
      c.release(broken);
    }
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => {});
  }
}

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1:***@");
}
