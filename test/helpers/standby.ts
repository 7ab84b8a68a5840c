/**
 * A primary (m1) and a standby (m2) manager, one echo server of "svc" and one client, in this
 * process on one nats-server, each on a runtime of its own (so the primary can be cut off alone:
 * `rt1.nc.close()` is a death without a word). `cleanups` ends them all.
 */
import { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import type { Config } from "../../src/runtime/config.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { runtimeFor, type NatsServer } from "./nats.js";

export async function primaryAndStandby(ns: NatsServer, cleanups: Array<() => Promise<unknown>>, over: Partial<Record<keyof Config, unknown>> = {}) {
  const rt = async (node: string): Promise<Runtime> => {
    const r = await runtimeFor(ns, { node, ...over }, node);
    cleanups.push(() => r.close());
    return r;
  };
  const rt1 = await rt("m1");
  const m1 = new ManagerNode(rt1);
  m1.start();
  await m1.waitPrimary();
  const m2 = new ManagerNode(await rt("m2"));
  m2.start();
  cleanups.push(() => m2.stop());
  const server = await TandemServer.start(await rt("s"), { service: "svc", handler: (req) => req.payload });
  cleanups.push(() => server.stop());
  const client = await TandemClient.connect(await rt("c"));
  return { rt, rt1, m1, m2, server, client };
}
