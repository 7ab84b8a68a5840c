/**
 * The lease (docs/design.md §4): the `leader` key of the control bucket, taken by
 * compare-and-set with the next epoch and renewed every heartbeat by its holder. On the standby
 * side: the poll that sees the lease change or lapse, and the primary's backups, which count as
 * a sign of life only from the node that holds the lease of that epoch.
 */
import type { Msg } from "@nats-io/transport-node";
import { BackupStore, type BackupMsg } from "../../machines/backupStore.js";
import type { CursorRecord } from "../../machines/managerCore.js";
import type { LeaseView, ManagerEvent } from "../../machines/managerMachine.js";
import { withBackoff } from "../../runtime/backoff.js";
import { ErrorCode, TandemError } from "../../runtime/errors.js";
import { isWrongLastSequence } from "../../runtime/jetstream.js";
import type { Logger } from "../../runtime/logger.js";
import type { Runtime } from "../../runtime/runtime.js";
import { decode, encode } from "../../runtime/wire.js";
import { asTandem, publishDlq } from "../protocol.js";
import { parse, V } from "../schemas.js";
import type { LeaseRecord, ManagerStore } from "./store.js";
import { now } from "./term.js";

export type { LeaseRecord } from "./store.js";

export class Lease {
  /** Standby side: the primary's backups, the cut a takeover starts from. */
  readonly backup = new BackupStore();
  /** Standby side: when the lease holder's last backup arrived (readiness: a current standby). */
  lastBackupAt = -Infinity;
  private backupRefusedAt = -Infinity;
  /** Counts this connection's disconnects: a takeover begun before one must not complete after it. */
  private cutOffs = 0;
  private connected = true;
  private readonly connectionListeners = new Set<(up: boolean) => void>();

  constructor(
    private readonly rt: Runtime,
    private readonly store: ManagerStore,
    private readonly node: string,
    private readonly log: Logger,
  ) {
    void (async () => {
      for await (const st of rt.nc.status()) {
        if (st.type !== "disconnect" && st.type !== "reconnect") continue;
        const up = st.type === "reconnect";
        if (!up) this.cutOffs++;
        this.connected = up;
        for (const l of this.connectionListeners) l(up);
      }
    })().catch(() => {});
  }

  /** The lease as stored now (null when nobody holds it). */
  async read(): Promise<LeaseRecord | null> {
    return (await this.store.lease.read())?.value ?? null;
  }

  async readCursor(): Promise<CursorRecord | null> {
    return (await this.store.cursors.read())?.value ?? null;
  }

  /** Standby: watch the lease and take in the holder's backups, until the returned stop. */
  watch(sendBack: (e: ManagerEvent) => void): () => void {
    let lastRevision = -1;
    let stopped = false;
    const timers: NodeJS.Timeout[] = [];
    const onConnection = (up: boolean) => sendBack({ type: up ? "NATS_UP" : "NATS_DOWN" });
    this.connectionListeners.add(onConnection);
    if (!this.connected) sendBack({ type: "NATS_DOWN" });
    /** The lease as last read: only its holder's backups count (see below). */
    let holder: { epoch: number; node: string } | null = null;
    const poll = async () => {
      if (stopped) return;
      try {
        const e = await this.store.lease.read();
        if (stopped) return;
        if (!e || !e.value) {
          sendBack({ type: "LEASE_ABSENT" });
        } else if (e.revision !== lastRevision) {
          lastRevision = e.revision;
          const lease = e.value;
          // A standby says whom it stands by for (once per primary), so a quiet one is not a
          // mystery: it waits for that primary's lease to lapse.
          if (lease.node !== this.node && (holder?.node !== lease.node || holder?.epoch !== lease.epoch)) {
            this.log.info({ primary: lease.node, epoch: lease.epoch, takeOverAfterMs: this.rt.config.leaseMs }, "standing by: another manager is primary; taking over if its lease lapses");
          }
          holder = { epoch: lease.epoch, node: lease.node };
          sendBack({ type: "LEASE_SEEN", lease: { epoch: lease.epoch, node: lease.node, revision: e.revision } });
        }
      } catch (err) {
        this.log.debug({ err }, "lease poll failed (NATS unavailable?)");
      }
      if (!stopped) timers.push(setTimeout(poll, Math.max(20, this.rt.config.heartbeatMs / 2)));
      while (timers.length > 4) timers.shift();
    };
    void poll();
    // Backups from the primary: keep them, acknowledge them, and take them as a sign of life.
    // Only from the node that holds the lease of that epoch: a forged backup once poisoned a
    // standby's table (15.8 s without service after the primary died) and, repeated, kept it
    // from ever taking over. A new primary's backups count from when the lease poll sees it.
    const sub = this.rt.nc.subscribe(this.rt.names.backup, {
      callback: (err, m) => {
        if (err || stopped) return;
        try {
          const msg = parse(V.backup, decode(m.data)) as BackupMsg;
          if (!holder || msg.epoch !== holder.epoch || msg.node !== holder.node) {
            this.refuseBackup(m, msg, holder);
            return;
          }
          const ack = this.backup.apply(msg, this.node);
          if (!ack) return; // from an older epoch: not a sign of the current primary
          if (m.reply) m.respond(encode(ack));
          this.lastBackupAt = now();
          sendBack({ type: "BACKUP_SEEN", epoch: msg.epoch });
        } catch (e) {
          void publishDlq(this.rt, asTandem(e).toWire(), m.subject, m.headers, m.data);
        }
      },
    });
    return () => {
      stopped = true;
      this.connectionListeners.delete(onConnection);
      for (const t of timers) clearTimeout(t);
      sub.unsubscribe();
    };
  }

  private refuseBackup(m: Msg, msg: Partial<BackupMsg>, holder: { epoch: number; node: string } | null): void {
    // Before the first lease read, or from a primary of an epoch the poll has not read yet: the
    // ordinary course of a start or a takeover. Say nothing.
    if (!holder || (typeof msg.epoch === "number" && msg.epoch > holder.epoch)) return;
    if (now() - this.backupRefusedAt < 10_000) return;
    this.backupRefusedAt = now();
    const err = new TandemError(ErrorCode.StaleEpoch, `a backup from ${JSON.stringify(msg.node)} at epoch ${String(msg.epoch)}, but the lease is ${holder.node}'s at epoch ${holder.epoch}: ignored`, {
      context: { node: msg.node ?? null, epoch: msg.epoch ?? null, leaseNode: holder.node, leaseEpoch: holder.epoch },
    });
    this.log.warn(err.context, "ignored a backup that does not come from the lease holder (further ones in the next 10 s are not logged)");
    void publishDlq(this.rt, err, m.subject, m.headers, m.data);
  }

  /** Take the lease with the next epoch (above the lease's and the cursor's). */
  async acquire(previous: LeaseView | null): Promise<LeaseView> {
    // Decided on silence seen while connected: a disconnect since then voids the decision (the
    // primary may be renewing this moment, once it is through to NATS again).
    const cutOffs = this.cutOffs;
    const voided = () => {
      if (!this.connected || this.cutOffs !== cutOffs) throw new TandemError(ErrorCode.NatsUnreachable, "the connection to NATS dropped during the takeover; standing by again");
    };
    voided();
    const cursor = await this.readCursor();
    const floor = Math.max(previous?.epoch ?? 0, cursor?.epoch ?? 0);
    const value: LeaseRecord = { epoch: floor + 1, node: this.node, since: new Date().toISOString() };
    const lease = this.store.lease;
    let revision: number;
    if (previous) {
      // Fails with wrong-last-sequence if the primary renewed after all: then it lives.
      voided();
      revision = await lease.write(value, previous.revision);
    } else {
      const cur = await lease.read();
      if (cur?.value) value.epoch = Math.max(value.epoch, cur.value.epoch + 1);
      voided();
      revision = await lease.write(value, cur ? cur.revision : null);
    }
    this.log.info({ epoch: value.epoch }, "lease acquired");
    this.rt.metrics.takeovers.inc();
    return { epoch: value.epoch, node: this.node, revision };
  }

  /** Renew the lease; throws TANDEM_NOT_LEADER when another manager holds it now. */
  async renew(lease: LeaseView): Promise<LeaseView> {
    const value: LeaseRecord = { epoch: lease.epoch, node: this.node, since: new Date().toISOString() };
    const started = now();
    let warned = false;
    try {
      // At a steady 50 ms (a lease must not wait out a back-off). Anything but a failed
      // compare-and-set means NATS is out of reach, for the standbys as much as for us (or, in a
      // cluster, our first renewal after it comes back fails the compare-and-set). Whatever we
      // send meanwhile carries our epoch and is refused by anyone who has seen a newer one; our
      // bucket writes are fenced.
      const revision = await withBackoff(() => this.store.lease.write(value, lease.revision, this.rt.config.heartbeatMs * 2), {
        initialMs: 50,
        factor: 1,
        maxMs: 50,
        fatal: isWrongLastSequence,
        onFailure: (err) => {
          if (warned || isWrongLastSequence(err) || now() - started <= this.rt.config.leaseMs) return;
          warned = true;
          this.log.warn({ err }, "cannot renew the lease (NATS unreachable?); still trying");
        },
      });
      if (warned) this.log.info({ outageMs: Math.round(now() - started) }, "lease renewed again after NATS came back");
      return { ...lease, revision };
    } catch (err) {
      // Someone changed the lease: we are fenced, unless our own renewal is what moved it: one
      // whose answer timed out under load was stored all the same, and a retry then found its
      // revision (a flood of 125 MB once made a lone primary step down from itself this way).
      const cur = await this.store.lease.read().catch(() => null);
      const held: Partial<LeaseRecord> | null = cur?.value ?? null;
      if (cur && held && held.epoch === value.epoch && held.node === value.node && held.since === value.since) return { ...lease, revision: cur.revision };
      throw new TandemError(ErrorCode.NotLeader, `lease renewal failed for epoch ${lease.epoch}; another manager holds it`, { cause: err });
    }
  }
}
