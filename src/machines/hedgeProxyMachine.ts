/**
 * The hedging proxy (docs/design.md §5): one actor per hedged request in flight.
 *
 *   dispatching ──ACKED──▶ awaitingFirst          (both inside `open`)
 *        │  after hedgeDelay: hedge once (up to copies − 1 other servers, within the budget)
 *        └──RESPONSE / CLOSE──▶ settled ──(every cancel acknowledged or given up)──▶ done
 *
 * The first response stored wins (JetStream de-duplicates the others on Nats-Msg-Id); the
 * manager tells the proxy which server that was. On settling, the proxy records the winner and
 * cancels every other copy; an unacknowledged cancel is retried and, after 3 attempts,
 * reported. Effects (sending copies, choosing hedge targets within the budget, cancelling,
 * recording) are provided by the manager actor; the delay comes from the injected clock.
 */
import { assign, enqueueActions, raise, setup } from "xstate";

export interface HedgeProxyInput {
  session: string;
  n: number;
  /** Total copies allowed, the first included. */
  copies: number;
  /** Delay before hedging (fixed, or the service's learned p95). */
  delayMs: number;
  /** Server of the first copy. */
  first: string;
  /** Clock reading at dispatch (for the record). */
  at: number;
}

export interface HedgeProxyContext {
  session: string;
  n: number;
  copies: number;
  delayMs: number;
  at: number;
  /** Servers a copy went to, in order. */
  sent: string[];
  hedged: boolean;
  winner: string | null;
  /** Cancels not yet acknowledged: server -> attempts. */
  cancelling: Record<string, number>;
  /** Cancels that were never acknowledged (reported). */
  unacknowledged: string[];
}

export type HedgeProxyEvent =
  | { type: "DISPATCH"; server: string }
  | { type: "ACKED"; server: string }
  | { type: "HEDGE_SENT"; servers: string[] }
  | { type: "RESPONSE"; server: string }
  | { type: "CLOSE" }
  | { type: "CANCEL_ACKED"; server: string }
  | { type: "CANCEL_FAILED"; server: string }
  | { type: "RETRY_CANCEL"; server: string };

export const CANCEL_ATTEMPTS = 3;
export const CANCEL_RETRY_MS = 200;

export const hedgeProxyMachine = setup({
  types: {
    context: {} as HedgeProxyContext,
    events: {} as HedgeProxyEvent,
    input: {} as HedgeProxyInput,
  },
  delays: {
    hedgeDelay: ({ context }) => context.delayMs,
    cancelRetry: CANCEL_RETRY_MS,
  },
  actions: {
    /** Send a copy of the request to a server. */
    sendCopy: (_, _params: { server: string; copy: number }) => {},
    /** Choose up to `want` other servers within the budget, send them copies, answer HEDGE_SENT. */
    hedge: (_, _params: { exclude: string[]; want: number }) => {},
    cancel: (_, _params: { server: string }) => {},
    /** Record who took which copy and who won (tandem_sessions). */
    record: (_, _params: { winner: string | null; sent: string[]; cancelled: string[]; at: number }) => {},
    report: (_, _params: { message: string; server: string }) => {},
  },
  guards: {
    canHedge: ({ context }) => !context.hedged && context.copies > 1,
    isNew: ({ context, event }) => event.type === "DISPATCH" && !context.sent.includes(event.server),
    retriesLeft: ({ context, event }) => event.type === "CANCEL_FAILED" && (context.cancelling[event.server] ?? 0) < CANCEL_ATTEMPTS,
    stillCancelling: ({ context, event }) => event.type === "RETRY_CANCEL" && event.server in context.cancelling,
    allCancelled: ({ context }) => Object.keys(context.cancelling).length === 0,
  },
}).createMachine({
  id: "hedgeProxy",
  context: ({ input }) => ({
    session: input.session,
    n: input.n,
    copies: Math.max(1, input.copies),
    delayMs: Math.max(0, input.delayMs),
    at: input.at,
    sent: [input.first],
    hedged: false,
    winner: null,
    cancelling: {},
    unacknowledged: [],
  }),
  initial: "open",
  states: {
    open: {
      entry: { type: "sendCopy", params: ({ context }) => ({ server: context.sent[0]!, copy: 1 }) },
      initial: "dispatching",
      after: {
        hedgeDelay: {
          guard: "canHedge",
          actions: [
            assign({ hedged: true }),
            { type: "hedge", params: ({ context }) => ({ exclude: [...context.sent], want: context.copies - 1 }) },
          ],
        },
      },
      on: {
        // The manager dispatched (again) to a server: after a failed send, or a moved session.
        DISPATCH: [
          {
            guard: "isNew",
            actions: [
              assign({ sent: ({ context, event }) => [...context.sent, event.server] }),
              { type: "sendCopy", params: ({ context, event }) => ({ server: event.server, copy: context.sent.length }) },
            ],
          },
          { actions: { type: "sendCopy", params: ({ context, event }) => ({ server: event.server, copy: context.sent.indexOf(event.server) + 1 }) } },
        ],
        HEDGE_SENT: {
          actions: assign({ sent: ({ context, event }) => [...context.sent, ...event.servers.filter((s) => !context.sent.includes(s))] }),
        },
        RESPONSE: { target: "settled", actions: assign({ winner: ({ event }) => event.server }) },
        CLOSE: { target: "settled" },
      },
      states: {
        dispatching: { on: { ACKED: "awaitingFirst" } },
        awaitingFirst: {},
      },
    },
    settled: {
      entry: [
        assign({
          cancelling: ({ context }) => Object.fromEntries(context.sent.filter((s) => s !== context.winner).map((s) => [s, 1])),
        }),
        enqueueActions(({ context, enqueue }) => {
          for (const server of Object.keys(context.cancelling)) enqueue.raise({ type: "RETRY_CANCEL", server });
        }),
        {
          type: "record",
          params: ({ context }) => ({ winner: context.winner, sent: context.sent, cancelled: context.sent.filter((s) => s !== context.winner), at: context.at }),
        },
      ],
      always: { guard: "allCancelled", target: "done" },
      on: {
        RETRY_CANCEL: { guard: "stillCancelling", actions: { type: "cancel", params: ({ event }) => ({ server: event.server }) } },
        CANCEL_ACKED: { actions: assign({ cancelling: ({ context, event }) => without(context.cancelling, event.server) }) },
        CANCEL_FAILED: [
          {
            guard: "retriesLeft",
            actions: [
              assign({ cancelling: ({ context, event }) => ({ ...context.cancelling, [event.server]: (context.cancelling[event.server] ?? 0) + 1 }) }),
              raise(({ event }) => ({ type: "RETRY_CANCEL" as const, server: (event as { server: string }).server }), { delay: "cancelRetry" }),
            ],
          },
          {
            actions: [
              { type: "report", params: ({ event }) => ({ message: `cancel not acknowledged after ${CANCEL_ATTEMPTS} attempts`, server: event.server }) },
              assign({
                unacknowledged: ({ context, event }) => [...context.unacknowledged, event.server],
                cancelling: ({ context, event }) => without(context.cancelling, event.server),
              }),
            ],
          },
        ],
      },
    },
    done: { type: "final" },
  },
});

function without(r: Record<string, number>, key: string): Record<string, number> {
  const { [key]: _, ...rest } = r;
  return rest;
}
