/**
 * `tandem ui`'s server: the dashboard page (built by esbuild into dist/dashboard) and a small
 * JSON API over what the manager's status subject, the dead-letter stream and the session queues
 * say. It reads through NATS with the runtime it is given, so it has the permissions of that
 * NATS user and no more (the admin user of `tandem auth`, in a secured deployment).
 *
 * The primary is polled once a second; a change of epoch or primary is a takeover on the
 * timeline, and a primary that stops answering is an entry too. Listens on 127.0.0.1 by default;
 * the one writing call (replay) is refused from another origin.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { existsSync, readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { ManagerStatus } from "../../actors/manager.js";
import { unwrap } from "../../actors/protocol.js";
import { bodyOf, getDeadLetter, listDeadLetters, replayDeadLetter } from "../../actors/deadLetters.js";
import { ErrorCode, TandemError } from "../../runtime/errors.js";
import type { Runtime } from "../../runtime/runtime.js";
import { encode } from "../../runtime/wire.js";
import { traceSession } from "../request-trace.js";

/** src/apps/dashboard and dist/apps/dashboard are both three levels below the package root. */
export const ASSETS = join(resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", ".."), "dist", "dashboard");

export interface TimelineEntry {
  at: string;
  kind: "first seen" | "takeover" | "no primary" | "primary back";
  epoch: number | null;
  node: string | null;
  previous?: { epoch: number; node: string } | null;
}

export interface DashboardState {
  at: string;
  primary: ManagerStatus | null;
  /** Why there is no primary view: what the status request said. */
  error: string | null;
  timeline: TimelineEntry[];
}

export interface DashboardOptions {
  port?: number;
  host?: string;
  pollMs?: number;
}

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png" };

export class Dashboard {
  private state: DashboardState = { at: new Date().toISOString(), primary: null, error: "not polled yet", timeline: [] };
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  private constructor(
    private readonly rt: Runtime,
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(rt: Runtime, opts: DashboardOptions = {}): Promise<Dashboard> {
    if (!existsSync(join(ASSETS, "index.html"))) {
      throw new TandemError(ErrorCode.Config, `the dashboard page is not built (${ASSETS}/index.html is missing); run \`npm run build\``);
    }
    const host = opts.host ?? "127.0.0.1";
    let self: Dashboard | null = null;
    const server = createServer((req, res) => {
      if (!self) return void res.writeHead(503).end();
      self.route(req, res).catch((err: unknown) => send(res, 500, { error: (err as Error).message }));
    });
    await new Promise<void>((ok, fail) => {
      server.once("error", fail);
      server.listen(opts.port ?? 0, host, () => ok());
    });
    const port = (server.address() as AddressInfo).port;
    self = new Dashboard(rt, server, `http://${host}:${port}`);
    await self.poll();
    self.timer = setInterval(() => void self!.poll(), opts.pollMs ?? 1000);
    return self;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.server.closeAllConnections?.();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Ask the primary for its view; note takeovers and a lost primary on the timeline. */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    const at = new Date().toISOString();
    try {
      const r = await this.rt.nc.request(this.rt.names.mgr("status"), encode({ detail: true }), { timeout: 2000 });
      const st = unwrap<ManagerStatus>(r.data);
      const last = this.state.timeline[this.state.timeline.length - 1];
      const seen = [...this.state.timeline].reverse().find((e) => e.epoch !== null);
      if (!seen) this.note({ at: st.since ?? at, kind: "first seen", epoch: st.epoch, node: st.node });
      else if (seen.epoch !== st.epoch || seen.node !== st.node) this.note({ at, kind: "takeover", epoch: st.epoch, node: st.node, previous: { epoch: seen.epoch!, node: seen.node! } });
      else if (last?.kind === "no primary") this.note({ at, kind: "primary back", epoch: st.epoch, node: st.node });
      this.state = { at, primary: st, error: null, timeline: this.state.timeline };
    } catch (err) {
      const last = this.state.timeline[this.state.timeline.length - 1];
      if (last && last.kind !== "no primary") this.note({ at, kind: "no primary", epoch: null, node: null });
      this.state = { at, primary: null, error: `no primary manager answers (${(err as Error).message}): is \`tandem manager\` running on this NATS and prefix?`, timeline: this.state.timeline };
    } finally {
      this.polling = false;
    }
  }

  private note(e: TimelineEntry): void {
    this.state.timeline.push(e);
    if (this.state.timeline.length > 200) this.state.timeline.shift();
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const path = url.pathname;
    if (req.method === "GET" && (path === "/" || path === "/index.html")) return this.asset(res, "index.html");
    if (req.method === "GET" && path.startsWith("/assets/")) return this.asset(res, path.slice("/assets/".length));
    if (req.method === "GET" && path === "/api/state") return send(res, 200, this.state);
    if (req.method === "GET" && path === "/api/dlq") {
      const limit = Math.min(500, Number(url.searchParams.get("limit") ?? 100) || 100);
      const list = await listDeadLetters(this.rt, { limit });
      return send(res, 200, list.map((d) => ({ id: d.id, code: d.code, message: d.message, at: d.at, subject: d.subject, session: d.session ?? null, n: d.n ?? null, size: d.size })));
    }
    const show = /^\/api\/dlq\/(\d+)$/.exec(path);
    if (req.method === "GET" && show) {
      const d = await getDeadLetter(this.rt, Number(show[1]));
      return d ? send(res, 200, { ...d, data: undefined, body: bodyOf(d) }) : send(res, 404, { error: `no dead letter ${show[1]}` });
    }
    const replay = /^\/api\/dlq\/(\d+)\/replay$/.exec(path);
    if (req.method === "POST" && replay) {
      // A page of another origin must not make this browser replay work.
      const origin = req.headers.origin;
      if (origin !== undefined && origin !== `http://${req.headers.host}`) return send(res, 403, { error: "replay is refused from another origin" });
      try {
        return send(res, 200, await replayDeadLetter(this.rt, Number(replay[1]), { timeoutMs: 30_000 }));
      } catch (err) {
        return send(res, 409, { error: (err as Error).message, code: err instanceof TandemError ? err.code : undefined });
      }
    }
    const trace = /^\/api\/trace\/([A-Za-z0-9_-]{1,64})$/.exec(path);
    if (req.method === "GET" && trace) return send(res, 200, await traceSession(this.rt, trace[1]!));
    return send(res, 404, { error: "not found" });
  }

  private asset(res: ServerResponse, name: string): void {
    const file = resolve(ASSETS, name);
    if (!file.startsWith(`${ASSETS}/`) || !existsSync(file)) return send(res, 404, { error: "not found" });
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-cache" });
    res.end(readFileSync(file));
  }
}

function send(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}
