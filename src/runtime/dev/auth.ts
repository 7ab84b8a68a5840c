/**
 * Per-role NATS users with subject permissions (docs/design.md §2): the client id is a subject
 * token in every client-facing subject, so NATS itself keeps each client to its own queue and
 * deliveries, each server to its own work, and leaves everything else to the manager.
 *
 *   manager, admin   everything
 *   server <id>      receive its own `<p>.work.<id>.*`, `<p>.cancel.<id>.*`, `<p>.srv.<id>.>`;
 *                    publish its own responses `<p>.resp.<id>.*`, register as itself for its
 *                    service, heartbeat as itself, its own copy records, the fence and ledger
 *                    buckets' keys (no stream or bucket may it create)
 *   client <id>      publish only `<p>.req.<id>.>` and `<p>.mgr.open|resume|close.<id>`; receive only
 *                    `<p>.deliver.<id>.*` and `<p>.cli.<id>.>`; its inbox is `_INBOX_<id>`
 *
 * Everyone may reply to what it was sent (allow_responses) and write to the dead-letter stream.
 * Servers and clients may also send their acknowledgements in batches to the manager's inbox,
 * each only on its own batch subject `_INBOX_manager.*.B.<id>` (runtime/reply-batch.ts): the
 * manager takes from a batch only answers to what it sent to that id.
 * `tandem auth` writes the config and the passwords; `tandem nats --secure` runs with them.
 */
import { randomBytes } from "node:crypto";
import { ErrorCode, TandemError } from "../errors.js";
import { batchSubject } from "../reply-batch.js";
import { Names, isToken } from "../wire.js";

export interface AuthUser {
  user: string;
  password: string;
  role: "manager" | "admin" | "server" | "client";
  service?: string;
}

export interface AuthSpec {
  prefix?: string;
  clients: string[];
  servers: Array<{ id: string; service: string }>;
  /** Bucket the KV ledger store uses (servers may write it). */
  ledgerBucket?: string;
}

interface Permissions {
  publish: { allow: string[] } | string;
  subscribe: { allow: string[] } | string;
  allow_responses?: boolean;
}

const password = () => randomBytes(18).toString("base64url");

export function inboxPrefixFor(user: string): string {
  return `_INBOX_${user}`;
}

function permissionsOf(u: AuthUser, names: Names, ledgerBucket: string): Permissions {
  const p = names.prefix;
  const js = ["$JS.API.INFO"];
  // Dead letters only under one's own name (wire.ts Names.dlq): none can pass for another's.
  const dlq = `${p}.dlq.*.${u.user}`;
  if (u.role === "manager" || u.role === "admin") return { publish: ">", subscribe: ">" };
  const acks = batchSubject(`${inboxPrefixFor("manager")}.*`, u.user);
  if (u.role === "server") {
    const kv = (bucket: string) => [`$KV.${bucket}.>`, `$JS.API.STREAM.INFO.KV_${bucket}`, `$JS.API.STREAM.MSG.GET.KV_${bucket}`, `$JS.API.DIRECT.GET.KV_${bucket}.>`];
    return {
      publish: {
        allow: [
          // Only as itself, and only for the service it was granted (the id and the service are
          // subject tokens; the manager takes both from the subject).
          names.register(u.user, u.service!),
          names.heartbeat(u.user),
          names.hopAll("resp", u.user),
          acks,
          dlq,
          ...js,
          `$KV.${names.bucketSessions}.*.took.*.${u.user}`,
          ...kv(names.bucketFence),
          // The ledger's bucket is provisioned by the manager: a server may write its keys but
          // create no stream (a stream named like it could capture other users' subjects).
          ...kv(ledgerBucket),
        ],
      },
      subscribe: { allow: [names.hopAll("work", u.user), names.hopAll("cancel", u.user), `${p}.srv.${u.user}.>`, `${inboxPrefixFor(u.user)}.>`] },
      allow_responses: true,
    };
  }
  return {
    publish: { allow: [`${p}.req.${u.user}.>`, names.clientCall("open", u.user), names.clientCall("resume", u.user), names.clientCall("close", u.user), acks, dlq, ...js] },
    subscribe: { allow: [names.hopAll("deliver", u.user), `${p}.cli.${u.user}.>`, `${inboxPrefixFor(u.user)}.>`] },
    allow_responses: true,
  };
}

/** Users with fresh passwords, and the nats-server configuration that enforces their roles. */
export function buildAuth(spec: AuthSpec, previous: AuthUser[] = []): { users: AuthUser[]; conf: string } {
  const names = new Names(spec.prefix ?? "tandem");
  const ledgerBucket = spec.ledgerBucket ?? names.bucketLedger;
  const keep = new Map(previous.map((u) => [u.user, u.password]));
  const users: AuthUser[] = [];
  const add = (u: Omit<AuthUser, "password">) => {
    if (!isToken(u.user)) throw new TandemError(ErrorCode.Config, `user "${u.user}" must be 1-64 letters, digits, _ or - (it is a subject token)`);
    if (users.some((x) => x.user === u.user)) throw new TandemError(ErrorCode.Config, `user "${u.user}" is named twice; client and server ids must be unique and not "manager" or "admin"`);
    users.push({ ...u, password: keep.get(u.user) ?? password() });
  };
  add({ user: "manager", role: "manager" });
  add({ user: "admin", role: "admin" });
  for (const s of spec.servers) add({ user: s.id, role: "server", service: s.service });
  for (const c of spec.clients) add({ user: c, role: "client" });
  const authorization = {
    users: users.map((u) => ({ user: u.user, password: u.password, permissions: permissionsOf(u, names, ledgerBucket) })),
  };
  const conf = `# Written by \`tandem auth\`: one NATS user per Tandem role. Keep it private.\nauthorization: ${JSON.stringify(authorization, null, 2)}\n`;
  return { users, conf };
}
