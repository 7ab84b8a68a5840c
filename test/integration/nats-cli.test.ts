/**
 * The NATS CLI follows Tandem's traffic: the real `nats` binary (natscli, built by the setup)
 * against a live deployment on a real nats-server, asserting on what the tool prints, not on
 * Tandem's own view of it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import { natsCliBin } from "../../src/runtime/dev/nats-bin.js";
import { NatsServer, serverConfig } from "../../src/runtime/dev/nats-server.js";
import { serverVersionProblem } from "../../src/runtime/connection.js";
import { CLI } from "../helpers/procs.js";
import { eventually, primaryManager, runtimeFor, startNats } from "../helpers/nats.js";
import type { Runtime } from "../../src/runtime/runtime.js";

const run = promisify(execFile);
let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
let server: TandemServer;
let batchy: TandemServer;
let client: TandemClient;

/**
 * `nats sub` in the background: its output so far, and a stop. Ready once it has printed a probe
 * published on a subject its filter matches ("Subscribing on" comes before the server has the
 * subscription, so a message right after it can be missed).
 */
function natsSub(subject: string): { out: () => string; stop: () => void; ready: Promise<void> } {
  const child: ChildProcess = spawn(natsCliBin(), ["--server", ns.url, "sub", subject], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const take = (d: Buffer) => void (out += d.toString());
  child.stdout!.on("data", take);
  child.stderr!.on("data", take);
  const probe = subject.replace(/\*/g, PROBE).replace(/>$/, PROBE);
  const ready = eventually(() => {
    rt.nc.publish(probe, "probe");
    return out.includes(`Received on "${probe}"`);
  }, `nats sub ${subject} to be subscribed`, 10_000, 100).then(() => {});
  return { out: () => out, stop: () => child.kill("SIGKILL"), ready };
}

const PROBE = "probe";
/** Subjects of the messages `nats sub` printed, the readiness probes left out. */
const received = (out: string) => [...out.matchAll(/Received on "([^"]+)"/g)].map((m) => m[1]!).filter((s) => !s.split(".").includes(PROBE));

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
  mgr = await primaryManager(rt);
  server = await TandemServer.start(rt, { service: "greet", id: "s1", handler: (req, ctx) => ({ hello: req.payload, traceparent: ctx.traceparent }) });
  // The first of every 4 finishes last: with a window of 4, the others wait for it and all 4
  // are delivered together.
  batchy = await TandemServer.start(rt, { service: "batchy", id: "s2", handler: async (req) => (await new Promise((r) => setTimeout(r, req.n % 4 === 1 ? 150 : 5)), req.n) });
  client = await TandemClient.connect(rt, { id: "alice" });
}, 60_000);

afterAll(async () => {
  await client?.close();
  await server?.stop();
  await batchy?.stop();
  await mgr?.stop();
  await rt?.close();
  await ns?.cleanup();
});

describe("the NATS CLI", () => {
  it("nats sub 'tandem.*.*.<session>' follows one request through its queue, work, response and delivery, one traceparent on every hop", async () => {
    const session = await client.open("greet");
    const sub = natsSub(rt.names.sessionAll(session.id));
    await sub.ready;
    const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const r = await session.send({ name: "Ada" }, { traceparent: tp });
    const resp = await r.response;
    expect(resp.traceparent).toBe(tp);
    expect(resp.value).toEqual({ hello: { name: "Ada" }, traceparent: tp }); // the handler saw it too
    await eventually(() => received(sub.out()).some((s) => s.startsWith("tandem.deliver.")), "the delivery in nats sub's output");
    await new Promise((r) => setTimeout(r, 300)); // the receipt, which rides on the next request or comes alone
    sub.stop();
    const out = sub.out();
    const hops = received(out).map((s) => s.split(".")[1]);
    expect(hops.slice(0, 4)).toEqual(["req", "work", "resp", "deliver"]);
    expect(received(out).every((s) => s.endsWith(`.${session.id}`))).toBe(true);
    // Every message block names session, request, epoch and kind, and carries the traceparent.
    const blocks = out.split(/\[#\d+\]/).slice(1).filter((b) => !b.includes(`.${PROBE}.`)).slice(0, 4);
    for (const b of blocks) {
      expect(b).toContain(`Tandem-Session: ${session.id}`);
      expect(b).toContain("Tandem-Request: 1");
      expect(b).toMatch(/Tandem-Epoch: \d+/);
      expect(b).toMatch(/Tandem-Kind: (request|response)/);
      expect(b).toContain(`traceparent: ${tp}`);
      expect(b).toMatch(/\{"[a-z]+":/); // a JSON body, readable as it stands
    }
    await session.close();
  });

  it("nats sub shows a batch of a windowed session as one message naming every request it carries", async () => {
    const session = await client.open("batchy", { window: 4 });
    const sub = natsSub(rt.names.deliver(client.id, session.id));
    await sub.ready;
    const pending = [];
    for (let i = 1; i <= 4; i++) pending.push((await session.send(i)).response);
    expect((await Promise.all(pending)).map((r) => r.value)).toEqual([1, 2, 3, 4]);
    await eventually(() => /"batch":\[/.test(sub.out()) || null, "a batch in nats sub's output");
    sub.stop();
    const block = sub.out().split(/\[#\d+\]/).find((b) => b.includes('"batch":['))!;
    const numbers = [...block.matchAll(/Tandem-Request: (\d+)/g)].map((m) => Number(m[1]));
    expect(numbers.length).toBeGreaterThan(1);
    const body = JSON.parse(block.slice(block.indexOf('{"'), block.lastIndexOf("}") + 1)) as { batch: Array<{ n: number }> };
    expect(body.batch.map((x) => x.n)).toEqual(numbers);
    await session.close();
  });

  it("nats sub '_INBOX.*.B.*' shows a server's or client's acknowledgements of several sessions in one message, entry by entry", async () => {
    const sub = natsSub("_INBOX.*.B.*");
    await sub.ready;
    const sessions = await Promise.all(Array.from({ length: 8 }, () => client.open("greet")));
    // Rounds of every session at once until one turn brought several sessions' work or deliveries.
    await eventually(async () => {
      await Promise.all(sessions.map(async (x) => { for (let i = 0; i < 5; i++) await x.request(i); }));
      return received(sub.out()).length > 0 || null;
    }, "a batch of acknowledgements in nats sub's output", 20_000, 0);
    sub.stop();
    const block = sub.out().split(/\[#\d+\]/).find((b) => /Received on "_INBOX\.[^"]+\.B\.(s1|alice)"/.test(b) && !b.includes(`.${PROBE}.`))!;
    // Entries as the README shows them: "<id> <length>" and the acknowledgement itself.
    const entries = [...block.matchAll(/([0-9a-z]+) (\d+)\n(\{"ok":true[^\n]*?\}\})/g)];
    expect(entries.length).toBeGreaterThan(1);
    for (const [, , len, reply] of entries) expect(Buffer.byteLength(reply!)).toBe(Number(len));
    for (const x of sessions) await x.close();
  });

  it("the data subjects are quiet when nothing happens; the periodic control traffic goes elsewhere", async () => {
    const data = natsSub(`${rt.names.prefix}.*.*.*`);
    const all = natsSub(`${rt.names.prefix}.>`);
    await Promise.all([data.ready, all.ready]);
    await new Promise((r) => setTimeout(r, 1500));
    data.stop();
    all.stop();
    expect(received(data.out())).toEqual([]);
    // The control traffic is there (server heartbeats, backups), on its own subjects.
    const control = received(all.out());
    expect(control.length).toBeGreaterThan(3);
    expect(new Set(control)).toEqual(new Set(control.filter((s) => s.startsWith(`${rt.names.prefix}.beat.`) || s === rt.names.backup)));
  });

  it("nats trace of a request publish shows it stored in TANDEM_REQ", async () => {
    const session = await client.open("greet");
    const body = JSON.stringify({ n: 1, kind: "request", payload: "traced" });
    const { stdout } = await run(natsCliBin(), ["--server", ns.url, "trace", "--deliver", rt.names.req(client.id, session.id), body, "-H", `Nats-Msg-Id:${session.id}.1`], { timeout: 15_000 });
    expect(stdout).toMatch(new RegExp(`JetStream action:"stored" stream:"${rt.names.streamReq}" subject:"${rt.names.req(client.id, session.id).replace(/\./g, "\\.")}"`));
    await session.close();
  });

  it("a client with traceDest has nats-server trace every request publish to that subject", async () => {
    const traced = await TandemClient.connect(rt, { id: "tracer", traceDest: "trace.tracer" });
    const sub = natsSub("trace.tracer");
    await sub.ready;
    const session = await traced.open("greet");
    await session.request("x");
    await eventually(() => /"type":"js"/.test(sub.out()), "a trace event from nats-server");
    sub.stop();
    const event = JSON.parse(sub.out().split("\n").find((l) => l.startsWith("{") && l.includes('"events"'))!) as { events: Array<{ type: string; stream?: string }> };
    expect(event.events.find((e) => e.type === "js")?.stream).toBe(rt.names.streamReq);
    await session.close();
    await traced.close();
  });

  it("nats stream get and nats stream view show queue entries as JSON with their headers", async () => {
    const session = await client.open("greet");
    await session.request({ readable: true }, { restart: { step: 1 } });
    const info = await rt.jsm.streams.info(rt.names.streamReq, { subjects_filter: rt.names.req(client.id, session.id) });
    const last = info.state.last_seq;
    const { stdout: got } = await run(natsCliBin(), ["--server", ns.url, "stream", "get", rt.names.streamReq, String(last)], { timeout: 15_000 });
    expect(got).toContain(`Tandem-Session: ${session.id}`);
    // `stream view` pages interactively: give it a terminal (util-linux script).
    const cmd = `${natsCliBin()} --server ${ns.url} stream view ${rt.names.streamReq} 10 --subject ${rt.names.req(client.id, session.id)}`;
    const { stdout: view } = await run("script", ["-qec", cmd, "/dev/null"], { timeout: 15_000 });
    expect(view).toContain('"payload":{"readable":true}');
    expect(view).toContain('"restart":{"step":1}');
    expect(view).toMatch(/traceparent: 00-[0-9a-f]{32}-/);
    await session.close();
  });

  it("tandem trace reconstructs a request from the streams and buckets: queued, answered by which server, taken", async () => {
    const session = await client.open("greet");
    await session.request(1, { restart: { r: 1 } });
    await session.request(2);
    await eventually(async () => (await client.sessionInfo(session.id)).record?.taken === 2 || session.takenUpTo >= 2, "the receipts");
    await new Promise((r) => setTimeout(r, 1200)); // the session record is written once a backup period
    const env = { ...process.env, NATS_URL: ns.url, TANDEM_LOG_LEVEL: "warn" };
    const { stdout } = await run(process.execPath, [CLI, "trace", session.id], { env, timeout: 15_000 });
    expect(stdout).toContain(`session ${session.id}  client alice  service greet  server s1`);
    expect(stdout).toMatch(/request 1 {2}taken {2}traceparent 00-/);
    expect(stdout).toMatch(/queued {7}request in TANDEM_REQ seq \d+, with client restart data/);
    expect(stdout).toMatch(/answered {5}by s1: ok, TANDEM_RESP seq \d+/);
    const { stdout: json } = await run(process.execPath, [CLI, "trace", session.id, "2", "--json"], { env, timeout: 15_000 });
    const t = JSON.parse(json) as { requests: Array<{ n: number; state: string; steps: Array<{ step: string; server?: string }> }> };
    expect(t.requests.map((q) => q.n)).toEqual([2]);
    expect(t.requests[0]!.steps.map((s) => s.step)).toEqual(["queued", "answered", "taken"]);
    expect(t.requests[0]!.steps[1]!.server).toBe("s1");
    // An unknown session says so and exits non-zero.
    const unknown = await run(process.execPath, [CLI, "trace", "no-such-session"], { env, timeout: 15_000 }).catch((e: { code: number; stdout: string }) => e);
    expect((unknown as { code: number }).code).toBe(3);
    expect((unknown as { stdout: string }).stdout).toContain("no session record");
    await session.close();
  });
});

describe("nats-server as Tandem runs it", () => {
  it("--sync always turns on fsync per write (read back from the server's own /varz)", async () => {
    const mon = await (await import("../../src/runtime/dev/nats-server.js")).freePort();
    const s = await NatsServer.start({ config: serverConfig({ sync: "always" }), args: ["-m", String(mon)] });
    try {
      const varz = (await (await fetch(`http://127.0.0.1:${mon}/varz`)).json()) as { version: string; jetstream: { config: { sync_always?: boolean } } };
      expect(varz.jetstream.config.sync_always).toBe(true);
      expect(serverVersionProblem(varz.version, [s.url])).toBeNull(); // the setup's server is above the floor
    } finally {
      await s.cleanup();
    }
  });

  it("a server older than 2.12 is refused with TANDEM_NATS_SERVER naming the version and what to do", () => {
    const e = serverVersionProblem("2.9.10", ["nats://old:4222"]);
    expect(e?.code).toBe("TANDEM_NATS_SERVER");
    expect(e?.message).toMatch(/version 2\.9\.10; Tandem needs nats-server 2\.12\.0 or newer.*npm run setup/);
    expect(serverVersionProblem("2.11.9", [])?.code).toBe("TANDEM_NATS_SERVER");
    expect(serverVersionProblem(undefined, [])?.code).toBe("TANDEM_NATS_SERVER");
    expect(serverVersionProblem("2.12.0", [])).toBeNull();
    expect(serverVersionProblem("3.0.1", [])).toBeNull();
  });
});
