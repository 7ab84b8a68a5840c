/**
 * A nats-server whose per-role users were written before acknowledgements travelled in batches (no
 * publish on `_INBOX_manager.*.B.<id>`): NATS refuses the first batch, the server and client
 * say what to do and answer one by one from then on, and every request still completes once.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import { buildAuth, type AuthUser } from "../../src/runtime/dev/auth.js";
import { resolveConfig } from "../../src/runtime/config.js";
import { memoryLogger } from "../../src/runtime/logger.js";
import { NatsServer } from "../../src/runtime/dev/nats-server.js";
import { startRuntime, type Runtime } from "../../src/runtime/runtime.js";
import { FAST, eventually } from "../helpers/nats.js";

let dir: string;
let ns: NatsServer;
let users: AuthUser[];
const rts: Runtime[] = [];

async function as(user: string) {
  const u = users.find((x) => x.user === user)!;
  const config = resolveConfig(FAST as never, { natsUrls: [ns.url], natsUser: u.user, natsPass: u.password } as never);
  const log = memoryLogger("warn");
  const rt = await startRuntime(config, { logger: log.logger, name: user, provision: u.role === "manager" });
  rts.push(rt);
  return { rt, lines: log.lines };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-oldauth-"));
  const built = buildAuth({ clients: ["alice"], servers: [{ id: "srv1", service: "svc" }] });
  users = built.users;
  // The config as `tandem auth` wrote it before batched acknowledgements.
  const old = built.conf.replace(/\s*"_INBOX_manager\.\*\.B\.[^"]+",?/g, "");
  expect(old).not.toContain(".B.");
  writeFileSync(join(dir, "nats.conf"), old);
  ns = await NatsServer.start({ args: ["-c", join(dir, "nats.conf")] });
}, 60_000);

afterAll(async () => {
  for (const rt of rts.reverse()) await rt.close().catch(() => {});
  await ns?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe("permissions from before batched acknowledgements", () => {
  it("the first refused batch turns batching off, with a warning that says to run `tandem auth` again; every request completes once", async () => {
    const m = await as("manager");
    const mgr = new ManagerNode(m.rt);
    mgr.start();
    await mgr.waitPrimary();
    const s = await as("srv1");
    const server = await TandemServer.start(s.rt, { service: "svc", id: "srv1", handler: (req) => ({ echo: req.payload, n: req.n }) });
    const c = await as("alice");
    const alice = await TandemClient.connect(c.rt, { id: "alice" });
    const sessions = await Promise.all([1, 2, 3, 4].map(() => alice.open("svc")));
    const run = () =>
      Promise.all(sessions.map(async (x, k) => {
        const out: unknown[] = [];
        for (let i = 0; i < 15; i++) out.push(await x.request({ k, i }));
        return out;
      }));
    // Rounds until a turn brought the server work of several sessions (a batch it tried), then
    // one more with batching off; every round answers every request, in order.
    const refusal = () => s.lines().find((l) => String(l.msg).includes("NATS refused batched acknowledgements"));
    for (let round = 0; round < 40 && !refusal(); round++) {
      const got = await run();
      got.forEach((out, k) => expect(out.map((o) => (o as { echo: unknown }).echo)).toEqual(Array.from({ length: 15 }, (_, i) => ({ k, i }))));
    }
    const after = await run();
    after.forEach((out, k) => expect(out.map((o) => (o as { echo: unknown }).echo)).toEqual(Array.from({ length: 15 }, (_, i) => ({ k, i }))));
    const warned = await eventually(refusal, "the server's warning");
    expect(warned).toMatchObject({ code: "TANDEM_AUTH", subject: expect.stringMatching(/^_INBOX_manager\..+\.B\.srv1$/) });
    expect(String(warned.msg)).toMatch(/Run `tandem auth` again/);
    expect(s.lines().filter((l) => String(l.msg).includes("NATS refused batched acknowledgements"))).toHaveLength(1);
    expect(server.stats.duplicates).toBe(0);
    for (const x of sessions) await x.close();
    await alice.close();
    await server.stop();
    await mgr.stop();
  }, 60_000);
});
