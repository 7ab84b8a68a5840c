/**
 * Wires hedgeProxyMachine to the manager: one proxy actor per hedged request in flight. The
 * manager's routing core decides the first server, the delay (fixed or the service's learned
 * p95) and the hedge targets within the budget; the proxy decides when to hedge, settles on the
 * first stored response, and cancels the other copies (acknowledged, retried, reported).
 * Who took which copy and who won goes to `tandem_sessions` under `<session>.hedge.<n>`.
 */
import { createActor, type Actor } from "xstate";
import type { ManagerCore } from "../machines/managerCore.js";
import { hedgeProxyMachine, type HedgeProxyEvent } from "../machines/hedgeProxyMachine.js";
import type { Logger } from "../runtime/logger.js";

/** What the proxy records per hedged request. */
export interface HedgeRecord {
  session: string;
  n: number;
  /** Servers that got a copy, in the order they got it. */
  copies: string[];
  winner: string | null;
  cancelled: string[];
  latencyMs: number;
  epoch: number;
}

export interface HedgeEffects {
  /** Send work (copy number) to a server; resolves true when the server acknowledged. */
  sendCopy(server: string, session: string, n: number, copy: number): Promise<boolean>;
  /** Ask a server to cancel; resolves true when it acknowledged. */
  cancel(server: string, session: string, n: number): Promise<boolean>;
  record(rec: HedgeRecord): void;
}

type ProxyActor = Actor<typeof hedgeProxyMachine>;

/** Answers arrive after a proxy may have settled and finished: those are dropped. */
function tell(a: ProxyActor, e: HedgeProxyEvent): void {
  if (a.getSnapshot().status === "active") a.send(e);
}

export class HedgeProxies {
  private readonly proxies = new Map<string, ProxyActor>();

  constructor(
    private readonly core: ManagerCore,
    private readonly epoch: number,
    private readonly fx: HedgeEffects,
    private readonly log: Logger,
    private readonly clock: () => number,
  ) {}

  get size(): number {
    return this.proxies.size;
  }

  /** The core dispatched request n of a hedged session to `server`. */
  dispatch(session: string, n: number, server: string, onAck: (ok: boolean) => void): void {
    const key = `${session}.${n}`;
    const existing = this.proxies.get(key);
    if (existing) {
      this.pendingAck.set(`${key}.${server}`, onAck);
      existing.send({ type: "DISPATCH", server });
      return;
    }
    const s = this.core.sessions.get(session);
    if (!s?.hedge) return;
    this.pendingAck.set(`${key}.${server}`, onAck);
    const machine = hedgeProxyMachine.provide({
      actions: {
        sendCopy: ({ self }, p) => this.send(self as ProxyActor, session, n, p.server, p.copy),
        hedge: ({ self, context }, p) => {
          const targets = this.core.hedgeTargets(session, p.exclude, p.want);
          if (targets.length === 0) {
            this.log.debug({ session, n }, "no hedge: no other server of the service, or the hedging budget is spent");
            return;
          }
          targets.forEach((t, i) => this.send(self as ProxyActor, session, n, t, context.sent.length + i + 1));
          (self as ProxyActor).send({ type: "HEDGE_SENT", servers: targets });
        },
        cancel: ({ self }, p) => {
          void this.fx.cancel(p.server, session, n).then((ok) => tell(self as ProxyActor, ok ? { type: "CANCEL_ACKED", server: p.server } : { type: "CANCEL_FAILED", server: p.server }));
        },
        record: (_, p) =>
          this.fx.record({ session, n, copies: p.sent, winner: p.winner, cancelled: p.cancelled, latencyMs: Math.round((this.clock() - p.at) * 100) / 100, epoch: this.epoch }),
        report: (_, p) => this.log.warn({ session, n, server: p.server }, `hedge copy: ${p.message}; the server may still finish it (its response is de-duplicated)`),
      },
    });
    const actor = createActor(machine, {
      input: { session, n, copies: s.hedge.copies, delayMs: this.core.hedgeDelay(session), first: server, at: this.clock() },
    });
    this.proxies.set(key, actor);
    actor.subscribe({
      complete: () => this.proxies.delete(key),
      error: (err) => {
        this.proxies.delete(key);
        this.log.error({ err, session, n }, "hedge proxy failed");
      },
    });
    actor.start();
  }

  private readonly pendingAck = new Map<string, (ok: boolean) => void>();

  private send(self: ProxyActor, session: string, n: number, server: string, copy: number): void {
    const key = `${session}.${n}.${server}`;
    void this.fx.sendCopy(server, session, n, copy).then((ok) => {
      // The core tracks only the copy it dispatched; acks of hedge copies matter to the proxy.
      const cb = this.pendingAck.get(key);
      this.pendingAck.delete(key);
      cb?.(ok);
      if (ok) tell(self, { type: "ACKED", server });
    });
  }

  /**
   * A stored response of a hedged session: the first one wins. With no proxy for the request
   * (this primary took over while its copies ran: the old primary's proxies died with it), the
   * copies are cancelled on `others`, every other live server of the service; a server not
   * running one says so and nothing happens there (docs/design.md §5).
   */
  answered(session: string, n: number, server: string, others: string[] = []): void {
    const proxy = this.proxies.get(`${session}.${n}`);
    if (proxy) {
      proxy.send({ type: "RESPONSE", server });
      return;
    }
    for (const other of others) {
      void this.fx.cancel(other, session, n).then((ok) => {
        if (!ok) this.log.debug({ session, n, server: other }, "a hedged copy left from before the takeover could not be cancelled; its response is de-duplicated");
      });
    }
  }

  /** The session closed: cancel every copy of its requests. */
  close(session: string): void {
    for (const [key, a] of this.proxies) if (key.startsWith(`${session}.`)) a.send({ type: "CLOSE" });
  }

  /** This manager stopped acting (fenced, stepping down): drop the proxies, cancel nothing. */
  stopAll(): void {
    for (const a of this.proxies.values()) a.stop();
    this.proxies.clear();
    this.pendingAck.clear();
  }
}
