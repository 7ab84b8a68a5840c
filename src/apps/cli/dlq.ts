/**
 * `tandem dlq list|show|replay|purge`: the dead-letter stream to work with (README: When work
 * fails). Its flags and help are declared here together; the shared option parsing, settings
 * and runtime come from the kit.
 */
import { parseArgs } from "node:util";
import { bodyOf, getDeadLetter, listDeadLetters, purgeDeadLetters, replayDeadLetter, replayRecord, type DeadLetter } from "../../actors/deadLetters.js";
import { TandemError } from "../../runtime/errors.js";
import { createLogger } from "../../runtime/logger.js";
import { COMMON, COMMON_HELP, configFrom, fail, runtime, type Options, exitIfVersion } from "./kit.js";

export const DLQ_HELP = `Usage: tandem dlq <list|show|replay|purge> [options]

The dead-letter stream: rejected input and quarantined requests (TANDEM_POISON), each with the
original subject, headers and bytes, the error, the time, and the session and request.
  tandem dlq list [--reason R] [--session S] [--limit N] [--json]
                       entries oldest first; R is the code without TANDEM_, lower case
                       (poison, malformed, payload_too_large, ...)
  tandem dlq show ID [--json]
                       one entry with its body decoded (JSON or text; base64 otherwise)
  tandem dlq replay ID | --reason R | --session S [--timeout-ms N] [--json]
                       run quarantined requests again, each in a new session of its service;
                       the outcome is recorded under the entry, so replaying twice runs once
  tandem dlq purge ID | --reason R | --session S | --all
                       remove entries`;

/** A runtime whose info lines stay out of the command's output. */
function quietRuntime(cfg: Parameters<typeof runtime>[0], name: string) {
  return runtime(cfg, createLogger({ level: cfg.logLevel === "info" ? "warn" : cfg.logLevel }), name, "reader");
}

const OPTIONS: Options = {
  reason: { type: "string" },
  session: { type: "string" },
  limit: { type: "string" },
  json: { type: "boolean" },
  all: { type: "boolean" },
  "timeout-ms": { type: "string" },
};

function line(d: DeadLetter): string {
  const where = d.session ? `${d.session}${d.n !== undefined ? `#${d.n}` : ""}` : "-";
  return `${String(d.id).padStart(6)}  ${d.at.slice(0, 19).replace("T", " ")}  ${d.reason.padEnd(18)} ${where.padEnd(30)} ${d.message.slice(0, 90)}`;
}

function shown(d: DeadLetter) {
  const { data: _data, ...rest } = d;
  return { ...rest, body: bodyOf(d) };
}

export async function cmdDlq(argv: string[]): Promise<void> {
  const [op, ...rest] = argv;
  if (!op || op === "--help" || op === "-h" || !["list", "show", "replay", "purge"].includes(op)) {
    process.stdout.write(`${DLQ_HELP}\n${COMMON_HELP}\n`);
    if (!op || op === "--help" || op === "-h") return;
    fail(`unknown dlq command "${op}"`);
  }
  let v: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    const r = parseArgs({ args: rest, options: { ...COMMON, ...OPTIONS }, allowPositionals: true, strict: true });
    exitIfVersion(r.values);
    if (r.values.help) {
      process.stdout.write(`${DLQ_HELP}\n${COMMON_HELP}\n`);
      return;
    }
    v = r.values as Record<string, string | boolean | undefined>;
    positionals = r.positionals;
  } catch (err) {
    fail(`${(err as Error).message}\nRun \`tandem dlq --help\` for usage.`);
  }
  const str = (k: string) => (typeof v[k] === "string" ? (v[k] as string) : undefined);
  const num = (k: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n < 1) fail(`${k} must be a positive integer (got ${text})`);
    return n;
  };
  const id = num("ID", positionals[0]);
  if (positionals.length > 1) fail(`one ID at a time (got ${positionals.join(" ")})`);
  const filter = { ...(str("reason") ? { reason: str("reason")! } : {}), ...(str("session") ? { session: str("session")! } : {}) };
  const rt = await quietRuntime(configFrom(v), `tandem-dlq-${op}`);
  const out = (s: string) => process.stdout.write(`${s}\n`);
  try {
    if (op === "list") {
      const all = await listDeadLetters(rt, { ...filter, limit: num("--limit", str("limit")) ?? 1000 });
      if (v.json) for (const d of all) out(JSON.stringify(shown(d)));
      else {
        out(`${"id".padStart(6)}  ${"at (UTC)".padEnd(19)}  ${"reason".padEnd(18)} ${"session#request".padEnd(30)} message`);
        for (const d of all) out(line(d));
        out(`${all.length} entr${all.length === 1 ? "y" : "ies"}${filter.reason ? ` with reason ${filter.reason}` : ""}${filter.session ? ` of session ${filter.session}` : ""}`);
      }
    } else if (op === "show") {
      if (id === undefined) fail("usage: tandem dlq show ID [--json]");
      const d = await getDeadLetter(rt, id);
      if (!d) fail(`no dead letter ${id}; list them with \`tandem dlq list\``, 3);
      const replay = await replayRecord(rt, id);
      if (v.json) out(JSON.stringify({ ...shown(d), ...(replay ? { replay } : {}) }));
      else {
        const body = bodyOf(d);
        out(`id        ${d.id}  (${d.reason}, reported by ${d.reporter})`);
        out(`at        ${d.at}`);
        out(`error     ${d.code}: ${d.message}`);
        if (Object.keys(d.context).length) out(`context   ${JSON.stringify(d.context)}`);
        out(`subject   ${d.subject || "-"}${Object.keys(d.from).length ? `  (from ${Object.entries(d.from).map(([k, x]) => `${k} ${x}`).join(", ")})` : ""}`);
        if (Object.keys(d.headers).length) out(`headers   ${Object.entries(d.headers).map(([k, x]) => `${k}: ${x}`).join("; ")}`);
        out(`bytes     ${d.size}`);
        out(
          body.kind === "json" ? `body      ${JSON.stringify(body.value, null, 2).replace(/\n/g, "\n          ")}` : body.kind === "text" ? `body      ${body.value}` : body.kind === "binary" ? `body      (binary, base64) ${body.base64}` : "body      (none kept)",
        );
        if (replay) out(`replayed  ${replay.state}${replay.session ? ` in session ${replay.session}` : ""}: ${replay.state === "done" ? (replay.ok ? JSON.stringify(replay.value) : `${replay.error?.code}: ${replay.error?.message}`) : "waiting for its answer"}`);
      }
    } else if (op === "replay") {
      const ids = id !== undefined ? [id] : filter.reason || filter.session ? (await listDeadLetters(rt, { reason: "poison", ...filter, limit: Number.MAX_SAFE_INTEGER })).map((d) => d.id) : fail("usage: tandem dlq replay ID | --reason R | --session S");
      let failed = 0;
      for (const x of ids) {
        try {
          const timeoutMs = num("--timeout-ms", str("timeout-ms")) ?? 60_000;
          const { record, ran } = await replayDeadLetter(rt, x, { timeoutMs });
          if (v.json) out(JSON.stringify({ ...record, ran }));
          else {
            const what = record.state === "done" ? (record.ok ? `answered ${JSON.stringify(record.value)}` : `failed again: ${record.error?.code}: ${record.error?.message}`) : "still waiting for its answer";
            out(`${x}: ${ran ? "" : "replayed before: "}${what}${record.session ? ` (session ${record.session})` : ""}`);
          }
          if (record.state === "done" && !record.ok) failed++;
        } catch (err) {
          failed++;
          out(`${x}: ${err instanceof TandemError ? `${err.code}: ` : ""}${(err as Error).message}`);
        }
      }
      if (ids.length === 0) out("nothing to replay");
      if (failed > 0) process.exitCode = 1;
    } else {
      if (id === undefined && !filter.reason && !filter.session && !v.all) fail("usage: tandem dlq purge ID | --reason R | --session S | --all");
      const purged = await purgeDeadLetters(rt, { ...(id !== undefined ? { id } : {}), ...filter });
      out(`purged ${purged} entr${purged === 1 ? "y" : "ies"}`);
    }
  } finally {
    await rt.close();
  }
}
