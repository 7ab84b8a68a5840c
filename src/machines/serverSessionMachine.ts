/**
 * A server session (docs/design.md §1): registering -> ready <-> working, restarting, stopped.
 * `working` while any request is in the handler: BUSY when the first goes in, IDLE when the last
 * comes out (the actor counts them; a machine step per request cost the server a fifth of its
 * CPU under load). A RESTART (new manager, or sessions moved
 * here from a dead server) goes through `restarting`, where `reconcile` reports to the manager
 * which of the restarted sessions' requests still run here (so they are not sent twice) and
 * answers the restart. A restart comes in parts, each its own RESTART with its own `id`; one
 * from an older epoch is ignored (I5).
 */
import { assign, fromPromise, setup } from "xstate";

export interface ServerSessionContext {
  server: string;
  service: string;
  epoch: number;
  /** A request is in the handler. */
  busy: boolean;
  /** The restart being reconciled (the actor keeps what it is about under this id). */
  restartId: number;
  error: string | null;
}

export type ServerSessionEvent =
  | { type: "BUSY" }
  | { type: "IDLE" }
  | { type: "RESTART"; epoch: number; id: number }
  | { type: "REREGISTER" }
  | { type: "STOP" };

export interface ServerSessionInput {
  server: string;
  service: string;
}

export const serverSessionMachine = setup({
  types: {
    context: {} as ServerSessionContext,
    events: {} as ServerSessionEvent,
    input: {} as ServerSessionInput,
  },
  actors: {
    register: fromPromise<{ epoch: number }, { server: string; service: string }>(async () => {
      throw new Error("register not provided");
    }),
    reconcile: fromPromise<void, { epoch: number; id: number }>(async () => {
      throw new Error("reconcile not provided");
    }),
    drain: fromPromise<void, { server: string }>(async () => {}),
  },
  guards: {
    notStale: ({ context, event }) => event.type === "RESTART" && event.epoch >= context.epoch,
    busy: ({ context }) => context.busy,
  },
}).createMachine({
  id: "serverSession",
  context: ({ input }) => ({ server: input.server, service: input.service, epoch: 0, busy: false, restartId: 0, error: null }),
  initial: "registering",
  on: {
    BUSY: { actions: assign({ busy: true }) },
    IDLE: { actions: assign({ busy: false }) },
    STOP: ".stopping",
  },
  states: {
    registering: {
      invoke: {
        src: "register",
        input: ({ context }) => ({ server: context.server, service: context.service }),
        onDone: {
          target: "serving",
          actions: assign(({ event, context }) => ({ epoch: Math.max(context.epoch, event.output.epoch) })),
        },
        // No manager yet: try again (the actor's register retries with back-off inside).
        onError: { target: "registering", reenter: true },
      },
    },
    serving: {
      initial: "ready",
      on: {
        RESTART: {
          guard: "notStale",
          target: "restarting",
          actions: assign(({ event }) => ({ epoch: event.epoch, restartId: event.id })),
        },
        REREGISTER: "registering",
      },
      states: {
        ready: { always: { guard: "busy", target: "working" } },
        working: { always: { guard: ({ context }) => !context.busy, target: "ready" } },
      },
    },
    restarting: {
      invoke: {
        src: "reconcile",
        input: ({ context }) => ({ epoch: context.epoch, id: context.restartId }),
        onDone: "serving",
        onError: "serving",
      },
      on: {
        // Another part of this restart, or a newer one: reconciled in turn (the part being
        // reconciled finishes; its answer is the actor's to send).
        RESTART: {
          guard: "notStale",
          target: "restarting",
          reenter: true,
          actions: assign(({ event }) => ({ epoch: event.epoch, restartId: event.id })),
        },
      },
    },
    stopping: {
      invoke: {
        src: "drain",
        input: ({ context }) => ({ server: context.server }),
        onDone: "stopped",
        onError: "stopped",
      },
    },
    stopped: { type: "final" },
  },
});
