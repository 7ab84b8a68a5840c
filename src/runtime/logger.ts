/**
 * pino loggers: JSON lines on stderr by default (stdout stays free for --json output),
 * pretty when stderr is a terminal: one line an event, labelled with the process's name (its
 * role and id, e.g. "manager m1"), colours unless NO_COLOR is set (no-color.org) or
 * TANDEM_LOG_JSON=1 asks for JSON. Actors take a child with their bindings.
 */
import { pino, type Logger, type DestinationStream } from "pino";
import pretty from "pino-pretty";

export type { Logger };

export interface LoggerOptions {
  level?: string;
  /** Force pretty (true) or JSON (false); default: pretty when stderr is a TTY. */
  pretty?: boolean;
  /** Write here instead of stderr (tests use an in-memory sink). */
  destination?: DestinationStream;
  name?: string;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? process.env.TANDEM_LOG_LEVEL ?? "info";
  const base = { name: opts.name ?? "tandem" };
  if (opts.destination) return pino({ level, base }, opts.destination);
  const wantPretty = opts.pretty ?? (process.stderr.isTTY === true && process.env.TANDEM_LOG_JSON !== "1");
  if (wantPretty) {
    return pino(
      { level, base },
      pretty({ destination: 2, colorize: colorWanted(), sync: true, singleLine: true, ignore: "pid,hostname", translateTime: "HH:MM:ss.l" }),
    );
  }
  return pino({ level, base }, pino.destination({ dest: 2, sync: true }));
}

/** Colours on a terminal unless NO_COLOR is set to anything but "" (https://no-color.org). */
export function colorWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return !(env.NO_COLOR !== undefined && env.NO_COLOR !== "");
}

/** An in-memory JSON sink for tests that care about a log line. */
export function memoryLogger(level = "debug"): { logger: Logger; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const dest: DestinationStream = { write: (s: string) => void chunks.push(s) };
  const logger = pino({ level, base: { name: "tandem" } }, dest);
  return {
    logger,
    lines: () => chunks.join("").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
