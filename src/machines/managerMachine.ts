/**
 * Lifecycle of a manager node (docs/design.md §1, §4):
 *
 *   standby --(lease free or silent for leaseMs)--> takingOver --(CAS won)--> rebuilding --> primary
 *   standby: watching --(cut off from NATS)--> cutOff --(reconnected)--> watching (a fresh lease period)
 *   primary --(renewal CAS lost)--> steppingDown --> standby
 *   any --STOP--> stopping --> stopped
 *
 * Effects are injected actors: `acquireLease` (compare-and-set epoch + 1), `rebuild`,
 * `serve` (consumers, handlers, ticks; runs for as long as the node is primary),
 * `renewLease` (compare-and-set on the lease's revision), `stepDown` and `drain`.
 * Timers are XState delays, so tests drive them with a SimulatedClock.
 */
import { assign, fromCallback, fromPromise, setup } from "xstate";

export interface LeaseView {
  epoch: number;
  node: string;
  revision: number;
}

export interface ManagerContext {
  node: string;
  heartbeatMs: number;
  leaseMs: number;
  /** Epoch this node holds (primary) or last saw (standby). */
  epoch: number;
  /** Revision of the lease this node holds or last saw. */
  revision: number;
  leader: string | null;
  lastError: string | null;
}

export type ManagerEvent =
  /** The lease changed (renewed by the primary) or a backup came: the primary lives. */
  | { type: "LEASE_SEEN"; lease: LeaseView }
  /** No lease at all: nobody is primary. */
  | { type: "LEASE_ABSENT" }
  | { type: "BACKUP_SEEN"; epoch: number }
  /**
   * This node lost its NATS connection, or has it again. Cut off, a standby cannot see the
   * primary renew: silence then is no sign of its death (a nats-server restart once made the
   * standby take over from a live primary the moment both reconnected).
   */
  | { type: "NATS_DOWN" }
  | { type: "NATS_UP" }
  /** Serving failed in a way only stepping down fixes (consumer taken over, lease lost). */
  | { type: "FENCED"; reason: string }
  | { type: "STOP" };

export interface ManagerInput {
  node: string;
  heartbeatMs: number;
  leaseMs: number;
}

export const managerMachine = setup({
  types: {
    context: {} as ManagerContext,
    events: {} as ManagerEvent,
    input: {} as ManagerInput,
  },
  delays: {
    heartbeat: ({ context }) => context.heartbeatMs,
    lease: ({ context }) => context.leaseMs,
  },
  actors: {
    /** Watches the lease key; sends LEASE_SEEN / LEASE_ABSENT (and BACKUP_SEEN). */
    watchLease: fromCallback<ManagerEvent, { node: string }>(() => () => {}),
    acquireLease: fromPromise<LeaseView, { previous: LeaseView | null }>(async () => {
      throw new Error("acquireLease not provided");
    }),
    rebuild: fromPromise<void, { epoch: number }>(async () => {
      throw new Error("rebuild not provided");
    }),
    serve: fromCallback<ManagerEvent, { epoch: number }>(() => () => {}),
    renewLease: fromPromise<LeaseView, { lease: LeaseView }>(async () => {
      throw new Error("renewLease not provided");
    }),
    stepDown: fromPromise<void, { epoch: number }>(async () => {}),
    drain: fromPromise<void, { primary: boolean }>(async () => {}),
  },
  actions: {
    /** Log/metric hook for transitions the operator cares about. */
    report: (_, _params: { event: string; [k: string]: unknown }) => {},
  },
}).createMachine({
  id: "manager",
  context: ({ input }) => ({
    node: input.node,
    heartbeatMs: input.heartbeatMs,
    leaseMs: input.leaseMs,
    epoch: 0,
    revision: 0,
    leader: null,
    lastError: null,
  }),
  initial: "standby",
  on: {
    STOP: ".stopping",
  },
  states: {
    standby: {
      invoke: { src: "watchLease", input: ({ context }) => ({ node: context.node }) },
      initial: "watching",
      states: {
        watching: {
          // Silence for a whole lease period on our own clock: the primary is gone.
          after: { lease: "#manager.takingOver" },
          on: {
            LEASE_SEEN: {
              target: "watching",
              reenter: true,
              actions: assign(({ event }) => ({ epoch: event.lease.epoch, revision: event.lease.revision, leader: event.lease.node })),
            },
            BACKUP_SEEN: { target: "watching", reenter: true },
            LEASE_ABSENT: "#manager.takingOver",
            NATS_DOWN: "cutOff",
          },
        },
        // No lease timer while nothing can be seen: the primary gets a whole lease period from
        // the reconnect to renew (docs/design.md §4).
        cutOff: {
          on: { NATS_UP: "watching" },
        },
      },
    },
    takingOver: {
      entry: { type: "report", params: ({ context }) => ({ event: "taking over", previousEpoch: context.epoch, previousLeader: context.leader }) },
      invoke: {
        src: "acquireLease",
        input: ({ context }) => ({
          previous: context.revision > 0 ? { epoch: context.epoch, node: context.leader ?? "", revision: context.revision } : null,
        }),
        onDone: {
          target: "rebuilding",
          actions: assign(({ event, context }) => ({
            epoch: event.output.epoch,
            revision: event.output.revision,
            leader: context.node,
          })),
        },
        // Lost the compare-and-set: someone else won. Stay standby.
        onError: {
          target: "standby",
          actions: [
            assign(({ event }) => ({ lastError: String((event.error as Error)?.message ?? event.error) })),
            { type: "report", params: ({ event }) => ({ event: "lost the lease race", error: String((event.error as Error)?.message ?? event.error) }) },
          ],
        },
      },
    },
    rebuilding: {
      invoke: {
        src: "rebuild",
        input: ({ context }) => ({ epoch: context.epoch }),
        onDone: "primary",
        onError: {
          target: "steppingDown",
          actions: assign(({ event }) => ({ lastError: String((event.error as Error)?.message ?? event.error) })),
        },
      },
    },
    primary: {
      entry: { type: "report", params: ({ context }) => ({ event: "primary", epoch: context.epoch }) },
      invoke: { src: "serve", input: ({ context }) => ({ epoch: context.epoch }) },
      on: {
        FENCED: {
          target: "steppingDown",
          actions: assign(({ event }) => ({ lastError: event.reason })),
        },
      },
      initial: "serving",
      states: {
        serving: {
          after: { heartbeat: "renewing" },
        },
        renewing: {
          invoke: {
            src: "renewLease",
            input: ({ context }) => ({ lease: { epoch: context.epoch, node: context.node, revision: context.revision } }),
            onDone: {
              target: "serving",
              actions: assign(({ event }) => ({ revision: event.output.revision })),
            },
            onError: {
              target: "#manager.steppingDown",
              actions: assign(({ event }) => ({ lastError: String((event.error as Error)?.message ?? event.error) })),
            },
          },
        },
      },
    },
    steppingDown: {
      entry: { type: "report", params: ({ context }) => ({ event: "stepping down", epoch: context.epoch, reason: context.lastError }) },
      invoke: {
        src: "stepDown",
        input: ({ context }) => ({ epoch: context.epoch }),
        onDone: "standby",
        onError: "standby",
      },
    },
    stopping: {
      invoke: {
        src: "drain",
        input: () => ({ primary: false }),
        onDone: "stopped",
        onError: "stopped",
      },
    },
    stopped: { type: "final" },
  },
});
