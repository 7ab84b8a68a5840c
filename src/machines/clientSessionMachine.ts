/**
 * A client session (docs/design.md §1): opening -> active <-> restarting -> closing -> closed.
 * `open` opens a new session or resumes one by id; `reconcile` answers a manager restart
 * (re-sync delivery with the manager's response queue); `close` ends it. A restart from an
 * epoch older than one already seen is ignored (I5).
 */
import { assign, fromPromise, setup } from "xstate";

export interface ClientSessionContext {
  service: string;
  session: string | null;
  epoch: number;
  error: string | null;
}

export type ClientSessionEvent =
  | { type: "RESTART"; epoch: number }
  | { type: "EPOCH_SEEN"; epoch: number }
  | { type: "CLOSE" };

export interface ClientSessionInput {
  service: string;
  /** Resume this session instead of opening a new one. */
  session?: string;
}

export const clientSessionMachine = setup({
  types: {
    context: {} as ClientSessionContext,
    events: {} as ClientSessionEvent,
    input: {} as ClientSessionInput,
  },
  actors: {
    open: fromPromise<{ session: string; epoch: number }, { service: string; session: string | null }>(async () => {
      throw new Error("open not provided");
    }),
    reconcile: fromPromise<void, { session: string; epoch: number }>(async () => {}),
    close: fromPromise<void, { session: string }>(async () => {}),
  },
  guards: {
    notStale: ({ context, event }) => "epoch" in event && event.epoch >= context.epoch,
  },
}).createMachine({
  id: "clientSession",
  context: ({ input }) => ({ service: input.service, session: input.session ?? null, epoch: 0, error: null }),
  initial: "opening",
  states: {
    opening: {
      invoke: {
        src: "open",
        input: ({ context }) => ({ service: context.service, session: context.session }),
        onDone: {
          target: "active",
          actions: assign(({ event }) => ({ session: event.output.session, epoch: event.output.epoch })),
        },
        onError: {
          target: "failed",
          actions: assign(({ event }) => ({ error: String((event.error as Error)?.message ?? event.error) })),
        },
      },
    },
    active: {
      on: {
        RESTART: {
          guard: "notStale",
          target: "restarting",
          actions: assign(({ event }) => ({ epoch: event.epoch })),
        },
        EPOCH_SEEN: { guard: "notStale", actions: assign(({ event }) => ({ epoch: event.epoch })) },
        CLOSE: "closing",
      },
    },
    restarting: {
      invoke: {
        src: "reconcile",
        input: ({ context }) => ({ session: context.session ?? "", epoch: context.epoch }),
        onDone: "active",
        onError: "active",
      },
      on: {
        // A newer manager restarted us again while reconciling: start over against it.
        RESTART: {
          guard: ({ context, event }) => event.epoch > context.epoch,
          target: "restarting",
          reenter: true,
          actions: assign(({ event }) => ({ epoch: event.epoch })),
        },
        CLOSE: "closing",
      },
    },
    closing: {
      invoke: {
        src: "close",
        input: ({ context }) => ({ session: context.session ?? "" }),
        onDone: "closed",
        onError: "closed",
      },
    },
    closed: { type: "final" },
    failed: { type: "final" },
  },
});
