/**
 * Per-request timestamps along the round trip, for the bench's path breakdown (`--part path`):
 * where a round trip's time goes, hop by hop. Off unless TANDEM_TRACE names a directory (or the
 * bench turns it on in its own process); then each process appends `stage key time` lines to
 * `<dir>/<pid>.txt` every half second. Times are the wall clock in ms with µs precision
 * (performance.timeOrigin + now()), comparable between processes on one machine.
 */
import { appendFileSync } from "node:fs";

let dir = process.env.TANDEM_TRACE || "";
let buf: string[] = [];
let timer: NodeJS.Timeout | null = null;

function flush(): void {
  if (buf.length === 0 || !dir) return;
  const lines = buf;
  buf = [];
  appendFileSync(`${dir}/${process.pid}.txt`, lines.join("\n") + "\n");
}

function start(): void {
  timer ??= setInterval(flush, 500);
  timer.unref();
}

if (dir) start();

/** Record that request n of a session reached `stage`. Costs one branch when off. */
export function trace(stage: string, session: string, n: number): void {
  if (!dir) return;
  buf.push(`${stage} ${session}.${n} ${(performance.timeOrigin + performance.now()).toFixed(3)}`);
}

/** Turn tracing on into `to`, or off (and write what is buffered) with null. */
export function setTraceDir(to: string | null): void {
  if (!to) {
    flush();
    dir = "";
    if (timer) clearInterval(timer);
    timer = null;
    return;
  }
  dir = to;
  start();
}
