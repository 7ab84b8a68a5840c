/**
 * Headers of the messages Tandem sends (docs/design.md §2 Headers): the same bytes nats.js's
 * `headers()` would write, made with less work. nats.js's publish asks an outgoing header set only
 * for `encode()`; its own implementation finds, canonicalises and filters every key on each
 * `set` and `append`, and a work message, a response or a delivery sets five or six. That was a
 * twentieth of the manager's and the server's allocations. Keys here are Tandem's constants and
 * NATS's own (`Nats-Msg-Id`, `Nats-Trace-Dest`); values are checked for line breaks, as nats.js
 * checks them. Headers that come in are nats.js's, decoded by it.
 */
import { Match, type MsgHdrs } from "@nats-io/transport-node";

const utf8 = new TextEncoder();

export class WireHeaders implements MsgHdrs {
  hasError = false;
  status = "";
  code = 0;
  description = "";
  /** Keys and values, in order: few enough that a scan beats a map. */
  private readonly ks: string[] = [];
  private readonly vs: string[] = [];
  /** A key was appended more than once (a batch's Tandem-Request): written grouped, as nats.js does. */
  private repeated = false;

  get(k: string, match: Match = Match.Exact): string {
    for (let i = 0; i < this.ks.length; i++) if (same(this.ks[i]!, k, match)) return this.vs[i]!;
    return "";
  }

  last(k: string, match: Match = Match.Exact): string {
    for (let i = this.ks.length - 1; i >= 0; i--) if (same(this.ks[i]!, k, match)) return this.vs[i]!;
    return "";
  }

  has(k: string, match: Match = Match.Exact): boolean {
    for (let i = 0; i < this.ks.length; i++) if (same(this.ks[i]!, k, match)) return true;
    return false;
  }

  values(k: string, match: Match = Match.Exact): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.ks.length; i++) if (same(this.ks[i]!, k, match)) out.push(this.vs[i]!);
    return out;
  }

  keys(): string[] {
    return [...new Set(this.ks)];
  }

  set(k: string, v: string, match: Match = Match.Exact): void {
    if (this.ks.length > 0) this.delete(k, match);
    this.append(k, v);
  }

  append(k: string, v: string): void {
    if (k.length === 0 || /[\r\n:\s]/.test(k)) throw new TypeError(`header key ${JSON.stringify(k)} is not a header name`);
    if (v.includes("\r") || v.includes("\n")) throw new TypeError("header values cannot contain \\r or \\n");
    if (!this.repeated && this.ks.includes(k)) this.repeated = true;
    this.ks.push(k);
    this.vs.push(v.trim());
  }

  delete(k: string, match: Match = Match.Exact): void {
    for (let i = this.ks.length - 1; i >= 0; i--) {
      if (!same(this.ks[i]!, k, match)) continue;
      this.ks.splice(i, 1);
      this.vs.splice(i, 1);
    }
  }

  *[Symbol.iterator](): IterableIterator<[string, string[]]> {
    for (const k of this.keys()) yield [k, this.values(k)];
  }

  toString(): string {
    if (this.ks.length === 0) return "";
    let s = "NATS/1.0";
    if (!this.repeated) for (let i = 0; i < this.ks.length; i++) s += `\r\n${this.ks[i]}: ${this.vs[i]}`;
    else for (const k of this.keys()) for (const v of this.values(k)) s += `\r\n${k}: ${v}`;
    return `${s}\r\n\r\n`;
  }

  /** What nats.js's publish sends. */
  encode(): Uint8Array {
    return utf8.encode(this.toString());
  }
}

function same(key: string, k: string, match: Match): boolean {
  return match === Match.Exact ? key === k : key.toLowerCase() === k.toLowerCase();
}
