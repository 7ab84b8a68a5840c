import { describe, expect, it } from "vitest";
import { createActor, fromCallback, fromPromise, SimulatedClock, waitFor } from "xstate";
import { managerMachine, type LeaseView } from "../../src/machines/managerMachine.js";
import { clientSessionMachine } from "../../src/machines/clientSessionMachine.js";
import { serverSessionMachine } from "../../src/machines/serverSessionMachine.js";

const flush = () => new Promise((r) => setTimeout(r, 0));

function manager(opts: { acquire?: () => Promise<LeaseView>; renew?: (l: LeaseView) => Promise<LeaseView> } = {}) {
  const clock = new SimulatedClock();
  const calls = { acquire: 0, renew: 0, rebuild: 0, stepDown: 0 };
  const machine = managerMachine.provide({
    actors: {
      watchLease: fromCallback(() => () => {}),
      acquireLease: fromPromise(async () => {
        calls.acquire++;
        return opts.acquire ? opts.acquire() : { epoch: 7, node: "me", revision: 10 };
      }),
      rebuild: fromPromise(async () => {
        calls.rebuild++;
      }),
      renewLease: fromPromise(async ({ input }) => {
        calls.renew++;
        return opts.renew ? opts.renew(input.lease) : { ...input.lease, revision: input.lease.revision + 1 };
      }),
      stepDown: fromPromise(async () => {
        calls.stepDown++;
      }),
    },
  });
  const actor = createActor(machine, { clock, input: { node: "me", heartbeatMs: 200, leaseMs: 1000 } });
  actor.start();
  return { actor, clock, calls };
}

describe("manager machine", () => {
  it("standby takes over once the lease is silent for leaseMs on its own clock", async () => {
    const { actor, clock, calls } = manager();
    actor.send({ type: "LEASE_SEEN", lease: { epoch: 6, node: "old", revision: 9 } });
    clock.increment(900);
    actor.send({ type: "LEASE_SEEN", lease: { epoch: 6, node: "old", revision: 10 } }); // renewed: timer restarts
    clock.increment(900);
    await flush();
    expect(actor.getSnapshot().matches("standby")).toBe(true);
    expect(calls.acquire).toBe(0);
    clock.increment(101);
    await waitFor(actor, (s) => s.matches("primary"));
    expect(actor.getSnapshot().context.epoch).toBe(7);
    expect(calls.rebuild).toBe(1);
  });

  it("cut off from NATS, a standby counts no silence; after the reconnect the primary gets a whole lease period", async () => {
    const { actor, clock, calls } = manager();
    actor.send({ type: "LEASE_SEEN", lease: { epoch: 6, node: "old", revision: 9 } });
    clock.increment(700);
    actor.send({ type: "NATS_DOWN" });
    clock.increment(5000); // a long nats-server restart: no renewal can be seen, none is missed
    await flush();
    expect(actor.getSnapshot().matches({ standby: "cutOff" })).toBe(true);
    actor.send({ type: "NATS_UP" });
    clock.increment(999);
    await flush();
    expect(calls.acquire).toBe(0); // 700 + 999 ms of silence in all, but only 999 ms connected
    actor.send({ type: "LEASE_SEEN", lease: { epoch: 6, node: "old", revision: 10 } }); // the primary renewed after its reconnect
    clock.increment(999);
    await flush();
    expect(actor.getSnapshot().matches("standby")).toBe(true);
    clock.increment(2);
    await waitFor(actor, (s) => s.matches("primary")); // silence while connected: it is gone
    expect(calls.acquire).toBe(1);
  });

  it("a backup from the primary also counts as a sign of life", async () => {
    const { actor, clock } = manager();
    actor.send({ type: "LEASE_SEEN", lease: { epoch: 1, node: "old", revision: 1 } });
    for (let i = 0; i < 5; i++) {
      clock.increment(800);
      actor.send({ type: "BACKUP_SEEN", epoch: 1 });
    }
    await flush();
    expect(actor.getSnapshot().matches("standby")).toBe(true);
  });

  it("takes over at once when there is no lease at all", async () => {
    const { actor } = manager();
    actor.send({ type: "LEASE_ABSENT" });
    await waitFor(actor, (s) => s.matches("primary"));
  });

  it("stays standby when it loses the compare-and-set race", async () => {
    const { actor, calls } = manager({ acquire: () => Promise.reject(new Error("wrong last sequence")) });
    actor.send({ type: "LEASE_ABSENT" });
    await flush();
    await flush();
    expect(calls.acquire).toBe(1);
    expect(actor.getSnapshot().matches("standby")).toBe(true);
    expect(actor.getSnapshot().context.lastError).toMatch(/wrong last sequence/);
  });

  it("renews every heartbeat and steps down to standby when a renewal fails (I5)", async () => {
    let fail = false;
    const { actor, clock, calls } = manager({
      renew: (l) => (fail ? Promise.reject(new Error("fenced")) : Promise.resolve({ ...l, revision: l.revision + 1 })),
    });
    actor.send({ type: "LEASE_ABSENT" });
    await waitFor(actor, (s) => s.matches("primary"));
    clock.increment(200);
    await waitFor(actor, (s) => s.matches({ primary: "serving" }) && s.context.revision === 11);
    expect(calls.renew).toBe(1);
    fail = true;
    clock.increment(200);
    await waitFor(actor, (s) => s.matches("standby"));
    expect(calls.stepDown).toBe(1);
  });

  it("a FENCED event from serving steps down", async () => {
    const { actor } = manager();
    actor.send({ type: "LEASE_ABSENT" });
    await waitFor(actor, (s) => s.matches("primary"));
    actor.send({ type: "FENCED", reason: "consumer lost" });
    await waitFor(actor, (s) => s.matches("standby"));
    expect(actor.getSnapshot().context.lastError).toBe("consumer lost");
  });

  it("persists and restores its snapshot and continues identically", async () => {
    const { actor, clock } = manager();
    actor.send({ type: "LEASE_SEEN", lease: { epoch: 3, node: "x", revision: 4 } });
    const json = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
    const restored = createActor(managerMachine.provide({ actors: { watchLease: fromCallback(() => () => {}) } }), {
      snapshot: json,
      clock,
      input: { node: "me", heartbeatMs: 200, leaseMs: 1000 },
    });
    restored.start();
    expect(restored.getSnapshot().value).toEqual(actor.getSnapshot().value);
    expect(restored.getSnapshot().context).toEqual(actor.getSnapshot().context);
  });
});

describe("client session machine", () => {
  const provided = (open = async () => ({ session: "S", epoch: 2 })) => {
    const reconciled: number[] = [];
    const m = clientSessionMachine.provide({
      actors: {
        open: fromPromise(open),
        reconcile: fromPromise(async ({ input }) => {
          reconciled.push(input.epoch);
        }),
      },
    });
    return { m, reconciled };
  };

  it("opens, restarts through `restarting` on a newer epoch, and ignores a stale one (I5)", async () => {
    const { m, reconciled } = provided();
    const a = createActor(m, { input: { service: "svc" } }).start();
    await waitFor(a, (s) => s.matches("active"));
    a.send({ type: "RESTART", epoch: 1 }); // older than 2: ignored
    expect(a.getSnapshot().matches("active")).toBe(true);
    a.send({ type: "RESTART", epoch: 3 });
    await waitFor(a, (s) => s.matches("active") && reconciled.length === 1);
    expect(reconciled).toEqual([3]);
    expect(a.getSnapshot().context.epoch).toBe(3);
  });

  it("restarts explicitly from a persisted snapshot", async () => {
    const { m, reconciled } = provided();
    const a = createActor(m, { input: { service: "svc" } }).start();
    await waitFor(a, (s) => s.matches("active"));
    const persisted = JSON.parse(JSON.stringify(a.getPersistedSnapshot()));
    const b = createActor(m, { snapshot: persisted, input: { service: "svc" } }).start();
    expect(b.getSnapshot().context.session).toBe("S");
    b.send({ type: "RESTART", epoch: b.getSnapshot().context.epoch });
    await waitFor(b, (s) => s.matches("active") && reconciled.length === 1);
    expect(reconciled).toEqual([2]);
  });

  it("fails when the open is refused", async () => {
    const { m } = provided(async () => {
      throw new Error("TANDEM_UNKNOWN_SERVICE");
    });
    const a = createActor(m, { input: { service: "nope" } }).start();
    await waitFor(a, (s) => s.status === "done");
    expect(a.getSnapshot().matches("failed")).toBe(true);
    expect(a.getSnapshot().context.error).toMatch(/UNKNOWN_SERVICE/);
  });

  it("closes through `closing`", async () => {
    const { m } = provided();
    const a = createActor(m, { input: { service: "svc" } }).start();
    await waitFor(a, (s) => s.matches("active"));
    a.send({ type: "CLOSE" });
    await waitFor(a, (s) => s.matches("closed"));
  });
});

describe("server session machine", () => {
  const m = serverSessionMachine.provide({ actors: { register: fromPromise(async () => ({ epoch: 4 })) } });

  it("is working while requests are in the handler and ready otherwise", async () => {
    const a = createActor(m, { input: { server: "s", service: "svc" } }).start();
    await waitFor(a, (s) => s.matches({ serving: "ready" }));
    a.send({ type: "BUSY" });
    expect(a.getSnapshot().matches({ serving: "working" })).toBe(true);
    a.send({ type: "BUSY" }); // (told twice: still working)
    expect(a.getSnapshot().matches({ serving: "working" })).toBe(true);
    a.send({ type: "IDLE" });
    expect(a.getSnapshot().matches({ serving: "ready" })).toBe(true);
  });

  it("reconciles each restart part of its epoch or a newer one, never an older one, and registers again when the manager forgot it", async () => {
    const reconciled: Array<{ epoch: number; id: number }> = [];
    const withReconcile = m.provide({ actors: { reconcile: fromPromise<void, { epoch: number; id: number }>(async ({ input }) => {
          reconciled.push(input);
        }) } });
    const a = createActor(withReconcile, { input: { server: "s", service: "svc" } }).start();
    await waitFor(a, (s) => s.matches("serving"));
    a.send({ type: "RESTART", epoch: 3, id: 1 }); // older than the 4 it registered with
    expect(a.getSnapshot().matches("serving")).toBe(true);
    a.send({ type: "RESTART", epoch: 5, id: 2 });
    a.send({ type: "RESTART", epoch: 5, id: 3 }); // the same restart's second part, while restarting
    await waitFor(a, (s) => s.matches("serving") && reconciled.length === 2);
    expect(reconciled).toEqual([{ epoch: 5, id: 2 }, { epoch: 5, id: 3 }]);
    a.send({ type: "REREGISTER" });
    await waitFor(a, (s) => s.matches("serving"));
    expect(a.getSnapshot().context.epoch).toBe(5); // never goes back
  });

  it("persists and restores its snapshot", async () => {
    const a = createActor(m, { input: { server: "s", service: "svc" } }).start();
    await waitFor(a, (s) => s.matches("serving"));
    a.send({ type: "BUSY" });
    const b = createActor(m, { snapshot: JSON.parse(JSON.stringify(a.getPersistedSnapshot())), input: { server: "s", service: "svc" } }).start();
    expect(b.getSnapshot().value).toEqual(a.getSnapshot().value);
    b.send({ type: "IDLE" });
    expect(b.getSnapshot().matches({ serving: "ready" })).toBe(true);
  });
});
