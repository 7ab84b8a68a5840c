/**
 * Checks docs/design.md's guarantees (§3) on a recorded history: the JSON lines every incarnation of a
 * `tandem client --json` wrote, in the order written.
 *   I1 no loss: every request of every client was answered (and the last incarnation finished).
 *   I2 once:    no request id reached the application twice. A receipt is committed when
 *               its TAKEN record is durable (the client prints `taken` lines after each
 *               commit); a resumed session gets responses again from the committed watermark
 *               it is told (`resumed.taken`), so lines of a killed incarnation above that
 *               watermark were never committed and are set aside. The watermark itself is
 *               checked: it may never be below a commit an earlier incarnation printed.
 *   I3 order:   within a session, responses reached the application in request order. A
 *               caller told locally that it gave up (its own deadline or abort, the manager
 *               silent for a second: server "") is its timer, not a delivery: not ordered.
 *               An unordered pool (`client --unordered`) has no order to check; its receipts
 *               and resumed watermarks are sets (`upTo` and `also`, `taken` and `takenAlso`),
 *               and a resume sets aside every line not in its set.
 *   Outcome: a line saying which outcomes its request's behaviour allows (`expect`, under
 *               `client --mix`) must end with one of them; any other must succeed.
 *   I6 restart data never goes back: a resumed session's restart data is at least as new as
 *               the newest request the earlier incarnations saw answered (whose publish, and so
 *               its restart data, was acknowledged before).
 */
export type Line = Record<string, unknown>;

export interface ClientHistory {
  name: string;
  expected: number;
  /** Lines of every incarnation, in order. */
  lines: Line[];
  /** Its sessions are unordered pools. */
  unordered?: boolean;
}

/** A committed set: everything up to `upTo`, and `also`. */
interface Marks {
  upTo: number;
  also: Set<number>;
}
const hasMark = (m: Marks, n: number) => n <= m.upTo || m.also.has(n);
const marksOf = (upTo: unknown, also: unknown): Marks => ({ upTo: Number(upTo), also: new Set(Array.isArray(also) ? also.map(Number) : []) });

export interface Verdict {
  ok: boolean;
  problems: string[];
  answered: number;
  expected: number;
}

export function checkHistory(clients: ClientHistory[]): Verdict {
  const problems: string[] = [];
  let answered = 0;
  let expected = 0;
  for (const c of clients) {
    expected += c.expected;
    const seen = new Map<string, number>();
    const lastN = new Map<string, number>();
    const committed = new Map<string, Marks>();
    /** Request numbers seen per session, to set aside those above a resumed watermark. */
    const seenN = new Map<string, Set<number>>();
    for (const l of c.lines) {
      if (l.type === "taken") {
        const session = String(l.session);
        const was = committed.get(session) ?? marksOf(0, []);
        const now = marksOf(l.upTo, l.also);
        committed.set(session, { upTo: Math.max(was.upTo, now.upTo), also: new Set([...was.also, ...now.also]) });
        continue;
      }
      if (l.type === "response") {
        const id = String(l.request);
        const session = String(l.session);
        const n = Number(l.n);
        seen.set(id, (seen.get(id) ?? 0) + 1);
        seenN.set(session, (seenN.get(session) ?? new Set()).add(n));
        if (seen.get(id) === 2) problems.push(`I2 ${c.name}: ${id} reached the application twice`);
        const outcome = l.ok === true ? "ok" : String(l.error);
        if (Array.isArray(l.expect)) {
          if (!(l.expect as unknown[]).includes(outcome)) problems.push(`outcome ${c.name}: ${id} ended ${outcome}, its behaviour implies ${(l.expect as string[]).join(" or ")}`);
        } else if (l.ok !== true) problems.push(`${c.name}: ${id} failed with ${String(l.error)}`);
        const local = l.server === "" && (l.error === "TANDEM_CANCELLED" || l.error === "TANDEM_DEADLINE");
        const prev = lastN.get(session) ?? 0;
        if (!local && !c.unordered && n <= prev) problems.push(`I3 ${c.name}: session ${session} got ${n} after ${prev}`);
        if (!local) lastN.set(session, Math.max(prev, n));
      } else if (l.type === "resumed") {
        const session = String(l.session);
        const sent = Number((l.restart as { sent?: number } | null)?.sent ?? 0);
        const floor = lastN.get(session) ?? 0;
        if (sent < floor) problems.push(`I6 ${c.name}: session ${session} resumed with restart data ${sent} < ${floor} already answered`);
        const taken = marksOf(l.taken, l.takenAlso);
        const was = committed.get(session) ?? marksOf(0, []);
        const lostCommit = [...Array(was.upTo).keys()].map((k) => k + 1).concat([...was.also]).find((n) => !hasMark(taken, n));
        if (!c.unordered && taken.upTo < was.upTo) problems.push(`I2 ${c.name}: session ${session} resumed at ${taken.upTo} below its committed ${was.upTo}`);
        else if (lostCommit !== undefined) problems.push(`I2 ${c.name}: session ${session} resumed without ${lostCommit}, which it had committed`);
        // Set aside receipts outside the resumed set: they were not committed and come again.
        // That includes a local give-up above every ordered answer (its timer, not a delivery),
        // so walk what was seen rather than up to the ordered floor.
        for (const n of seenN.get(session) ?? []) if (!hasMark(taken, n)) seen.delete(`${session}.${n}`);
        seenN.set(session, new Set([...(seenN.get(session) ?? [])].filter((n) => hasMark(taken, n))));
        lastN.set(session, c.unordered ? Math.max(taken.upTo, ...taken.also) : taken.upTo);
      }
    }
    answered += seen.size;
    if (seen.size !== c.expected) {
      // Name the gaps: within each session requests are numbered 1..max.
      const missing: string[] = [];
      for (const [session, max] of lastN) {
        for (let n = 1; n <= max; n++) if (!seen.has(`${session}.${n}`)) missing.push(`${session}.${n}`);
      }
      problems.push(`I1 ${c.name}: ${seen.size} of ${c.expected} requests answered; missing ${missing.slice(0, 10).join(", ") || "(after the last answered)"}`);
    }
    const summary = [...c.lines].reverse().find((l) => l.type === "summary");
    if (!summary || summary.complete !== true) problems.push(`I1 ${c.name}: the last incarnation did not finish (${JSON.stringify(summary ?? null)})`);
  }
  return { ok: problems.length === 0, problems, answered, expected };
}
