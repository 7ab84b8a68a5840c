/**
 * What `tandem_sessions` says about one session: its record, and for hedged requests which
 * server took which copy and which one won (docs/design.md §5). For the API and `tandem status
 * --session ID`.
 */
import type { HedgeRecord } from "./hedgeProxy.js";
import type { SessionRecord } from "../machines/managerCore.js";
import type { Runtime } from "../runtime/runtime.js";
import { decode } from "../runtime/wire.js";

export interface TookRecord {
  server: string;
  n: number;
  copy: number;
  at: string;
}

export interface SessionInfo {
  session: string;
  /** The manager's last stored record (written at most once a second), or null when closed. */
  record: SessionRecord | null;
  /** Hedged requests: copies, winner and cancelled copies, by request number. */
  hedges: HedgeRecord[];
  /** Hedged copies the servers recorded taking. */
  took: TookRecord[];
}

export async function readSessionInfo(rt: Runtime, session: string): Promise<SessionInfo> {
  const kv = rt.kv.sessions;
  const rec = await kv.get(session);
  const info: SessionInfo = { session, record: rec && rec.operation === "PUT" ? (decode(rec.value) as SessionRecord) : null, hedges: [], took: [] };
  const keys: string[] = [];
  for await (const k of await kv.keys(`${session}.>`)) keys.push(k);
  await Promise.all(
    keys.map(async (k) => {
      const e = await kv.get(k);
      if (!e || e.operation !== "PUT") return;
      const v = decode(e.value);
      if (k.startsWith(`${session}.hedge.`)) info.hedges.push(v as HedgeRecord);
      else if (k.startsWith(`${session}.took.`)) info.took.push(v as TookRecord);
    }),
  );
  info.hedges.sort((a, b) => a.n - b.n);
  info.took.sort((a, b) => a.n - b.n || a.copy - b.copy);
  return info;
}
