/**
 * The fenced commit (docs/design.md §5, §3 I4): a handler of an `update` request changes an external
 * store through `ctx.commit(fn)`. Of all duplicates of one request (hedged copies, redos after a
 * crash or a failover) exactly one applies its change: the first to complete it. Every other
 * duplicate is stopped before applying, or has its change rolled back, and gets the winner's
 * result instead, so the response is the same whichever copy answers.
 */

/** Which duplicate asks: the request it belongs to, and the server running it. */
export interface FenceId {
  session: string;
  request: number;
  server: string;
}

export interface FenceOutcome<R> {
  /** This duplicate's change is the one applied. */
  won: boolean;
  /** The applied change's result (the winner's, when this duplicate lost). */
  result: R;
  /** The server whose change was applied. */
  by: string;
}

/** An external store that commits an update at most once per request. */
export interface FencedStore<Tx = unknown> {
  /** "postgres" or "kv": shows in logs and in the session records. */
  readonly kind: string;
  /**
   * Run `fn` against the store and commit its change unless another duplicate of the same
   * request committed first. `fn` may run more than once (a conflict retries it), so it must
   * not have effects outside `tx`. Rejects with the signal's reason when aborted before commit.
   */
  commit<R>(fence: FenceId, signal: AbortSignal, fn: (tx: Tx) => Promise<R>): Promise<FenceOutcome<R>>;
  close(): Promise<void>;
}

/**
 * Thrown by `ctx.commit` in a duplicate that lost the fence: it stops the handler, and the
 * server answers with the winner's result (de-duplicated if the winner already answered).
 */
export class FenceLost extends Error {
  override readonly name = "FenceLost";
  constructor(
    readonly result: unknown,
    readonly by: string,
  ) {
    super(`another duplicate (server ${by}) already committed this update`);
  }
}

export function fenceKey(f: Pick<FenceId, "session" | "request">): string {
  return `${f.session}.${f.request}`;
}
