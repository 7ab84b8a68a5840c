/**
 * `tandem auth`: write per-role NATS users and permissions.
 * Its flags and help are declared here together; the common settings, parsing and runtime
 * come from the kit.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildAuth, type AuthUser } from "../../runtime/dev/auth.js";
import { fail, parse, configFrom, authDir } from "./kit.js";

export const HELP = `Usage: tandem auth --clients ID,ID --servers ID:SERVICE,... [--out DIR]

Writes DIR/nats.conf (one NATS user per role with subject permissions) and DIR/users.json
(the passwords; keep it private). Run again to add users: existing passwords are kept.
  --clients IDS      client ids (each client's NATS user is its id)
  --servers LIST     server ids with their service (the server's user is its id)
  --out DIR          default <data-dir>/auth
Then: tandem nats --secure, and every role with --user/--password (or NATS_USER/NATS_PASSWORD):
the manager as "manager", servers and clients as their ids, \`tandem status\` as "admin".`;

export async function cmdAuth(argv: string[]): Promise<void> {
  const v = parse("auth", HELP, argv, { clients: { type: "string" }, servers: { type: "string" }, out: { type: "string" } });
  const cfg = configFrom(v);
  const dir = authDir(cfg, typeof v.out === "string" ? v.out : undefined);
  const list = (s: unknown) => (typeof s === "string" ? s.split(",").map((x) => x.trim()).filter(Boolean) : []);
  const servers = list(v.servers).map((x) => {
    const [id, service] = x.split(":");
    if (!id || !service) fail(`--servers takes ID:SERVICE pairs (got "${x}")`);
    return { id, service };
  });
  const usersFile = join(dir, "users.json");
  const previous = existsSync(usersFile) ? (JSON.parse(readFileSync(usersFile, "utf8")) as AuthUser[]) : [];
  // Users named before stay (with their passwords) unless named again with another role.
  const clients = [...new Set([...previous.filter((u) => u.role === "client").map((u) => u.user), ...list(v.clients)])];
  const known = new Map(previous.filter((u) => u.role === "server").map((u) => [u.user, u.service!]));
  for (const s of servers) known.set(s.id, s.service);
  let built: { users: AuthUser[]; conf: string };
  try {
    built = buildAuth({ prefix: cfg.prefix, clients, servers: [...known].map(([id, service]) => ({ id, service })) }, previous);
  } catch (err) {
    fail((err as Error).message);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, "nats.conf"), built.conf, { mode: 0o600 });
  writeFileSync(usersFile, JSON.stringify(built.users, null, 2), { mode: 0o600 });
  process.stdout.write(`wrote ${join(dir, "nats.conf")} and ${usersFile} (${built.users.length} users)\n`);
  process.stdout.write("run: tandem nats --secure; then each role with --user and --password from users.json\n");
}
