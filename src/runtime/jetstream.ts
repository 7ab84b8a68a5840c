/**
 * Small JetStream helpers the actors share: read the last value of every subject of a stream,
 * and take over a durable consumer at a given sequence (delete and re-create, so the previous
 * owner's pulls fail: docs/design.md §3, I5).
 */
import { withBackoff } from "./backoff.js";
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  type Consumer,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { JsApiCode } from "./errors.js";

/** Every message a stream's last-per-subject view holds (bucket contents), in one pass. */
export async function readLastPerSubject(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
): Promise<JsMsg[]> {
  const info = await jsm.streams.info(stream);
  if (info.state.messages === 0) return [];
  const c = await js.consumers.get(stream, { deliver_policy: DeliverPolicy.LastPerSubject });
  const out: JsMsg[] = [];
  try {
    for (;;) {
      const batch = await c.fetch({ max_messages: 1000, expires: 1000 });
      let got = 0;
      let last: JsMsg | null = null;
      for await (const m of batch) {
        got++;
        last = m;
        out.push(m);
        if (m.info.pending === 0) break;
      }
      if (got === 0 || (last && last.info.pending === 0)) break;
    }
  } finally {
    await c.delete().catch(() => {});
  }
  return out;
}

/**
 * Delete `durable` if it exists and create it again delivering from `startSeq`. Ack policy
 * none: the manager's own cursors, not consumer acks, say what was applied.
 */
/**
 * The manager's cursor on a queue: a durable consumer named `<base>_<tag>` (a new name per
 * epoch and per resume), ack-none, starting at `startSeq`. One replica in memory: it is
 * created in milliseconds even while a cluster elects leaders, and creating it never waits on
 * an older cursor, which may sit on a server that just died. Older cursors are deleted by
 * `dropCursors`; one left behind expires when inactive.
 */
export async function openCursor(js: JetStreamClient, jsm: JetStreamManager, stream: string, base: string, tag: string, startSeq: number): Promise<Consumer> {
  const name = `${base}_${tag}`;
  await jsm.consumers.add(stream, {
    durable_name: name,
    ack_policy: AckPolicy.None,
    deliver_policy: startSeq > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
    ...(startSeq > 1 ? { opt_start_seq: startSeq } : {}),
    max_waiting: 16,
    num_replicas: 1,
    // File-backed: a nats-server restarted on its store still has it, so the manager goes on
    // from where it was (a memory consumer was gone, read as being fenced: a step-down and a
    // takeover, 2-3 s without service).
    mem_storage: false,
    // Long enough to outlive any NATS outage the manager rides through (it resumes on reconnect).
    inactive_threshold: 10 * 60_000 * 1_000_000,
  });
  return js.consumers.get(stream, name);
}

/**
 * Delete every cursor of `base` except `keep` (best effort, bounded): a new primary deletes its
 * predecessor's so that the old one's pulls fail (I5); one on a dead server cannot be reached
 * and is left to expire (its owner cannot pull through a dead server either).
 */
export async function dropCursors(jsm: JetStreamManager, stream: string, base: string, keep: string | null, timeoutMs = 2000): Promise<number> {
  const within = <T>(p: Promise<T>) => Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error("timeout")), timeoutMs))]);
  let dropped = 0;
  try {
    const names: string[] = [];
    const lister = jsm.consumers.list(stream);
    await within(
      (async () => {
        for await (const ci of lister) if ((ci.name === base || ci.name.startsWith(`${base}_`)) && ci.name !== keep) names.push(ci.name);
      })(),
    );
    await Promise.all(
      names.map((n) =>
        within(jsm.consumers.delete(stream, n)).then(
          () => void dropped++,
          () => {},
        ),
      ),
    );
  } catch {
    /* cannot list now (an election): the old cursors expire on their own */
  }
  return dropped;
}

export function isWrongLastSequence(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JsApiCode.StreamWrongLastSequence || err.code === JsApiCode.StreamWrongLastSequenceUnknown)
  );
}

/** JetStream unavailable for now (no leader, no responders, a timeout), not a real refusal. */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof JetStreamApiError) return err.code === JsApiCode.ClusterNotAvailable;
  const name = (err as { name?: string })?.name ?? "";
  const msg = (err as Error)?.message ?? "";
  return /Timeout|NoResponders|JetStreamNotEnabled|RequestError/.test(name) || /timeout|no responders|not enabled|unavailable/i.test(msg);
}

/** Retry `fn` while JetStream is unavailable, up to `timeoutMs`; other errors throw at once. */
export async function untilJetStream<T>(what: string, fn: () => Promise<T>, timeoutMs: number, log?: { warn(o: object, m: string): void }): Promise<T> {
  return withBackoff(fn, {
    initialMs: 100,
    forMs: timeoutMs,
    fatal: (err) => !isUnavailable(err),
    onFailure: (err, attempt) => attempt === 1 && isUnavailable(err) && log?.warn({ err: { message: (err as Error).message } }, `JetStream unavailable (a NATS election?); waiting to ${what}`),
  });
}
