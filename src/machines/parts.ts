/**
 * Cutting a list into parts that each fit one message: what the manager sends (backups,
 * restarts) must fit the NATS server's max_payload whatever the number of sessions. Pure.
 */

/**
 * Split `items` in order into parts whose summed sizes (plus one separator each) stay within
 * `room`. An item larger than `room` can never fit: it goes to `oversized`, in no part.
 * Always at least one part (possibly empty), so an empty backup or restart is still sent.
 */
export function splitToFit<T>(items: readonly T[], size: (item: T) => number, room: number): { parts: T[][]; oversized: T[] } {
  const parts: T[][] = [];
  const oversized: T[] = [];
  let cur: T[] = [];
  let used = 0;
  for (const item of items) {
    const s = size(item) + 1; // the comma between items
    if (s - 1 > room) {
      oversized.push(item);
      continue;
    }
    if (used + s > room && cur.length > 0) {
      parts.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(item);
    used += s;
  }
  parts.push(cur);
  return { parts, oversized };
}
