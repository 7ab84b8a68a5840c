/**
 * What the dashboard's server answers (src/apps/dashboard/server.ts), as the page reads it.
 * The page is built apart from the node code (no node types here), so the shapes are restated.
 */
export interface SecondView {
  at: number;
  served: number;
  errors: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface ServiceStatus {
  service: string;
  sessions: number;
  pending: number;
  servers: number;
  hedging?: { requests: number; extra: number; p95Ms: number | null };
}

export interface SessionStatus {
  id: string;
  client: string;
  service: string;
  server: string | null;
  pending: number;
  inFlight: number;
  answered: number;
}

export interface ManagerStatus {
  node: string;
  state: string;
  epoch: number;
  sessions: number;
  heldBytes: number;
  servers: Array<{ id: string; service: string; alive: boolean }>;
  services: ServiceStatus[];
  standbys: Array<{ node: string; lastBackupAgeMs: number; seq: number }>;
  since: string | null;
  recent?: SecondView[];
  busiest?: SessionStatus[];
}

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
  error: string | null;
  timeline: TimelineEntry[];
}

export interface DeadLetterRow {
  id: number;
  code: string;
  message: string;
  at: string;
  subject: string;
  session: string | null;
  n: number | null;
  size: number;
}

export interface TraceStep {
  step: string;
  at?: string;
  server?: string;
  ok?: boolean;
  code?: string;
  winner?: string | null;
}

export interface SessionTrace {
  session: string;
  client: string | null;
  requests: Array<{ n: number; state: string; steps: TraceStep[] }>;
  truncated: boolean;
}

export async function getJson<T>(path: string, init?: RequestInit): Promise<T> {
  const r = await fetch(path, init);
  const body = (await r.json()) as T & { error?: string };
  if (!r.ok) throw new Error(body.error ?? `${r.status} ${r.statusText}`);
  return body;
}
