/**
 * TLS: a nats-server serving a certificate signed by a throwaway CA (made with openssl here).
 * Tandem connects when given the CA, and a process without it fails at start with an error
 * that says what to give.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import { resolveConfig } from "../../src/runtime/config.js";
import { memoryLogger } from "../../src/runtime/logger.js";
import { NatsServer } from "../../src/runtime/dev/nats-server.js";
import { startRuntime, type Runtime } from "../../src/runtime/runtime.js";
import { FAST, primaryManager } from "../helpers/nats.js";

let dir: string;
let ns: NatsServer;

function makeCerts(d: string): void {
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: d, stdio: "ignore" });
  ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=tandem-test-ca");
  ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1");
  writeFileSync(join(d, "ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "ext.cnf");
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-tls-"));
  makeCerts(dir);
  ns = await NatsServer.start({ args: ["--tls", "--tlscert", join(dir, "server.pem"), "--tlskey", join(dir, "server.key")] });
}, 60_000);

afterAll(async () => {
  await ns?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

const runtime = (over: Record<string, unknown>): Promise<Runtime> =>
  startRuntime(resolveConfig(FAST as never, { natsUrls: [ns.url], ...over } as never), { logger: memoryLogger("warn").logger, name: "tls" });

describe("TLS to NATS", () => {
  it("with the CA, a manager, a server and a client work over TLS", async () => {
    const rt = await runtime({ natsCa: join(dir, "ca.pem") });
    const mgr = await primaryManager(rt);
    const server = await TandemServer.start(rt, { service: "tls", handler: (req) => `secure ${String(req.payload)}` });
    const client = await TandemClient.connect(rt);
    const s = await client.open("tls");
    expect(await s.request("hello")).toBe("secure hello");
    await client.close();
    await server.stop();
    await mgr.stop();
    await rt.close();
  });

  it("without the CA, start fails with an error that says to give NATS_CA", async () => {
    await expect(runtime({})).rejects.toMatchObject({ code: "TANDEM_CONFIG", message: expect.stringContaining("NATS_CA") });
  });
});
