import type { ClientRunner } from "./deployment.js";

/**
 * After a fault at `t0`: when the first response arrived, and when every session that was
 * serving before the fault had served again (the takeover time of docs/design.md §7).
 */
export function recovery(clients: ClientRunner[], t0: number): { firstMs: number | null; allMs: number | null; sessions: number } {
  const before = new Set<string>();
  const firstAfter = new Map<string, number>();
  for (const c of clients) {
    c.collect();
    for (const l of c.lines) {
      if (l.type !== "response") continue;
      const at = Number(l._at);
      const s = String(l.session);
      if (at < t0) before.add(s);
      else if (!firstAfter.has(s)) firstAfter.set(s, at);
    }
  }
  const after = [...firstAfter.values()];
  const waiting = [...before].filter((s) => !firstAfter.has(s));
  return {
    firstMs: after.length ? Math.min(...after) - t0 : null,
    allMs: waiting.length === 0 && before.size > 0 ? Math.max(...[...before].map((s) => firstAfter.get(s)!)) - t0 : null,
    sessions: before.size,
  };
}
